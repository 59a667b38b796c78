"""The naive baseline of PROOF.md 3: one Celery task per LLM request, direct call, ORM write.

Loaded into the benchmark's worker with ``celery worker --include bench.naive``.
"""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from orchestration.models import LlmRequest
from orchestration.transport.providers import get_adapter
from orchestration.transport.providers.base import ChatRequest, provider_custom_id


@shared_task(name="bench.naive_call", ignore_result=True)
def naive_call(request_id: int) -> None:
    row = LlmRequest.objects.select_related("system_prompt").get(pk=request_id)
    result = get_adapter(row.provider).direct_call(
        ChatRequest(
            custom_id=provider_custom_id(row.pk),
            model=row.provider_model,
            system=row.system_prompt.content if row.system_prompt else None,
            user=row.user_prompt,
            max_output_tokens=64,
        ),
        timeout=60,
    )
    row.output_text = result.output_text
    row.input_tokens = result.input_tokens
    row.output_tokens = result.output_tokens
    row.status = "succeeded"
    row.completed_at = timezone.now()
    row.save()
