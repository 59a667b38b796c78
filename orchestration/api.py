"""The operator JSON API (``/api/v1/``): plain Django function views returning JsonResponse.

Routes (all need ``Authorization: Bearer <token>``):

=======  =========================================  ==========================================
GET      experiments[?limit=&offset=]               experiments with template and latest run
POST     experiments/start                          ``{"tags": [...], "pause_after": null}``
GET      runs/<ref>                                 ``run_progress(...).to_json()``
POST     runs/<ref>/pause|resume|cancel             resume takes ``{"pause_after": stage}``
GET      runs/<ref>/events?after=<id>&limit=100     the run's event ledger, paged by id
GET      runs/<ref>/diagnostics                     failed attempts vs terminal failures
=======  =========================================  ==========================================

``<ref>`` is a run id or an experiment tag (its latest run), as in ``manage.py experiments``.

Why views hold no rules (STYLE.md trap 6): each one parses input, calls one service or
selector and shapes the answer; errors are the services' own ``ServiceError`` (stable
``code``, ``message``, ``fix``) mapped to an HTTP status. Why token auth and no sessions: the
API is for scripts and agents; accepting only a bearer token also makes it safe to exempt
from CSRF (a browser never attaches the token by itself).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from orchestration.diagnostics import run_diagnostics
from orchestration.models import STAGE_ORDER, Experiment, Run, RunEvent
from orchestration.selectors import run_progress
from orchestration.services.control import run_cancel, run_pause, run_resolve, run_resume
from orchestration.services.errors import ServiceError
from orchestration.services.runs import experiments_start

app_name = "api"

View = Callable[..., JsonResponse]

#: HTTP status per ServiceError code; anything unlisted is the caller's problem (400).
STATUS_BY_CODE = {
    "not_found": 404,
    "active_run_exists": 409,
    "invalid_state": 409,
    "start_refused": 400,
}
EVENTS_MAX_LIMIT = 1000
EXPERIMENTS_MAX_LIMIT = 1000


class ApiError(Exception):
    """A request the API refuses before any service runs (auth, method, body, parameters)."""

    def __init__(self, status: int, code: str, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fix = fix


def error_response(status: int, code: str, message: str, fix: str = "") -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "fix": fix}}, status=status)


def configured_tokens() -> list[str]:
    """``settings.JUDGE_API_TOKENS`` as a list (a comma-separated string is accepted too)."""
    raw = getattr(settings, "JUDGE_API_TOKENS", [])
    if isinstance(raw, str):
        raw = raw.split(",")
    return [t.strip() for t in raw if isinstance(t, str) and t.strip()]


def token_valid(presented: str, tokens: Sequence[str]) -> bool:
    """Compare against every token in constant time, without stopping at the first match,
    so the response time says nothing about which token (or how much of one) matched."""
    given = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode())
    return matched


def _authenticate(request: HttpRequest) -> None:
    tokens = configured_tokens()
    if not tokens:
        raise ApiError(
            503,
            "api_disabled",
            "the operator API has no tokens configured",
            "set JUDGE_API_TOKENS (comma-separated) in the environment and restart web",
        )
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer token",
            "send the header 'Authorization: Bearer <token>'",
        )
    if not token_valid(presented.strip(), tokens):
        raise ApiError(401, "unauthorized", "invalid token", "use a token from JUDGE_API_TOKENS")


def api_view(methods: Sequence[str]) -> Callable[[View], View]:
    """Wrap a view: token auth, method check, ServiceError/ApiError -> JSON error response.

    Auth comes first, so an unauthenticated caller learns nothing about the routes.
    """

    def decorator(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            try:
                _authenticate(request)
                if request.method not in methods:
                    response = error_response(
                        405,
                        "method_not_allowed",
                        f"{request.method} is not allowed here",
                        f"use {' or '.join(methods)}",
                    )
                    response["Allow"] = ", ".join(methods)
                    return response
                return view(request, *args, **kwargs)
            except ApiError as exc:
                response = error_response(exc.status, exc.code, exc.message, exc.fix)
                if exc.status == 401:
                    response["WWW-Authenticate"] = 'Bearer realm="judge-gym"'
                return response
            except ServiceError as exc:
                return JsonResponse(
                    {"error": exc.to_dict()}, status=STATUS_BY_CODE.get(exc.code, 400)
                )

        return wrapper

    return decorator


def _body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object in the body; an empty body is ``{}``."""
    if not request.body.strip():
        return {}
    try:
        data = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(
            400, "malformed_json", f"request body is not valid JSON: {exc}", "send a JSON object"
        ) from exc
    if not isinstance(data, dict):
        raise ApiError(
            400,
            "malformed_json",
            f"request body must be a JSON object, not {type(data).__name__}",
            'send e.g. {"tags": ["my-experiment"]}',
        )
    return data


def _stage_or_none(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in STAGE_ORDER:
        raise ApiError(
            400,
            "invalid_request",
            f"{key} must be null or a stage, not {value!r}",
            f"use one of {', '.join(STAGE_ORDER)}",
        )
    return value


def _int_param(request: HttpRequest, name: str, default: int, maximum: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"{name} must be an integer, not {raw!r}", f"e.g. ?{name}=10"
        ) from None
    if value < 0:
        raise ApiError(400, "invalid_request", f"{name} must be >= 0", f"e.g. ?{name}=10")
    return min(value, maximum)


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.pk,
        "experiment": run.experiment.tag,
        "status": run.status,
        "current_stage": run.current_stage,
        "pause_after": run.pause_after,
    }


# --- experiments -----------------------------------------------------------------------------


