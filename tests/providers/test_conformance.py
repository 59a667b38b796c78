"""The simulator speaks the providers' shapes.

OpenAI: responses are validated against the OpenAPI subset in shared/conformance with
``openapi_schema_validator`` (OAS 3.1) and ``$ref`` resolution inside that file (a
``referencing`` registry). The two JSONL line schemas (BatchRequestInput/Output) were copied
from an older revision that still used the OAS 3.0 ``nullable`` keyword, so lines are checked
with the OAS 3.0 validator (the API's own example has ``"error": null``).

Anthropic: there is no schema file; the SDK's own pydantic types are the contract, so
responses must ``model_validate`` into them (validation, not the lenient ``construct``).
"""

from __future__ import annotations

import io
import json
import time

import anthropic.types as at
import anthropic.types.messages as atm
import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30Validator, OAS31Validator, oas31_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from orchestration.transport.providers.anthropic_adapter import message_params
from orchestration.transport.providers.openai_adapter import batch_line
from tests.providers.conftest import make_requests, set_faults

SPEC_URI = "urn:judge-gym:openai-batch-subset"
OPENAI_AUTH = {"Authorization": "Bearer sk-test"}
ANTHROPIC_AUTH = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def spec(conformance_dir):
    return yaml.safe_load((conformance_dir / "openai_batch_openapi.yaml").read_text())


@pytest.fixture(scope="module")
def registry(spec):
    return Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )


@pytest.fixture(scope="module")
def check(registry):
    """check(instance, "Batch") validates against #/components/schemas/Batch."""

    def _check(instance, name, *, oas30=False):
        schema = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
        cls = OAS30Validator if oas30 else OAS31Validator
        cls(schema, registry=registry, format_checker=oas31_format_checker).validate(instance)

    return _check


@pytest.fixture(scope="module")
def op_schema(spec):
    """The declared JSON schema name of an operation's response."""

    def _schema(path, method, status="200"):
        content = spec["paths"][path][method]["responses"][status]
        if "$ref" in content:
            content = spec["components"]["responses"][content["$ref"].rsplit("/", 1)[-1]]
        ref = content["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[-1]

    return _schema


@pytest.fixture
def http(sim):
    with httpx.Client(base_url=sim.url, timeout=30) as client:
        yield client


def _upload(http, lines: list[bytes], name="in.jsonl"):
    body = b"".join(line + b"\n" for line in lines)
    return http.post(
        "/openai/v1/files",
        headers=OPENAI_AUTH,
        data={"purpose": "batch"},
        files={"file": (name, io.BytesIO(body), "application/jsonl")},
    )


def _create_batch(http, file_id, **extra):
    return http.post(
        "/openai/v1/batches",
        headers=OPENAI_AUTH,
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **extra,
        },
    )


def test_openai_batch_lifecycle_shapes(http, check, op_schema, admin):
    reqs = make_requests(20)
    lines = [batch_line(r) for r in reqs]
    for line in lines:  # what the adapter sends
        obj = json.loads(line)
        check(obj, "BatchRequestInput", oas30=True)
        check(obj["body"], "CreateChatCompletionRequest")

    set_faults(admin, [{"fault": "row_error", "count": 3, "status_code": 500}])
    up = _upload(http, lines)
    assert up.status_code == 200, up.text
    check(up.json(), op_schema("/files", "post"))
    file_id = up.json()["id"]
    got = http.get(f"/openai/v1/files/{file_id}", headers=OPENAI_AUTH)
    check(got.json(), op_schema("/files/{file_id}", "get"))

    created = _create_batch(http, file_id, metadata={"submission_key": "k"})
    assert created.status_code == 200, created.text
    check(created.json(), op_schema("/batches", "post"))
    batch_id = created.json()["id"]
    done = http.get(f"/openai/v1/batches/{batch_id}", headers=OPENAI_AUTH).json()
    check(done, op_schema("/batches/{batch_id}", "get"))
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 20, "completed": 17, "failed": 3}

    listed = http.get("/openai/v1/batches", headers=OPENAI_AUTH, params={"limit": 10}).json()
    check(listed, op_schema("/batches", "get"))

    out = http.get(f"/openai/v1/files/{done['output_file_id']}/content", headers=OPENAI_AUTH)
    ok_lines = out.text.splitlines()
    assert len(ok_lines) == 17
    for raw in ok_lines:
        row = json.loads(raw)
        check(row, "BatchRequestOutput", oas30=True)
        check(row["response"]["body"], "CreateChatCompletionResponse")
    err = http.get(f"/openai/v1/files/{done['error_file_id']}/content", headers=OPENAI_AUTH)
    for raw in err.text.splitlines():
        row = json.loads(raw)
        check(row, "BatchRequestOutput", oas30=True)
        check(row["response"]["body"], "ErrorResponse")

    deleted = http.delete(f"/openai/v1/files/{file_id}", headers=OPENAI_AUTH)
    check(deleted.json(), op_schema("/files/{file_id}", "delete"))


