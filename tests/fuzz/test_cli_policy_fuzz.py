"""Bad input, part 2: Policy rows (model ``full_clean`` and the admin form) and CLI arguments.

Properties: a refused Policy names only real fields with non-empty messages and writes
nothing; whatever ``full_clean``/the form accepts, the database accepts too (the check
constraints are the guarantee, the form must not be weaker). Garbage command lines end in a
``CommandError`` (or the documented exit code), never a traceback, and write nothing.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.test import RequestFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs_app.models import ConfigTemplate
from orchestration.models import Experiment, Run
from policies.models import POLICY_FIELDS, Policy

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SCOPES = ["global", "team", "provider", "model", "experiment", "bogus", ""]
KEYS = st.one_of(
    st.sampled_from(["", "default", "openai", "anthropic", "gpt-4.1", "team-a", "  ", "Bad Slug"]),
    st.text(max_size=20).filter(lambda s: "\x00" not in s),
)
FIELD_VALUE = st.one_of(
    st.none(),
    st.integers(min_value=-10, max_value=10),
    st.integers(min_value=-(2**40), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12
    ),
    st.sampled_from(["auto", "force", "disabled", "fail_run", "continue", "sometimes", "", "12"]),
)
FORM_VALUE = st.one_of(
    st.just(""),
    st.integers(-10, 10**10).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["auto", "force", "disabled", "fail_run", "continue", "x", "1e3", "0.5", "-0"]),
)


def _fields(draw: st.DrawFn, value: st.SearchStrategy[Any]) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(POLICY_FIELDS), max_size=5, unique=True))
    return {name: draw(value) for name in names}


@st.composite
def policy_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    return {"scope": draw(st.sampled_from(SCOPES)), "key": draw(KEYS), **_fields(draw, FIELD_VALUE)}


@st.composite
def policy_form_data(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "scope": draw(st.sampled_from(SCOPES)),
        "key": draw(KEYS),
        "notes": "",
        **_fields(draw, FORM_VALUE),
    }


FIELD_NAMES = {f.name for f in Policy._meta.get_fields()} | {NON_FIELD_ERRORS}


_FORM: list[Any] = []


def _admin_form_class() -> Any:
    """The admin's add form for Policy (built once: get_form is slow and stateless here)."""
    if not _FORM:
        request = RequestFactory().post("/admin/policies/policy/add/")
        _FORM.append(admin.site._registry[Policy].get_form(request, obj=None))
    return _FORM[0]


@pytest.mark.django_db
@FUZZ
@given(data=policy_form_data())
def test_policy_admin_form(data: dict[str, Any]) -> None:
    form_class = _admin_form_class()
    before = Policy.objects.count()
    form = form_class(data=data)
    try:
        valid = form.is_valid()
    except Exception as exc:
        pytest.fail(f"the admin form crashed with {type(exc).__name__}: {exc} for {data}")
    if not valid:
        for name, messages in form.errors.items():
            assert name in FIELD_NAMES or name == "__all__", name
            assert messages
            assert all(str(m).strip() for m in messages)
        assert Policy.objects.count() == before
        return
    try:
        with transaction.atomic():
            saved = form.save()
    except IntegrityError as exc:
        pytest.fail(f"the admin form accepted what the database refuses: {exc} for {data}")
    saved.delete()


@pytest.mark.django_db
@FUZZ
@given(kwargs=policy_kwargs())
def test_policy_full_clean(kwargs: dict[str, Any]) -> None:
    """full_clean refuses with named field errors, or the database accepts the row too."""
    before = Policy.objects.count()
    policy = Policy(**kwargs)
    try:
        policy.full_clean()
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            assert name in FIELD_NAMES, f"error on an unknown field {name!r} for {kwargs}"
            assert messages, name
            assert all(m.strip() for m in messages), (name, messages)
        assert Policy.objects.count() == before
        return
    except Exception as exc:
        pytest.fail(f"Policy.full_clean crashed: {type(exc).__name__}: {exc} for {kwargs}")
    try:
        with transaction.atomic():
            policy.save()
    except IntegrityError as exc:
        pytest.fail(f"full_clean accepted what the database refuses: {exc} for {kwargs}")
    policy.delete()


