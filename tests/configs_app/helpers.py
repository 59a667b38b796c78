"""Shared test data for configs_app tests."""

from __future__ import annotations

from typing import Any

DEMO_BODY: dict[str, Any] = {
    "rubric": {"model": "gpt-4.1-mini", "scale_size": 4, "concept": "fascism"},
    "scoring": {
        "model": "gpt-4.1-mini",
        "method": "subset",
        "abstain_enabled": True,
        "evidence_view": "l2_neutralized",
        "randomizations": ["anonymize_stages", "hide_label_text", "shuffle_rubric_order"],
        "evidence_bundle_size": 1,
        "bundle_strategy": "window_round_robin",
        "clustering_seed": 7,
    },
    "sample_count": 10,
    "evidence": {"pool_tag": "demo-pool"},
}


def template_doc(spec: dict[str, Any], template_id: str = "t1", **extra: Any) -> dict[str, Any]:
    return {"template_id": template_id, "spec": spec, **extra}