def test_openai_failed_expired_cancelled_shapes(sim_factory, check, op_schema):
    sim = sim_factory(batch_duration_s=60)
    with httpx.Client(base_url=sim.url, timeout=30) as http:
        bad = _upload(
            http,
            [
                b'{"custom_id": "r1", "method": "POST", "url": "/v1/embeddings", "body": {}}',
                b"{nope",
            ],
        )
        failed_id = _create_batch(http, bad.json()["id"]).json()["id"]
        failed = http.get(f"/openai/v1/batches/{failed_id}", headers=OPENAI_AUTH).json()
        assert failed["status"] == "failed"
        assert {e["code"] for e in failed["errors"]["data"]} >= {"invalid_url", "invalid_json_line"}
        check(failed, "Batch")

        good = _upload(http, [batch_line(r) for r in make_requests(4)])
        cancel_id = _create_batch(http, good.json()["id"]).json()["id"]
        cancelling = http.post(f"/openai/v1/batches/{cancel_id}/cancel", headers=OPENAI_AUTH).json()
        check(cancelling, op_schema("/batches/{batch_id}/cancel", "post"))
        assert cancelling["status"] == "cancelling"
        cancelled = http.get(f"/openai/v1/batches/{cancel_id}", headers=OPENAI_AUTH).json()
        assert cancelled["status"] == "cancelled"
        check(cancelled, "Batch")
        again = http.post(f"/openai/v1/batches/{cancel_id}/cancel", headers=OPENAI_AUTH)
        assert again.status_code == 409
        check(again.json(), "ErrorResponse")

        http.post(
            "/_sim/faults",
            json={"batch_duration_s": 0, "faults": [{"fault": "batch_expire", "partial": 0.5}]},
        )
        exp_id = _create_batch(http, good.json()["id"]).json()["id"]
        expired = http.get(f"/openai/v1/batches/{exp_id}", headers=OPENAI_AUTH).json()
        assert expired["status"] == "expired"
        check(expired, "Batch")
        for raw in http.get(
            f"/openai/v1/files/{expired['error_file_id']}/content", headers=OPENAI_AUTH
        ).text.splitlines():
            row = json.loads(raw)
            check(row, "BatchRequestOutput", oas30=True)
            assert row["response"] is None
            assert row["error"]["code"] == "batch_expired"


