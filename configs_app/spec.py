"""The experiment spec: one pydantic model per axis, the evidence-view normalizer, and
``spec_signature``.

Why pydantic here and again at snapshot time (STYLE.md habit 8): a config body is a JSON blob
authored by people in YAML files and admin text boxes. It is validated at every boundary it
crosses (import, admin form, run-config snapshot) so a typo can never reach a paid batch.

Why everything is strict (``extra="forbid"``, ``strict=True``): a misspelled optional field
(``abstain_enable: true``) silently falling back to its default would change the experiment
without anyone noticing, and ``"5"`` quietly becoming ``5`` hides authoring mistakes. In
research configs a loud error is always cheaper than a silently different run.

This module deliberately imports nothing from Django: ``spec_signature`` must be computable by
any Python process (a notebook, an analysis script, a subprocess in the tests) and give the
same hex digest everywhere.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TypedDict, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from configs_app.registry import DEFAULT_MODELS, ModelInfo

# --- Axis value sets ---------------------------------------------------------------------------

EvidenceView = Literal["l0_raw", "l1_cleaned", "l2_neutralized", "l3_abstracted"]
Randomization = Literal["anonymize_stages", "hide_label_text", "shuffle_rubric_order"]
BundleStrategy = Literal[
    "window_round_robin", "random_bundle", "semantic_cluster", "semantic_cluster_projected"
]
ScoringMethod = Literal["single", "subset"]
Stage = Literal["rubric_gen", "rubric_critic", "score_gen", "score_critic"]

EVIDENCE_VIEWS: tuple[str, ...] = get_args(EvidenceView)
RANDOMIZATIONS: tuple[str, ...] = get_args(Randomization)
BUNDLE_STRATEGIES: tuple[str, ...] = get_args(BundleStrategy)
STAGES: tuple[str, ...] = get_args(Stage)

# The original engine's first evidence views were unprefixed. Old YAML files and exported
# experiments still carry them, so they are accepted on input, but only the ``lN_`` names are
# ever stored or hashed: a legacy file and its modern twin must share one spec_signature.
LEGACY_EVIDENCE_VIEWS: dict[str, str] = {
    "raw": "l0_raw",
    "cleaned": "l1_cleaned",
    "neutralized": "l2_neutralized",
    "abstracted": "l3_abstracted",
}

SECRETS_FIX = "remove the secret from the config; put keys in the environment, see .env.example"


# --- Errors ------------------------------------------------------------------------------------


class SpecIssue(TypedDict):
    """One problem with a config: where it is (dotted JSON path), what is wrong, how to fix it."""

    path: str
    message: str
    fix: str


class SpecError(ValueError):
    """Every config problem, from any layer (YAML parsing, secrets scan, pydantic), as one type.

    Why one type: callers (the import command, the admin form, the run-start service) only need
    to show the list of issues; they should not have to know which layer found them.
    ``source`` names the file when the spec came from one.
    """

    def __init__(self, issues: Sequence[SpecIssue], *, source: str | None = None) -> None:
        self.issues: list[SpecIssue] = list(issues)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        lines = [
            f"{head}{issue['path'] or '(top level)'}: {issue['message']} (fix: {issue['fix']})"
            for issue in self.issues
        ]
        return "\n".join(lines) or f"{head}invalid config"

    def __str__(self) -> str:
        return self.render()

    def prefixed(self, prefix: str) -> SpecError:
        """The same issues with paths relative to an enclosing document (``spec.`` in files)."""
        return SpecError(
            [
                {**issue, "path": f"{prefix}.{issue['path']}" if issue["path"] else prefix}
                for issue in self.issues
            ],
            source=self.source,
        )

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.issues, source=source)


def _issue_error(message: str, fix: str, *, path: str | None = None) -> PydanticCustomError:
    """A pydantic error that carries our ``fix`` text (and optionally an exact path)."""
    ctx: dict[str, Any] = {"message": message, "fix": fix}
    if path is not None:
        ctx["path"] = path
    return PydanticCustomError("judge_gym", "{message}", ctx)


# --- The spec ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RubricConfig(_Strict):
    """How each sample's rubric is generated."""

    model: str = Field(min_length=1)
    scale_size: int = Field(ge=2, le=12)
    concept: str = Field(min_length=1)

    @field_validator("concept")
    @classmethod
    def _concept_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise _issue_error("concept is blank", "write the concept, e.g. 'fascism'")
        return value