@pytest.mark.django_db
@FUZZ
@given(
    scope=st.one_of(st.sampled_from(SCOPES), st.text(max_size=8)),
    key=st.one_of(KEYS, st.none()),
    values=st.dictionaries(
        st.sampled_from(POLICY_FIELDS),
        st.one_of(FIELD_VALUE, st.text(max_size=6), st.booleans(), st.lists(st.integers())),
        max_size=6,
    ),
)
def test_policy_full_clean_never_crashes(
    scope: str, key: str | None, values: dict[str, Any]
) -> None:
    """Any raw input (wrong types included) ends in ValidationError or a clean pass."""
    refused: ValidationError | None = None
    try:
        Policy(scope=scope, key=key, **values).full_clean(validate_unique=False)
    except ValidationError as exc:
        refused = exc
    except Exception as exc:
        pytest.fail(
            f"Policy.full_clean crashed: {type(exc).__name__}: {exc} for {scope!r} {key!r} {values}"
        )
    if refused is not None:
        assert refused.message_dict, "a ValidationError without messages"


# --- command lines -----------------------------------------------------------------------------

TOKEN = st.one_of(
    st.sampled_from(
        ["create", "start", "status", "watch", "pause", "resume", "cancel", "list", "export",
         "--json", "--tags", "--template", "--tag", "--pool", "--team", "--bundle-plan",
         "--pause-after", "rubric_gen", "nowhere", "--interval", "-1", "0", "1", "999999",
         "--timeout", "0.1", "--until-paused", "--format", "parquet", "xml", "--out", "/dev/null",
         "--allow-incomplete", "--clear-pause-after", "a,b,,c", "", " ", "--", "-x", "t@v9"]
    ),
    st.text(min_size=0, max_size=12).filter(lambda s: "\x00" not in s),
)  # fmt: skip


def _counts() -> tuple[int, int, int]:
    return Experiment.objects.count(), Run.objects.count(), ConfigTemplate.objects.count()


@pytest.mark.django_db
@FUZZ
@given(
    argv=st.lists(TOKEN, min_size=0, max_size=6),
    command=st.sampled_from(["experiments", "configs", "verify_run"]),
)
def test_cli_garbage_arguments(argv: list[str], command: str) -> None:
    if command == "experiments" and argv[:1] == ["watch"]:
        argv = [*argv, "--timeout", "0.2", "--interval", "0.1"]
    before = _counts()
    out, err = io.StringIO(), io.StringIO()
    message = ""
    exit_code: object = None
    try:
        call_command(command, *argv, stdout=out, stderr=err)
    except CommandError as exc:
        message = str(exc) or " "
    except SystemExit as exc:
        exit_code = exc.code
    except Exception as exc:
        pytest.fail(f"`{command} {' '.join(argv)}` crashed: {type(exc).__name__}: {exc}")
    if message:
        assert message.strip(), "an empty error message"
        if message.startswith("[") and "]" in message:  # a service error: code, message, fix
            assert "(" in message, f"service error without a fix: {message}"
            assert message.rstrip().endswith(")"), f"service error without a fix: {message}"
    if exit_code is not None:
        # Documented exit codes: start with failures exits 1; watch 0-5; verify_run 1.
        assert exit_code in (0, 1, 2, 3, 4, 5), exit_code
        if command == "experiments" and argv[:1] == ["start"]:
            assert "failed" in err.getvalue()
    assert _counts() == before, f"`{command} {' '.join(argv)}` wrote rows"


# --- regressions the fuzzer found (each is a precise failing case) ----------------------------


@pytest.mark.django_db
def test_decimal_budget_values_are_field_errors() -> None:
    """Control (passes): out-of-range dollar budgets are field errors, not crashes."""
    with pytest.raises(ValidationError) as info:
        Policy(scope="global", key="", dollar_budget=Decimal("-1")).full_clean(
            validate_unique=False
        )
    assert "dollar_budget" in info.value.message_dict


@pytest.mark.django_db
def test_unknown_scope_is_a_field_error_not_a_crash() -> None:
    """Found by the fuzzer: clean() used Scope(self.scope), which raised for 'bogus'."""
    with pytest.raises(ValidationError) as info:
        Policy(scope="bogus", key="").full_clean(validate_unique=False)
    assert "scope" in info.value.message_dict
    assert "key" not in info.value.message_dict  # no guess about the key of an unknown scope


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requests_per_minute", float("inf")),
        ("token_budget", float("-inf")),
        ("retry_jitter_ratio", float("nan")),
        ("dollar_budget", Decimal("Infinity")),
        ("dollar_budget", float("inf")),
    ],
)
def test_non_finite_numbers_are_field_errors(field: str, value: object) -> None:
    """Found by the fuzzer: IntegerField.to_python(inf) raises OverflowError out of full_clean."""
    with pytest.raises(ValidationError) as info:
        Policy(scope="global", key="", **{field: value}).full_clean(validate_unique=False)
    assert "finite" in " ".join(info.value.message_dict[field])