def test_openai_list_pagination_and_errors(http, check, op_schema):
    empty = http.get("/openai/v1/batches", headers=OPENAI_AUTH).json()
    assert empty == {"object": "list", "data": [], "has_more": False}
    check(empty, op_schema("/batches", "get"))
    up = _upload(http, [batch_line(r) for r in make_requests(2)]).json()
    ids = [_create_batch(http, up["id"]).json()["id"] for _ in range(5)]
    page1 = http.get("/openai/v1/batches", headers=OPENAI_AUTH, params={"limit": 2}).json()
    assert [b["id"] for b in page1["data"]] == ids[::-1][:2]
    assert page1["has_more"]
    assert page1["first_id"] == ids[4]
    assert page1["last_id"] == ids[3]
    page3 = http.get(
        "/openai/v1/batches", headers=OPENAI_AUTH, params={"limit": 2, "after": ids[1]}
    ).json()
    assert [b["id"] for b in page3["data"]] == [ids[0]]
    assert not page3["has_more"]
    check(page3, "ListBatchesResponse")

    errors = [
        http.get("/openai/v1/files/file-nope", headers=OPENAI_AUTH),
        _create_batch(http, "file-nope"),
        _create_batch(http, up["id"], metadata={f"k{i}": "v" for i in range(17)}),
        http.post(
            "/openai/v1/batches",
            headers=OPENAI_AUTH,
            json={
                "input_file_id": up["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "1h",
            },
        ),
        _upload(http, [b"{}"], name="in.csv"),
        http.get("/openai/v1/batches", params={"limit": 500}, headers=OPENAI_AUTH),
        http.get("/openai/v1/batches"),  # no key
    ]
    assert [e.status_code for e in errors] == [404, 400, 400, 400, 400, 400, 401]
    for e in errors:
        check(e.json(), "ErrorResponse")


def test_openai_chat_and_429_shapes(http, check, op_schema, admin):
    body = {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        "max_completion_tokens": 5,
    }
    ok = http.post("/openai/v1/chat/completions", headers=OPENAI_AUTH, json=body)
    check(ok.json(), op_schema("/chat/completions", "post"))
    set_faults(admin, [{"fault": "http_429", "retry_after": 2, "count": 1}])
    limited = http.post("/openai/v1/chat/completions", headers=OPENAI_AUTH, json=body)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["retry-after-ms"] == "2000"
    check(limited.json(), op_schema("/chat/completions", "post", "429"))
    # Output capped at max_completion_tokens, like a real model stopping early.
    assert ok.json()["choices"][0]["finish_reason"] == "length"
    assert ok.json()["usage"]["completion_tokens"] <= 5


def test_anthropic_shapes_parse_into_sdk_types(sim_factory):
    sim = sim_factory(batch_duration_s=60)
    http = httpx.Client(base_url=sim.url, timeout=30)
    reqs = make_requests(8, model="claude-haiku-4-5")
    payload = {"requests": [{"custom_id": r.custom_id, "params": message_params(r)} for r in reqs]}
    created = http.post("/anthropic/v1/messages/batches", headers=ANTHROPIC_AUTH, json=payload)
    assert created.status_code == 200, created.text
    batch = atm.MessageBatch.model_validate(created.json())
    assert batch.processing_status == "in_progress"
    assert batch.results_url is None
    assert batch.request_counts.processing == 8
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600

    canceling = atm.MessageBatch.model_validate(
        http.post(
            f"/anthropic/v1/messages/batches/{batch.id}/cancel", headers=ANTHROPIC_AUTH
        ).json()
    )
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None

    http.post(
        "/_sim/faults",
        json={
            "batch_duration_s": 0,
            "faults": [
                {"fault": "row_error", "count": 2, "status_code": 529},
                {"fault": "batch_expire", "count": 1, "partial": 0.5, "provider": "anthropic"},
            ],
        },
    )
    second = http.post(
        "/anthropic/v1/messages/batches",
        headers=ANTHROPIC_AUTH,
        json={
            "requests": [
                {"custom_id": f"x{r.custom_id}", "params": message_params(r)} for r in reqs
            ]
        },
    ).json()
    third = http.post(
        "/anthropic/v1/messages/batches",
        headers=ANTHROPIC_AUTH,
        json={
            "requests": [
                {"custom_id": f"y{r.custom_id}", "params": message_params(r)} for r in reqs
            ]
        },
    ).json()

    types = set()
    for bid in (batch.id, second["id"], third["id"]):
        ended = atm.MessageBatch.model_validate(
            http.get(f"/anthropic/v1/messages/batches/{bid}", headers=ANTHROPIC_AUTH).json()
        )
        assert ended.processing_status == "ended"
        assert ended.ended_at is not None
        assert ended.results_url == f"{sim.url}/anthropic/v1/messages/batches/{bid}/results"
        assert sum(ended.request_counts.model_dump().values()) == 8
        results = http.get(ended.results_url, headers=ANTHROPIC_AUTH)
        for raw in results.text.splitlines():
            item = atm.MessageBatchIndividualResponse.model_validate(json.loads(raw))
            types.add(item.result.type)
            if item.result.type == "succeeded":
                block = item.result.message.content[0]
                assert isinstance(block, at.TextBlock)
                assert block.text.startswith("ECHO[")
            if item.result.type == "errored":
                assert item.result.error.error.type == "overloaded_error"
    assert types == {"succeeded", "errored", "canceled", "expired"}

    page = http.get(
        "/anthropic/v1/messages/batches", headers=ANTHROPIC_AUTH, params={"limit": 2}
    ).json()
    assert set(page) == {"data", "has_more", "first_id", "last_id"}
    assert [b["id"] for b in page["data"]] == [third["id"], second["id"]]
    assert page["has_more"]
    older = http.get(
        "/anthropic/v1/messages/batches",
        headers=ANTHROPIC_AUTH,
        params={"after_id": page["last_id"]},
    ).json()
    assert [b["id"] for b in older["data"]] == [batch.id]
    assert not older["has_more"]
    newer = http.get(
        "/anthropic/v1/messages/batches",
        headers=ANTHROPIC_AUTH,
        params={"before_id": batch.id, "limit": 1},
    ).json()
    assert [b["id"] for b in newer["data"]] == [second["id"]]
    assert newer["has_more"]
    for item in page["data"] + older["data"]:
        atm.MessageBatch.model_validate(item)

    msg = http.post("/anthropic/v1/messages", headers=ANTHROPIC_AUTH, json=message_params(reqs[0]))
    message = at.Message.model_validate(msg.json())
    assert message.content[0].type == "text"
    assert message.usage.input_tokens > 0

    for bad in (
        http.post(
            "/anthropic/v1/messages", headers=ANTHROPIC_AUTH, json={"model": "m", "messages": []}
        ),
        http.get("/anthropic/v1/messages/batches/msgbatch_nope", headers=ANTHROPIC_AUTH),
        http.post("/anthropic/v1/messages/batches", json=payload),  # no key
    ):
        assert bad.status_code in {400, 401, 404}
        at.ErrorResponse.model_validate(bad.json())
    http.close()


def test_simulator_clock_fields_are_recent(http):
    up = _upload(http, [batch_line(r) for r in make_requests(1)]).json()
    assert abs(up["created_at"] - time.time()) < 5