class ScoringConfig(_Strict):
    """How evidence is scored against a rubric.

    Defaults are the original lab form's (single, l0_raw, abstain off, no randomizations,
    bundle of one); they are written into the normalized body, so a default filled in today and
    the same value written out explicitly hash identically.
    """

    model: str = Field(min_length=1)
    method: ScoringMethod = "single"
    abstain_enabled: bool = False
    evidence_view: EvidenceView = "l0_raw"
    randomizations: list[Randomization] = Field(default_factory=list)
    evidence_bundle_size: int = Field(default=1, ge=1)
    bundle_strategy: BundleStrategy | None = None
    bundle_strategy_version: str = Field(default="v1", min_length=1)
    clustering_seed: int | None = None

    @field_validator("evidence_view", mode="before")
    @classmethod
    def _normalize_legacy_view(cls, value: object) -> object:
        if isinstance(value, str) and value in LEGACY_EVIDENCE_VIEWS:
            return LEGACY_EVIDENCE_VIEWS[value]
        return value

    @field_validator("randomizations")
    @classmethod
    def _randomizations_are_a_set(cls, value: list[str]) -> list[str]:
        # Order carries no meaning (it is a set of switches), so it is stored sorted: two
        # files listing the same switches in a different order are the same experiment.
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            raise _issue_error(
                f"duplicate randomizations: {', '.join(duplicates)}",
                "list each randomization at most once",
            )
        return sorted(value)


class EvidenceRef(_Strict):
    """Which evidence the run scores: a frozen pool, windows to build one from, or both."""

    pool_tag: str | None = Field(default=None, min_length=1)
    window_tags: list[str] = Field(default_factory=list)
    bundle_plan_tag: str | None = Field(default=None, min_length=1)

    @field_validator("window_tags")
    @classmethod
    def _window_tags_unique(cls, value: list[str]) -> list[str]:
        if any(not tag.strip() for tag in value):
            raise _issue_error("window tags must be non-empty", "remove the empty window tag")
        duplicates = sorted({tag for tag in value if value.count(tag) > 1})
        if duplicates:
            raise _issue_error(
                f"duplicate window tags: {', '.join(duplicates)}", "list each window once"
            )
        return value

    @model_validator(mode="after")
    def _some_evidence(self) -> EvidenceRef:
        if self.pool_tag is None and not self.window_tags:
            raise _issue_error(
                "no evidence referenced: neither pool_tag nor window_tags is set",
                "set evidence.pool_tag to a frozen pool's tag, or evidence.window_tags to a "
                "list of window tags",
            )
        return self


class ExperimentSpec(_Strict):
    """A whole experiment configuration: every axis from DOMAIN.md section 1.

    ``models`` holds registry overrides/additions. After validation it holds exactly the
    merged entries the spec uses (rubric and scoring model), so the provider model ids and
    prices a run will use are pinned in the stored body and covered by ``spec_signature``:
    changing ``DEFAULT_MODELS`` later cannot silently change what an old template means.
    """

    # Declared first so the rubric/scoring validators can see it in ``info.data``.
    models: dict[str, ModelInfo] = Field(default_factory=dict)
    rubric: RubricConfig
    scoring: ScoringConfig
    sample_count: int = Field(ge=1, le=100_000)
    evidence: EvidenceRef
    pause_after: Stage | None = None
    max_output_tokens: int = Field(default=8000, ge=1, le=1_000_000)

    @field_validator("rubric", "scoring")
    @classmethod
    def _model_known(
        cls, value: RubricConfig | ScoringConfig, info: ValidationInfo
    ) -> RubricConfig | ScoringConfig:
        if "models" not in info.data:
            return value  # ``models`` itself is invalid; that error is already reported
        known = {**DEFAULT_MODELS, **info.data["models"]}
        if value.model not in known:
            raise _issue_error(
                f"unknown model {value.model!r}; known ids: {', '.join(sorted(known))}",
                "use one of the known model ids, or add an entry for it under `models`",
                path=f"{info.field_name}.model",
            )
        return value

    @model_validator(mode="after")
    def _pin_used_models(self) -> ExperimentSpec:
        self.models = self.resolved_models()
        return self

    def resolved_models(self) -> dict[str, ModelInfo]:
        """The registry entries (defaults merged with ``models``) the spec actually uses."""
        known = {**DEFAULT_MODELS, **self.models}
        used = sorted({self.rubric.model, self.scoring.model})
        return {model_id: known[model_id] for model_id in used}


