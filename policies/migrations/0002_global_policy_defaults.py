"""Seed the global policy row with the engine defaults.

Why these values (ARCHITECTURE.md section 6; DOMAIN.md section 4):

* requests 10k/min, input and output tokens 30M/min each: OpenAI tier 5 for gpt-4.1, the
  original engine's active tier. As *global* limits they cap the whole installation; set
  provider/model rows to mirror the real tiers per model.
* batch_enqueued_tokens 90M: input tokens held by unfinished batches at once.
* max_batch_size 500 (temporal branch), min_batch_size 30 (`main`; below it -> direct calls).
* max_batch_bytes 100 MB: OpenAI's batch input file limit is 200 MB; stay well under it.
* max_concurrent_batches 8.
* poll_interval_seconds 20: `main`'s poll_interval_ms 20000 (scheduler period and batch
  re-poll); batches take minutes to hours, so polling faster only spends API calls.
* max_request_attempts 3, max_batch_retries 2, retry_backoff 60 s (`main`), jitter 0.2.
* request_timeout 120 s, direct_concurrency 8 (`main`'s job_request_concurrency).
* batch_mode auto, partial_failure_policy fail_run (`main`'s behaviour).
* no token or dollar budgets; output_token_cap 8000 (`main`'s max_tokens, an output cap).

Idempotent: an existing global row (any key) is left as the operator edited it; reversing
deletes nothing that an operator may have changed since.
"""

from django.db import migrations

DEFAULTS = {
    "requests_per_minute": 10_000,
    "input_tokens_per_minute": 30_000_000,
    "output_tokens_per_minute": 30_000_000,
    "batch_enqueued_tokens": 90_000_000,
    "max_batch_size": 500,
    "min_batch_size": 30,
    "max_batch_bytes": 100 * 1024 * 1024,
    "max_concurrent_batches": 8,
    "poll_interval_seconds": 20,
    "max_request_attempts": 3,
    "max_batch_retries": 2,
    "retry_backoff_seconds": 60,
    "retry_jitter_ratio": 0.2,
    "request_timeout_seconds": 120,
    "direct_concurrency": 8,
    "batch_mode": "auto",
    "partial_failure_policy": "fail_run",
    "token_budget": None,
    "dollar_budget": None,
    "output_token_cap": 8000,
}


def seed_global(apps, schema_editor):
    Policy = apps.get_model("policies", "Policy")
    db = schema_editor.connection.alias
    if Policy.objects.using(db).filter(scope="global").exists():
        return
    Policy.objects.using(db).create(
        scope="global",
        key="default",
        notes="Engine defaults (migration 0002). Edit freely; narrower scopes override.",
        **DEFAULTS,
    )


def unseed_global(apps, schema_editor):
    Policy = apps.get_model("policies", "Policy")
    db = schema_editor.connection.alias
    Policy.objects.using(db).filter(scope="global", key="default", **DEFAULTS).delete()


class Migration(migrations.Migration):
    dependencies = [("policies", "0001_initial")]

    operations = [migrations.RunPython(seed_global, unseed_global)]
