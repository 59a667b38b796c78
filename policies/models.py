"""Teams, scoped policy rows, and the state of the database-backed rate limiter.

A ``Policy`` row sets *some* fields for one scope (``global``, a team, a provider, a model or
an experiment tag); every field is nullable and "unset" means "ask the next broader scope"
(ARCHITECTURE.md section 6, resolved by :mod:`policies.resolver`). The database enforces what
it can (one row per scope and key, positive limits, jitter within 0..1, min <= max batch size),
so a bad row written by a script or a shell is refused just like one from the admin;
``Policy.clean`` repeats those checks with messages that name the field and the fix.

``LimiterBucket``, ``LimiterReservation`` and ``LimiterHold`` hold the live state of
:class:`policies.limiter.DatabaseLimiter`, used when ``JUDGE_REDIS_URL`` is unset (the embedded
default). With Redis configured they stay empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_slug
from django.db import models
from django.db.models import Q

#: Providers a ``provider``-scope row may name. Kept here rather than imported from the model
#: registry so that ``policies`` depends on no other app (ARCHITECTURE.md section 5).
PROVIDERS: tuple[str, ...] = ("openai", "anthropic")

#: Accepted keys of the single ``global`` row; ``clean()`` stores ``"default"``.
GLOBAL_KEYS: tuple[str, ...] = ("", "default")

#: Every overridable policy field, in display order. The resolver, the admin fieldsets and
#: the frozen JSON all follow this order.
POLICY_FIELDS: tuple[str, ...] = (
    "requests_per_minute",
    "input_tokens_per_minute",
    "output_tokens_per_minute",
    "batch_enqueued_tokens",
    "max_batch_size",
    "min_batch_size",
    "max_batch_bytes",
    "max_concurrent_batches",
    "poll_interval_seconds",
    "max_request_attempts",
    "max_batch_retries",
    "retry_backoff_seconds",
    "retry_jitter_ratio",
    "request_timeout_seconds",
    "direct_concurrency",
    "batch_mode",
    "partial_failure_policy",
    "token_budget",
    "dollar_budget",
    "output_token_cap",
)

#: Fields that must be >= 1 when set (0 would stall or silently disable the engine).
POSITIVE_FIELDS: tuple[str, ...] = (
    "requests_per_minute",
    "input_tokens_per_minute",
    "output_tokens_per_minute",
    "batch_enqueued_tokens",
    "max_batch_size",
    "min_batch_size",
    "max_batch_bytes",
    "max_concurrent_batches",
    "poll_interval_seconds",
    "max_request_attempts",
    "request_timeout_seconds",
    "direct_concurrency",
    "token_budget",
    "output_token_cap",
)
#: Fields where 0 is meaningful (no batch retry; retry at once).
NON_NEGATIVE_FIELDS: tuple[str, ...] = ("max_batch_retries", "retry_backoff_seconds")

_KEY_RE = re.compile(r"^\S(?:.*\S)?$")


def _number(value: object) -> float | None:
    """A finite real number as float, else None (strings, bools, NaN are not compared)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _non_finite(value: object) -> bool:
    """True for NaN and infinities (float or Decimal), which no policy field can hold."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Decimal):
        return not value.is_finite()
    return False


class Team(models.Model):
    """A group of researchers; experiments point at it and team-scope policies key on its slug."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Policy(models.Model):
    """One scope's overrides. ``None`` in a field means "not set here; fall back upward"."""

    class Scope(models.TextChoices):
        GLOBAL = "global", "global"
        TEAM = "team", "team"
        PROVIDER = "provider", "provider"
        MODEL = "model", "model"
        EXPERIMENT = "experiment", "experiment"

    class BatchMode(models.TextChoices):
        DISABLED = "disabled", "disabled (direct calls only)"
        AUTO = "auto", "auto (batch when batchable and >= min batch size)"
        FORCE = "force", "force (always batch batchable models)"

    class PartialFailurePolicy(models.TextChoices):
        FAIL_RUN = "fail_run", "fail the run when any target is exhausted"
        CONTINUE = "continue", "continue; fail only when nothing completed"

    scope = models.CharField(max_length=16, choices=Scope.choices)
    key = models.CharField(
        max_length=200,
        blank=True,
        help_text=(
            "global: empty or 'default'; team: team slug; provider: openai|anthropic; "
            "model: registry id such as gpt-4.1; experiment: experiment tag."
        ),
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # --- rate limits (live token buckets owned by the scope that sets them) -----------------
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    input_tokens_per_minute = models.PositiveBigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    output_tokens_per_minute = models.PositiveBigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    batch_enqueued_tokens = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Max input tokens held by unfinished provider batches at once (a gauge).",
    )

    # --- batching ---------------------------------------------------------------------------
    max_batch_size = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    min_batch_size = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Fewer queued requests than this go through direct calls (batch_mode=auto).",
    )
    max_batch_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Serialized JSONL size per batch shard. OpenAI accepts up to 200 MB.",
    )
    max_concurrent_batches = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    poll_interval_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )

    # --- retries ----------------------------------------------------------------------------
    max_request_attempts = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Attempts per request key, the first one included.",
    )
    max_batch_retries = models.PositiveIntegerField(
        null=True, blank=True, help_text="Re-submissions of a failed batch; 0 disables."
    )
    retry_backoff_seconds = models.PositiveIntegerField(null=True, blank=True)
    retry_jitter_ratio = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Backoff is multiplied by a random factor in [1 - r, 1 + r].",
    )
    request_timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )

    # --- direct calls -----------------------------------------------------------------------
    direct_concurrency = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    batch_mode = models.CharField(max_length=16, choices=BatchMode.choices, null=True, blank=True)
    partial_failure_policy = models.CharField(
        max_length=16, choices=PartialFailurePolicy.choices, null=True, blank=True
    )

    # --- budgets and caps -------------------------------------------------------------------
    token_budget = models.PositiveBigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    dollar_budget = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="USD. The limiter counts it in integer micro-dollars.",
    )
    output_token_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="max_tokens sent with every request (output tokens only).",
    )

    class Meta:
        ordering = ["scope", "key"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="policy_scope_key_unique"),
            # "" and "default" both name the global row, so (scope, key) alone would allow two.
            models.UniqueConstraint(
                fields=["scope"],
                condition=Q(scope="global"),
                name="policy_single_global",
                violation_error_message="There is already a global policy row; edit it instead.",
            ),
            models.CheckConstraint(
                condition=Q(scope__in=["global", "team", "provider", "model", "experiment"]),
                name="policy_scope_valid",
            ),
            models.CheckConstraint(
                condition=(Q(scope="global") & Q(key__in=GLOBAL_KEYS))
                | (~Q(scope="global") & ~Q(key="")),
                name="policy_key_matches_scope",
                violation_error_message=(
                    "The global row's key must be empty or 'default'; every other scope needs "
                    "a key."
                ),
            ),
            *[
                models.CheckConstraint(
                    condition=Q(**{f"{name}__isnull": True}) | Q(**{f"{name}__gte": 1}),
                    name=f"policy_{name}_positive",
                    violation_error_message=f"{name} must be at least 1 when set.",
                )
                for name in POSITIVE_FIELDS
            ],
            *[
                models.CheckConstraint(
                    condition=Q(**{f"{name}__isnull": True}) | Q(**{f"{name}__gte": 0}),
                    name=f"policy_{name}_non_negative",
                    violation_error_message=f"{name} must not be negative.",
                )
                for name in NON_NEGATIVE_FIELDS
            ],
            models.CheckConstraint(
                condition=Q(retry_jitter_ratio__isnull=True)
                | (Q(retry_jitter_ratio__gte=0) & Q(retry_jitter_ratio__lte=1)),
                name="policy_retry_jitter_ratio_range",
                violation_error_message="retry_jitter_ratio must be between 0 and 1.",
            ),
            models.CheckConstraint(
                condition=Q(dollar_budget__isnull=True) | Q(dollar_budget__gt=0),
                name="policy_dollar_budget_positive",
                violation_error_message="dollar_budget must be greater than 0 when set.",
            ),
            models.CheckConstraint(
                condition=Q(batch_mode__isnull=True)
                | Q(batch_mode__in=["disabled", "auto", "force"]),
                name="policy_batch_mode_valid",
            ),
            models.CheckConstraint(
                condition=Q(partial_failure_policy__isnull=True)
                | Q(partial_failure_policy__in=["fail_run", "continue"]),
                name="policy_partial_failure_policy_valid",
            ),
            models.CheckConstraint(
                condition=Q(min_batch_size__isnull=True)
                | Q(max_batch_size__isnull=True)
                | Q(min_batch_size__lte=models.F("max_batch_size")),
                name="policy_min_batch_le_max_batch",
                violation_error_message="min_batch_size must not exceed max_batch_size.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}" if self.scope != self.Scope.GLOBAL else "global"

    def clean(self) -> None:
        """Normalize the key and explain, per field, what the database would refuse.

        The CheckConstraints above are the guarantee; this exists so the admin shows
        "min_batch_size (600) exceeds max_batch_size (500)" next to the field instead of a
        generic constraint message.
        """
        errors: dict[str, list[str]] = {}
        self.key = (self.key or "").strip()
        if self.scope == self.Scope.GLOBAL:
            if self.key not in GLOBAL_KEYS:
                errors.setdefault("key", []).append(
                    "The global policy's key must be empty or 'default'."
                )
            else:
                self.key = "default"
        elif self.scope in self.Scope.values:
            # An unknown scope is clean_fields()' error; its key cannot be judged.
            if not self.key:
                errors.setdefault("key", []).append(
                    f"A {self.scope}-scope policy needs a key ({self._key_hint()})."
                )
            elif not _KEY_RE.match(self.key):
                errors.setdefault("key", []).append("The key must not contain only whitespace.")
            elif self.scope == self.Scope.PROVIDER and self.key not in PROVIDERS:
                errors.setdefault("key", []).append(
                    f"Unknown provider {self.key!r}; use one of: {', '.join(PROVIDERS)}."
                )
            elif self.scope == self.Scope.TEAM:
                try:
                    validate_slug(self.key)
                except ValidationError:
                    errors.setdefault("key", []).append(
                        "A team key is the team's slug (letters, digits, '-' and '_')."
                    )
        # clean() runs even when clean_fields() failed, so values may still be raw input
        # (strings); only compare real numbers and leave type errors to clean_fields().
        for name in POSITIVE_FIELDS:
            value = _number(getattr(self, name))
            if value is not None and value < 1:
                errors.setdefault(name, []).append(f"Must be at least 1 (got {value}).")
        for name in NON_NEGATIVE_FIELDS:
            value = _number(getattr(self, name))
            if value is not None and value < 0:
                errors.setdefault(name, []).append(f"Must not be negative (got {value}).")
        jitter = _number(self.retry_jitter_ratio)
        if jitter is not None and not 0.0 <= jitter <= 1.0:
            errors.setdefault("retry_jitter_ratio", []).append(
                f"Must be between 0 and 1 (got {jitter}); 0.2 means +/-20%."
            )
        budget = _number(self.dollar_budget)
        if budget is not None and budget <= 0:
            errors.setdefault("dollar_budget", []).append("Must be greater than 0 when set.")
        low, high = _number(self.min_batch_size), _number(self.max_batch_size)
        if low is not None and high is not None and low > high:
            errors.setdefault("min_batch_size", []).append(
                f"min_batch_size ({self.min_batch_size}) exceeds max_batch_size "
                f"({self.max_batch_size}); no batch could ever be formed."
            )
        if errors:
            raise ValidationError(errors)

    def _key_hint(self) -> str:
        # Keyed by the raw string: clean() also runs when clean_fields() already refused an
        # unknown scope, and Scope("bogus") would raise instead of explaining.
        hints: dict[str, str] = {
            self.Scope.TEAM.value: "the team slug",
            self.Scope.PROVIDER.value: " or ".join(PROVIDERS),
            self.Scope.MODEL.value: "a model registry id such as gpt-4.1",
            self.Scope.EXPERIMENT.value: "the experiment tag",
        }
        return hints.get(str(self.scope), "a key")

    def clean_fields(self, exclude: Collection[str] | None = None) -> None:
        """Refuse non-finite numbers before Django converts them; blank means "inherit".

        ``IntegerField.to_python(float("inf"))`` raises ``OverflowError`` (it only catches
        ``TypeError``/``ValueError``), which would escape ``full_clean`` as a crash instead of
        a field error. NaN and infinities are never a meaningful limit, price or ratio.
        """
        skip = set(exclude or ())
        errors: dict[str, list[str]] = {}
        for field in self._meta.concrete_fields:
            if field.attname in skip or not isinstance(
                field, models.IntegerField | models.FloatField | models.DecimalField
            ):
                continue
            value = getattr(self, field.attname)
            if field.null and (
                value in field.empty_values or (isinstance(value, str) and not value.strip())
            ):
                # "" (or [] etc.) is how a blank form or file says "not set": inherit, as the
                # admin does. Left raw, clean_fields() skips it as blank and the constraint
                # checks then hand it to int() and crash.
                setattr(self, field.attname, None)
                continue
            if _non_finite(value):
                errors[field.name] = [
                    f"Must be a finite number (got {value!r}); leave it empty to inherit."
                ]
                skip.add(field.attname)
        try:
            super().clean_fields(exclude=skip)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, []).extend(messages)
        if errors:
            raise ValidationError(errors)

    def set_fields(self) -> dict[str, Any]:
        """The policy fields this row sets (non-null), for display and resolution."""
        return {
            name: getattr(self, name) for name in POLICY_FIELDS if getattr(self, name) is not None
        }