# --- Secrets refusal ---------------------------------------------------------------------------

_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "credential",
        "credentials",
    }
)
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key")}
)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SECRET_VALUE = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-ant-|sk-|fc-)[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic / Firecrawl
    r"|\bBearer\s+[A-Za-z0-9._~+/=\-]{12,}"  # an Authorization header value
)


def _key_is_secret(key: str) -> bool:
    """Whether a field name names a credential, by whole words.

    Why words, not substrings: ``max_output_tokens`` and ``token_budget`` contain "token" but
    are not secrets; ``apiKey``, ``api-key``, ``OPENAI_API_KEY`` and ``auth_token`` are.
    """
    words = [w for w in re.split(r"[_\-\s.]+", _CAMEL_BOUNDARY.sub("_", key).lower()) if w]
    if not words:
        return False
    # The *head* (last word) decides: ``auth_token`` and ``api_key`` name credentials, while
    # ``token_budget`` or ``secret_rotation_days`` name a budget and a period.
    if words[-1] in _SECRET_WORDS:
        return True
    return len(words) >= 2 and (words[-2], words[-1]) in _SECRET_PAIRS


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _walk(value: object, path: str) -> Iterator[tuple[str, object, object]]:
    """Yield ``(path, key, value)`` for every node; ``key`` is None for list items/root."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            child_path = _join(path, str(key))
            yield child_path, key, child
            yield from _walk(child, child_path)
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            child_path = _join(path, index)
            yield child_path, None, child
            yield from _walk(child, child_path)


def find_secrets(document: object, *, prefix: str = "") -> list[SpecIssue]:
    """Every field in ``document`` that is named like a credential or holds one.

    Why refuse rather than strip: config bodies are stored forever (append-only), exported,
    shown in the admin and diffed; a key that gets in can never be deleted from history.
    The value is never echoed back in the message.
    """
    issues: list[SpecIssue] = []
    for path, key, value in _walk(document, prefix):
        if isinstance(key, str) and _key_is_secret(key):
            issues.append(
                {"path": path, "message": "field name looks like a credential", "fix": SECRETS_FIX}
            )
        elif isinstance(value, str) and _SECRET_VALUE.search(value):
            issues.append(
                {"path": path, "message": "value looks like a provider API key", "fix": SECRETS_FIX}
            )
    return issues


# --- Display order ---------------------------------------------------------------------------


def _ordered(value: object, model: type[BaseModel] | None) -> object:
    if not isinstance(value, Mapping):
        return value
    names = list(model.model_fields) if model is not None else []
    keys = [k for k in names if k in value] + sorted(k for k in value if k not in names)
    result: dict[str, object] = {}
    for key in keys:
        child = value[key]
        if model is ExperimentSpec and key == "models" and isinstance(child, Mapping):
            result[key] = {m: _ordered(child[m], ModelInfo) for m in sorted(child)}
        else:
            result[key] = _ordered(
                child, _MODEL_AT.get((key,)) if model is ExperimentSpec else None
            )
    return result


def ordered_like_spec(body: Mapping[str, Any]) -> dict[str, Any]:
    """The same body with keys in the schema's field order (unknown keys last, sorted).

    Why: PostgreSQL's jsonb does not keep key order, so a stored body comes back shuffled;
    exports and the admin show it in the order people author it (rubric before scoring, model
    first). Pure reordering: no validation, no change of content or signature.
    """
    ordered = _ordered(body, ExperimentSpec)
    assert isinstance(ordered, dict)
    return ordered


# --- Validation, normalization, signature ------------------------------------------------------

# Which model sits at which path, to list the allowed fields when one is unknown.
_MODEL_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): ExperimentSpec,
    ("rubric",): RubricConfig,
    ("scoring",): ScoringConfig,
    ("evidence",): EvidenceRef,
}


def _loc_to_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path = _join(path, part)
    return path


_TYPE_FIXES: dict[str, str] = {
    "int_type": "write a whole number, without quotes",
    "int_from_float": "write a whole number",
    "bool_type": "write true or false, without quotes",
    "float_type": "write a number, without quotes",
    "string_type": "write a text value (quote it in YAML if it looks like a number or date)",
    "list_type": "write a list ([a, b] or one '- item' per line)",
    "dict_type": "write a mapping of key: value pairs",
    "model_type": "write a mapping of key: value pairs",
    "model_attributes_type": "write a mapping of key: value pairs",
}


def _fix_for(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if "fix" in ctx:
        return str(ctx["fix"])
    if kind == "extra_forbidden":
        parent = loc[:-1]
        model = ModelInfo if len(parent) == 2 and parent[0] == "models" else _MODEL_AT.get(parent)
        if model is not None:
            allowed = ", ".join(model.model_fields)
            return f"remove or rename {loc[-1]!r}; allowed fields here: {allowed}"
        return f"remove {loc[-1]!r}"
    if kind == "missing":
        if loc == ("evidence",):
            return "add `evidence:` with pool_tag and/or window_tags"
        return f"add the required field {loc[-1]!r}"
    if kind in {"literal_error", "enum"} and "expected" in ctx:
        return f"use one of {ctx['expected']}"
    if kind.startswith(("greater_than", "less_than")):
        return "use a value inside the allowed range"
    if kind in {"string_too_short"}:
        return "give a non-empty value"
    if kind in _TYPE_FIXES:
        return _TYPE_FIXES[kind]
    return "correct the value"


def spec_error_from_validation(exc: ValidationError) -> SpecError:
    """Turn pydantic's errors into SpecIssues with dotted paths and a fix for each."""
    issues: list[SpecIssue] = []
    for error in exc.errors(include_url=False, include_input=False):
        ctx = error.get("ctx") or {}
        path = str(ctx["path"]) if "path" in ctx else _loc_to_path(error["loc"])
        message = str(ctx.get("message", error["msg"]))
        issues.append({"path": path, "message": message, "fix": _fix_for(error)})
    return SpecError(issues)


