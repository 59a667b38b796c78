"""How long the verifier takes on a big run: ``python -m tests.chaos.scale_verify --samples 1000``.

Builds a *synthetic* completed run (samples x 100 evidence targets: 10^5 at the default)
directly in SQL -- every request succeeded on attempt 1, one artifact each, the ledger of a
clean run -- in its own database, then times ``verify_run`` (which must report it clean) and
a damaged copy (one artifact removed, which it must catch). Why synthetic: pushing 2x10^5
requests through the simulator would measure the engine, not the verifier.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--evidence", type=int, default=100, help="evidence per pool (even)")
    args = parser.parse_args(argv)

    from tests.chaos.matrix import _setup_django

    old = _setup_django("chaos_scale")
    from django.db import connection
    from django.test import override_settings

    from orchestration.models import Run
    from orchestration.verify import verify_run
    from tests.chaos.harness import Workload, experiment_setup, policy_install

    try:
        w = Workload(samples=args.samples, evidence_per_window=args.evidence // 2)
        policy_install(w)
        tag = experiment_setup(w, tag="scale")
        from orchestration.services.runs import experiment_start

        t0 = time.monotonic()
        with override_settings(JUDGE_SIMULATOR_URL="http://127.0.0.1:9"):
            run = experiment_start(tag=tag)
        print(f"run {run.pk}: {run.sample_count} samples, {run.target_count} targets "
              f"created in {time.monotonic() - t0:.1f}s")  # fmt: skip
        t0 = time.monotonic()
        _complete_in_sql(connection, run.pk)
        print(f"synthetic completion (requests, artifacts, ledger) in {time.monotonic() - t0:.1f}s")
        run = Run.objects.select_related("experiment").get(pk=run.pk)
        t0 = time.monotonic()
        report = verify_run(run=run, submissions={})
        clean_s = time.monotonic() - t0
        print(f"verify_run (clean): ok={report.ok} in {clean_s:.2f}s; stats {report.stats}")
        for v in report.violations:
            print("  ", v)
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM orchestration_scorecritic WHERE id = "
                "(SELECT min(id) FROM orchestration_scorecritic WHERE run_id = %s)",
                [run.pk],
            )
        t0 = time.monotonic()
        damaged = verify_run(run=run, submissions={})
        print(f"verify_run (one artifact removed): codes={sorted(damaged.codes())} in "
              f"{time.monotonic() - t0:.2f}s")  # fmt: skip
        return 0 if report.ok and not damaged.ok else 1
    finally:
        connection.close()
        connection.creation.destroy_test_db(old, verbosity=0)


def _complete_in_sql(connection: object, run_id: int) -> None:
    process = f"run:{run_id}"
    req_cols = (
        "custom_key, attempt_index, process, stage, status, route, route_hint, batchable, "
        "provider, model, provider_model, user_prompt, params, prompt_version, max_attempts, "
        "est_input_tokens, error_class, error_message, next_attempt_at, created_at, output_text"
    )
    req_vals = (
        "1, %(p)s, '{stage}', 'succeeded', 'batch', 'auto', true, 'openai', 'gpt-4.1-mini', "
        "'x', 'u', '{{}}', '', 3, 0, '', '', now(), now(), 'ok'"
    )
    stmts = []
    for stage, unit, prefix in (
        ("rubric_gen", "orchestration_sample", "sample"),
        ("rubric_critic", "orchestration_sample", "sample"),
        ("score_gen", "orchestration_scoretarget", "sample_score_target"),
        ("score_critic", "orchestration_scoretarget", "sample_score_target"),
    ):
        stmts.append(
            f"INSERT INTO orchestration_llmrequest ({req_cols}) SELECT '{prefix}:' || u.id || "
            f"':{stage}', {req_vals.format(stage=stage)} FROM {unit} u WHERE u.run_id = %(r)s"
        )
    join = "JOIN orchestration_llmrequest q ON q.custom_key = '{k}:' || u.id || ':{s}'"
    stmts += [
        "INSERT INTO orchestration_rubric (run_id, sample_id, llm_request_id, model, concept, "
        "scale_size, justification, stages, label_mapping, created_at) SELECT %(r)s, u.id, q.id, "
        "'m', 'c', 4, 'j', '[]', '{}', now() FROM orchestration_sample u "
        + join.format(k="sample", s="rubric_gen")
        + " WHERE u.run_id = %(r)s",
        "INSERT INTO orchestration_rubriccritic (run_id, sample_id, llm_request_id, model, "
        "justification, observability_score, discriminability_score, created_at) SELECT %(r)s, "
        "u.id, q.id, 'm', 'j', 0.5, 0.5, now() FROM orchestration_sample u "
        + join.format(k="sample", s="rubric_critic")
        + " WHERE u.run_id = %(r)s",
        "INSERT INTO orchestration_score (run_id, sample_id, target_id, llm_request_id, model, "
        "justification, raw_verdict, decoded_scores, abstained, created_at) SELECT %(r)s, "
        "u.sample_id, u.id, q.id, 'm', 'j', 'A', '[1]', false, now() FROM "
        "orchestration_scoretarget u "
        + join.format(k="sample_score_target", s="score_gen")
        + " WHERE u.run_id = %(r)s",
        "INSERT INTO orchestration_scorecritic (run_id, sample_id, target_id, llm_request_id, "
        "model, justification, expert_agreement_prob, created_at) SELECT %(r)s, u.sample_id, "
        "u.id, q.id, 'm', 'j', 0.5, now() FROM orchestration_scoretarget u "
        + join.format(k="sample_score_target", s="score_critic")
        + " WHERE u.run_id = %(r)s",
    ]
    events = [("run_started", "rubric_gen")]
    stages = ["rubric_gen", "rubric_critic", "score_gen", "score_critic"]
    for i, stage in enumerate(stages):
        if i:
            events.append(("stage_advanced", stage))
        events += [("stage_materialized", stage), ("stage_settled", stage)]
    events.append(("run_completed", "score_critic"))
    for event_type, stage in events:
        stmts.append(
            "INSERT INTO orchestration_runevent (created_at, process, stage, event_type, "
            f"custom_key, task_id, payload) VALUES (now(), %(p)s, '{stage}', '{event_type}', "
            "'', '', '{}')"
        )
    stmts.append(
        "UPDATE orchestration_run SET status = 'completed', current_stage = 'score_critic', "
        'materialized_stages = \'["rubric_gen", "rubric_critic", "score_gen", '
        '"score_critic"]\', started_at = now(), completed_at = now() WHERE id = %(r)s'
    )
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        for sql in stmts:
            cursor.execute(sql, {"r": run_id, "p": process})
        cursor.execute("ANALYZE")


if __name__ == "__main__":
    sys.exit(main())