@api_view(["GET"])
def experiments_list(request: HttpRequest) -> JsonResponse:
    """Experiments by tag, each with its template and latest run (one query, no N+1)."""
    limit = _int_param(request, "limit", 100, EXPERIMENTS_MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 10**9)
    latest = Run.objects.filter(experiment=OuterRef("pk")).order_by("-pk")
    rows = (
        Experiment.objects.select_related("template", "pool", "team")
        .annotate(
            latest_run_id=Subquery(latest.values("pk")[:1]),
            latest_status=Subquery(latest.values("status")[:1]),
            latest_stage=Subquery(latest.values("current_stage")[:1]),
            latest_created_at=Subquery(latest.values("created_at")[:1]),
        )
        .order_by("tag")
    )
    total = rows.count()
    items = []
    for exp in rows[offset : offset + limit]:
        items.append(
            {
                "tag": exp.tag,
                "template": str(exp.template),
                "pool": exp.pool.tag,
                "team": exp.team.slug if exp.team else None,
                "created_at": exp.created_at.isoformat(),
                "latest_run": None
                if exp.latest_run_id is None
                else {
                    "run_id": exp.latest_run_id,
                    "status": exp.latest_status,
                    "current_stage": exp.latest_stage,
                    "created_at": exp.latest_created_at.isoformat(),
                },
            }
        )
    return JsonResponse({"count": total, "offset": offset, "limit": limit, "experiments": items})


@api_view(["POST"])
def experiments_start_view(request: HttpRequest) -> JsonResponse:
    """Start runs for ``tags``; per-tag failures come back in ``failed``, never as a 4xx."""
    data = _body(request)
    tags = data.get("tags")
    if (
        not isinstance(tags, list)
        or not tags
        or not all(isinstance(t, str) and t.strip() for t in tags)
    ):
        raise ApiError(
            400,
            "invalid_request",
            "tags must be a non-empty list of experiment tags",
            'send {"tags": ["my-experiment"], "pause_after": null}',
        )
    pause_after = _stage_or_none(data, "pause_after")
    result = experiments_start(tags=[t.strip() for t in tags], pause_after=pause_after)
    return JsonResponse(result.to_dict())


# --- runs ------------------------------------------------------------------------------------


@api_view(["GET"])
def run_detail(request: HttpRequest, ref: str) -> JsonResponse:
    run = run_resolve(ref=ref)
    return JsonResponse(run_progress(run=run).to_json())


@api_view(["POST"])
def run_pause_view(request: HttpRequest, ref: str) -> JsonResponse:
    _body(request)  # a malformed body is still an error, even where none is needed
    run = run_pause(run_id=run_resolve(ref=ref).pk)
    return JsonResponse(_run_summary(run))


@api_view(["POST"])
def run_resume_view(request: HttpRequest, ref: str) -> JsonResponse:
    data = _body(request)
    pause_after = _stage_or_none(data, "pause_after")
    clear = data.get("clear_pause_after", False)
    if not isinstance(clear, bool):
        raise ApiError(400, "invalid_request", "clear_pause_after must be a boolean", "")
    run = run_resume(run_id=run_resolve(ref=ref).pk, pause_after=pause_after, clear=clear)
    return JsonResponse(_run_summary(run))


@api_view(["POST"])
def run_cancel_view(request: HttpRequest, ref: str) -> JsonResponse:
    data = _body(request)
    reason = data.get("reason", "canceled by operator (api)")
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "invalid_request", "reason must be a non-empty string", "")
    run = run_cancel(run_id=run_resolve(ref=ref).pk, reason=reason.strip()[:500])
    return JsonResponse(_run_summary(run))


@api_view(["GET"])
def run_events(request: HttpRequest, ref: str) -> JsonResponse:
    """The run's ledger after event id ``after``, oldest first; keep passing ``next_after``.

    Keyset paging on the primary key: stable while new events are appended, unlike offsets.
    """
    run = run_resolve(ref=ref)
    after = _int_param(request, "after", 0, 2**63 - 1)
    limit = max(_int_param(request, "limit", 100, EVENTS_MAX_LIMIT), 1)
    rows = list(
        RunEvent.objects.filter(process=run.process, pk__gt=after)
        .order_by("pk")
        .values(
            "id",
            "created_at",
            "stage",
            "event_type",
            "custom_key",
            "batch_id",
            "task_id",
            "payload",
        )[: limit + 1]
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    events = [{**row, "created_at": row["created_at"].isoformat()} for row in rows]
    return JsonResponse(
        {
            "run_id": run.pk,
            "events": events,
            "next_after": events[-1]["id"] if events else after,
            "has_more": has_more,
        }
    )


@api_view(["GET"])
def run_diagnostics_view(request: HttpRequest, ref: str) -> JsonResponse:
    run = run_resolve(ref=ref)
    return JsonResponse(run_diagnostics(run=run).to_json())


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
def not_found(request: HttpRequest, rest: str) -> JsonResponse:
    """Unknown paths under the API answer in JSON too (after auth, like every route)."""
    return error_response(
        404, "not_found", f"no API route /api/v1/{rest}", "see orchestration/api.py for routes"
    )


urlpatterns = [
    path("experiments", experiments_list, name="experiments"),
    path("experiments/start", experiments_start_view, name="experiments-start"),
    path("runs/<str:ref>", run_detail, name="run"),
    path("runs/<str:ref>/pause", run_pause_view, name="run-pause"),
    path("runs/<str:ref>/resume", run_resume_view, name="run-resume"),
    path("runs/<str:ref>/cancel", run_cancel_view, name="run-cancel"),
    path("runs/<str:ref>/events", run_events, name="run-events"),
    path("runs/<str:ref>/diagnostics", run_diagnostics_view, name="run-diagnostics"),
    re_path(r"^(?P<rest>.*)$", not_found),
]