def parse_spec(body: object) -> ExperimentSpec:
    """Validate a raw body (secrets first, then the schema); raise SpecError on any problem."""
    if not isinstance(body, Mapping):
        raise SpecError(
            [
                {
                    "path": "",
                    "message": f"a spec must be a mapping, got {type(body).__name__}",
                    "fix": "write the spec as key: value pairs (rubric, scoring, evidence, ...)",
                }
            ]
        )
    secrets = find_secrets(body)
    if secrets:
        raise SpecError(secrets)
    nul = [
        SpecIssue(
            path=path,
            message="contains a NUL character (\\u0000), which cannot be stored",
            fix="remove the NUL character from the text",
        )
        for path, _key, value in _walk(body, "")
        if isinstance(value, str) and "\x00" in value
    ]
    if nul:
        raise SpecError(nul)
    try:
        return ExperimentSpec.model_validate(dict(body))
    except ValidationError as exc:
        raise spec_error_from_validation(exc) from None


def normalize_spec(body: object) -> dict[str, Any]:
    """The canonical stored form: validated, defaults filled, randomizations sorted, legacy
    evidence views renamed, ``models`` pinned to the entries used. Idempotent."""
    return parse_spec(body).model_dump(mode="json")


def _canonical_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {value!r} cannot be signed")
    if value.is_integer() and abs(value) < 2**53:
        # 8000.0 and 8000 are the same number to every reader of the config; render both as
        # "8000" (this also maps -0.0 to "0").
        return str(int(value))
    # repr() is the shortest string that round-trips the IEEE-754 double; it has been the same
    # on every CPython since 3.1, independent of locale and platform.
    return repr(value)


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only, fixed number rendering.

    Why hand-written instead of ``json.dumps(sort_keys=True)``: json.dumps renders ``8000.0``
    and ``8000`` differently and accepts NaN; a signature must not depend on how a number
    happened to be typed. Only JSON types are accepted (TypeError otherwise).
    """
    import json  # local: only string escaping is borrowed from it

    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _canonical_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, Mapping):
        items = []
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {key!r}")
            items.append(f"{json.dumps(key, ensure_ascii=True)}:{canonical_json(value[key])}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def sha256_canonical(value: object) -> str:
    """SHA-256 hex of :func:`canonical_json` (UTF-8; the text is ASCII anyway)."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def spec_signature(body: object) -> str:
    """SHA-256 hex over the canonical JSON of the normalized spec.

    Two bodies get the same signature exactly when they describe the same experiment:
    key order, list order of randomizations, legacy view names, omitted defaults and
    ``8000`` vs ``8000.0`` make no difference.
    """
    return sha256_canonical(normalize_spec(body))