class LimiterBucket(models.Model):
    """One live limiter bucket of the database backend (``<owner>:<dimension>``).

    ``tokens`` means: for a rate bucket, the tokens available as of ``refilled_at`` (may be
    negative: debt after settling more than was reserved); for a budget, the amount spent;
    for a gauge, nothing (the row is only the lock; holdings live in ``LimiterHold`` so that
    they can expire).
    """

    key = models.CharField(max_length=300, unique=True)
    kind = models.CharField(max_length=8)
    tokens = models.FloatField(default=0.0)
    #: Epoch seconds of the last refill, from the database clock (see DatabaseLimiter._now).
    refilled_at = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key


class LimiterReservation(models.Model):
    """A granted reservation: what was taken, so settle/release/refund can be exact and idempotent."""

    reservation_id = models.CharField(max_length=200, unique=True)
    demands = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.reservation_id


class LimiterHold(models.Model):
    """Capacity held on a gauge by one reservation, until released or ``expires_at``.

    Holds expire so that a batch whose release was lost (worker killed, row deleted) cannot
    pin the gauge forever; the expiry exceeds the provider's 24 h batch window.
    """

    bucket_key = models.CharField(max_length=300)
    reservation_id = models.CharField(max_length=200)
    amount = models.FloatField()
    expires_at = models.FloatField(help_text="Epoch seconds (database clock).")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket_key", "reservation_id"], name="limiter_hold_unique"
            )
        ]
        indexes = [models.Index(fields=["bucket_key", "expires_at"], name="limiter_hold_live")]

    def __str__(self) -> str:
        return f"{self.bucket_key}<-{self.reservation_id}"
