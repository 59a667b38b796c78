"""Hypothesis strategies: documents mutated from a valid experiment spec.

Why mutate a valid spec instead of generating random JSON: random JSON is rejected at the
top level and never reaches the interesting validators; one or two targeted mutations of a
good document (wrong type, unknown key, bad enum, missing field, a secret, a non-finite
number) exercise every field's error path, and the mutated path is known, so a test can
demand that the error names it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

VALID_SPEC: dict[str, Any] = {
    "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
    "scoring": {
        "model": "gpt-4.1-mini",
        "method": "subset",
        "abstain_enabled": True,
        "evidence_view": "l2_neutralized",
        "randomizations": ["anonymize_stages", "hide_label_text"],
        "evidence_bundle_size": 1,
        "bundle_strategy": "window_round_robin",
        "clustering_seed": 7,
    },
    "sample_count": 10,
    "evidence": {"pool_tag": "demo-pool"},
    "max_output_tokens": 4000,
}

MODEL_ENTRY: dict[str, Any] = {
    "provider": "openai",
    "provider_model": "gpt-x-2026",
    "batchable": True,
    "input_price_per_mtok": 1.0,
    "output_price_per_mtok": 2.0,
}

ENUM_PATHS = (
    ("scoring", "method"),
    ("scoring", "evidence_view"),
    ("scoring", "bundle_strategy"),
    ("pause_after",),
    ("scoring", "randomizations", 0),
)

SECRET_KEYS = ("api_key", "apiKey", "OPENAI_API_KEY", "auth_token", "password", "secret")
SECRET_VALUES = (
    "sk-" + "a" * 40,
    "sk-ant-" + "b" * 40,
    "Bearer abcdefghijklmnopqrstuvwxyz",
    "fc-" + "c" * 30,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "5", "true", "l9_weird", "sk-", "null", "\x00", "é" * 3]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*prefix, i))
            out.extend(_paths(v, (*prefix, i)))
    return out


def dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node


@dataclass
class Mutated:
    doc: Any
    paths: list[str]  # dotted paths the mutations touched (relative to the document)
    kinds: list[str]


@st.composite
def mutated_specs(
    draw: st.DrawFn, *, base: dict[str, Any] | None = None, max_mutations: int = 2
) -> Mutated:
    """A valid spec with 0..max_mutations mutations; ``paths`` says where."""
    doc: Any = copy.deepcopy(base or VALID_SPEC)
    if draw(st.booleans()):
        doc["models"] = {"gpt-x": copy.deepcopy(MODEL_ENTRY)}
    paths: list[str] = []
    kinds: list[str] = []
    for _ in range(draw(st.integers(0, max_mutations))):
        all_paths = _paths(doc)
        kind = draw(
            st.sampled_from(
                ["set", "delete", "unknown_key", "enum", "secret_key", "secret_value", "nonfinite"]
            )
        )
        if kind == "enum":
            path = draw(st.sampled_from(ENUM_PATHS))
            try:
                parent = _parent(doc, path)
                parent[path[-1]] = draw(st.sampled_from(["sideways", "SINGLE", "l4_x", "", "raw "]))
            except (KeyError, IndexError, TypeError):
                continue
        elif kind == "nonfinite":
            if "models" not in doc or not isinstance(doc["models"], dict) or not doc["models"]:
                doc["models"] = {"gpt-x": copy.deepcopy(MODEL_ENTRY)}
            name = next(iter(doc["models"]))
            if not isinstance(doc["models"][name], dict):
                continue
            field = draw(st.sampled_from(["input_price_per_mtok", "output_price_per_mtok"]))
            doc["models"][name][field] = draw(
                st.sampled_from([float("nan"), float("inf"), -float("inf")])
            )
            path = ("models", name, field)
            # Unused registry entries are dropped by normalization; use it to make it count.
            if draw(st.booleans()) and isinstance(doc.get("scoring"), dict):
                doc["scoring"]["model"] = name
        elif not all_paths:
            continue
        elif kind == "set":
            path = draw(st.sampled_from(all_paths))
            _parent(doc, path)[path[-1]] = draw(values)
        elif kind == "delete":
            path = draw(
                st.sampled_from([p for p in all_paths if not isinstance(p[-1], int)] or all_paths)
            )
            parent = _parent(doc, path)
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        elif kind == "unknown_key":
            maps = [()] + [p for p in all_paths if isinstance(_parent(doc, (*p, None)), dict)]
            where = draw(st.sampled_from(maps))
            node = doc if where == () else _parent(doc, (*where, None))
            key = draw(st.sampled_from(["abstain_enable", "colour", "samples", "x_y", "Model"]))
            if key in node:
                continue
            node[key] = draw(scalars)
            path = (*where, key)
        elif kind == "secret_key":
            maps = [()] + [p for p in all_paths if isinstance(_parent(doc, (*p, None)), dict)]
            where = draw(st.sampled_from(maps))
            node = doc if where == () else _parent(doc, (*where, None))
            key = draw(st.sampled_from(SECRET_KEYS))
            node[key] = "hunter2"
            path = (*where, key)
        else:  # secret_value
            strings = [p for p in all_paths if isinstance(_parent(doc, p)[p[-1]], str)]
            if not strings:
                continue
            path = draw(st.sampled_from(strings))
            _parent(doc, path)[path[-1]] = draw(st.sampled_from(SECRET_VALUES))
        paths.append(dotted(path))
        kinds.append(kind)
    return Mutated(doc=doc, paths=paths, kinds=kinds)


def related(issue_path: str, mutated: str) -> bool:
    """Whether an error at ``issue_path`` is about the mutated path (same, inside, or parent)."""
    if issue_path in ("", "(file)", "(top level)"):
        return True
    return (
        issue_path == mutated
        or issue_path.startswith((mutated + ".", mutated + "["))
        or mutated.startswith((issue_path + ".", issue_path + "["))
    )


def names_mutation(issue: dict[str, str], mutated: str) -> bool:
    """Whether an issue is about the mutated path: at it, inside it or above it, or, when
    the mutation broke a reference elsewhere (``models`` deleted while ``scoring.model``
    still names one of its entries), its fix names the mutated key (``under `models```)."""
    if related(issue["path"], mutated):
        return True
    key = mutated.rsplit(".", 1)[-1].split("[", 1)[0]
    return bool(key) and f"`{key}`" in issue["fix"]
