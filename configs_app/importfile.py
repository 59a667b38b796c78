"""Reading template files (YAML or JSON) into validated, normalized documents.

File format (chosen by extension: ``.yaml``/``.yml`` or ``.json``)::

    template_id: demo-fascism     # required, a slug
    schema_version: 1             # optional, default 1 (the only version so far)
    notes: free text              # optional; not part of the signature
    spec:                         # required: the ExperimentSpec body
      rubric: {...}
      scoring: {...}
      ...

Unknown top-level keys are rejected, and so are duplicate keys at any depth (YAML and JSON
both silently keep the last one otherwise, which hides copy-paste mistakes). Nothing here
touches the database: callers decide what to write.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from configs_app.spec import SpecError, SpecIssue, find_secrets, normalize_spec, sha256_canonical

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
TOP_LEVEL_KEYS = ("template_id", "schema_version", "notes", "spec")
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
EXTENSIONS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


@dataclass(frozen=True)
class TemplateDocument:
    """A validated template file: ``spec`` is normalized and ``spec_signature`` computed."""

    source: str
    template_id: str
    schema_version: int
    notes: str
    spec: dict[str, Any]
    spec_signature: str


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,  # type: ignore[arg-type]
)


def _issue(path: str, message: str, fix: str) -> SpecIssue:
    return {"path": path, "message": message, "fix": fix}


def _no_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_text(text: str, *, kind: str, source: str) -> object:
    """Parse YAML or JSON text; syntax errors become a SpecError with line and column."""
    try:
        if kind == "json":
            return json.loads(text, object_pairs_hook=_no_duplicate_json_keys)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise SpecError(
            [_issue("(file)", f"invalid JSON at {where}: {exc.msg}", "fix the JSON syntax")],
            source=source,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(
            [
                _issue(
                    "(file)",
                    f"invalid YAML{where}: {problem}",
                    "fix the YAML syntax (indentation, colons, quoting)",
                )
            ],
            source=source,
        ) from None
    except ValueError as exc:  # duplicate JSON key
        raise SpecError(
            [_issue("(file)", f"invalid JSON: {exc}", "keep one entry per key")], source=source
        ) from None


def document_from_data(data: object, *, source: str) -> TemplateDocument:
    """Validate a parsed file (top level, secrets, spec) and normalize its spec.

    All problems found are reported together, with paths relative to the file's top level
    (``spec.scoring.evidence_view``).
    """
    if not isinstance(data, dict):
        raise SpecError(
            [
                _issue(
                    "(file)",
                    f"the file must contain a mapping, got {type(data).__name__}",
                    f"write top-level keys: {', '.join(TOP_LEVEL_KEYS)}",
                )
            ],
            source=source,
        )
    secrets = find_secrets(data)
    if secrets:
        raise SpecError(secrets, source=source)

    issues: list[SpecIssue] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            issues.append(
                _issue(
                    str(key),
                    "unknown top-level key",
                    f"remove it; allowed top-level keys: {', '.join(TOP_LEVEL_KEYS)} "
                    "(experiment fields go under `spec:`)",
                )
            )
    template_id = data.get("template_id")
    if not isinstance(template_id, str) or not SLUG.match(template_id):
        issues.append(
            _issue(
                "template_id",
                "missing" if template_id is None else f"{template_id!r} is not a slug",
                "set template_id to letters, digits, '-' or '_' (at most 100), e.g. demo-fascism",
            )
        )
    schema_version = data.get("schema_version", 1)
    if (
        isinstance(schema_version, bool)
        or not isinstance(schema_version, int)
        or schema_version not in SUPPORTED_SCHEMA_VERSIONS
    ):
        issues.append(
            _issue(
                "schema_version",
                f"unsupported schema_version {schema_version!r}",
                f"use one of {sorted(SUPPORTED_SCHEMA_VERSIONS)} (or omit it)",
            )
        )
    notes = data.get("notes", "")
    if notes is None:
        notes = ""
    if not isinstance(notes, str):
        issues.append(_issue("notes", "notes must be text", "quote the notes as a string"))
    spec: dict[str, Any] | None = None
    if "spec" not in data:
        issues.append(
            _issue("spec", "missing", "add a `spec:` mapping with rubric, scoring, evidence, ...")
        )
    else:
        try:
            spec = normalize_spec(data["spec"])
        except SpecError as exc:
            issues.extend(exc.prefixed("spec").issues)
    if issues or spec is None:
        raise SpecError(issues, source=source)
    assert isinstance(template_id, str)
    assert isinstance(schema_version, int)
    assert isinstance(notes, str)
    return TemplateDocument(
        source=source,
        template_id=template_id,
        schema_version=schema_version,
        notes=notes,
        spec=spec,
        spec_signature=sha256_canonical(spec),
    )


def load_template_file(path: str | Path) -> TemplateDocument:
    """Read, parse and validate one template file. Raises SpecError naming the file."""
    source = str(path)
    file_path = Path(path)
    kind = EXTENSIONS.get(file_path.suffix.lower())
    if kind is None:
        raise SpecError(
            [
                _issue(
                    "(file)",
                    f"unsupported file extension {file_path.suffix!r}",
                    "name the file *.yaml, *.yml or *.json",
                )
            ],
            source=source,
        )
    try:
        text = file_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            [_issue("(file)", f"cannot read the file: {exc}", "check the path and encoding")],
            source=source,
        ) from None
    return document_from_data(parse_text(text, kind=kind, source=source), source=source)
