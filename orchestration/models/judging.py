"""Judging domain: experiments, runs, samples, score targets and the four artifact tables.

Uniqueness is the database's job (DOMAIN.md "where the original is weak" 1 and 12):
* one rubric and one rubric critic per sample, one score and one score critic per target
  (``OneToOneField`` = unique), so a re-applied result can never create a second artifact;
* at most one active run per experiment: a partial unique index on ``runs(experiment)`` where
  the status is active, in addition to the locked check in ``experiment_start``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Stage(models.TextChoices):
    RUBRIC_GEN = "rubric_gen", "rubric_gen"
    RUBRIC_CRITIC = "rubric_critic", "rubric_critic"
    SCORE_GEN = "score_gen", "score_gen"
    SCORE_CRITIC = "score_critic", "score_critic"


STAGE_ORDER: tuple[str, ...] = tuple(s.value for s in Stage)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    PAUSED = "paused", "paused"
    BLOCKED = "blocked", "blocked"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"
    CANCELED = "canceled", "canceled"


ACTIVE_RUN_STATUSES: tuple[str, ...] = ("queued", "running", "paused", "blocked")
TERMINAL_RUN_STATUSES: tuple[str, ...] = ("completed", "failed", "canceled")


class Experiment(models.Model):
    tag = models.SlugField(max_length=100, unique=True)
    team = models.ForeignKey(
        "policies.Team", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    template = models.ForeignKey(
        "configs_app.ConfigTemplate", on_delete=models.PROTECT, related_name="+"
    )
    pool = models.ForeignKey("evidence.Pool", on_delete=models.PROTECT, related_name="+")
    bundle_plan = models.ForeignKey(
        "evidence.BundlePlan", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.tag


class Run(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.PROTECT, related_name="runs")
    run_config = models.ForeignKey(
        "configs_app.RunConfig", on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    current_stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.RUBRIC_GEN)
    # Stages whose attempt-1 requests have been inserted (idempotent materialization marker).
    materialized_stages = models.JSONField(default=list)
    pause_after = models.CharField(max_length=20, choices=Stage.choices, null=True, blank=True)
    sample_count = models.PositiveIntegerField()
    target_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(status__in=["queued", "running", "paused", "blocked"]),
                name="one_active_run_per_experiment",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status"],
                name="run_active_idx",
                condition=Q(status__in=["queued", "running", "paused", "blocked"]),
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status}/{self.current_stage})"

    @property
    def process(self) -> str:
        return f"run:{self.pk}"


class Sample(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="samples")
    ordinal = models.PositiveIntegerField()
    seed = models.IntegerField()  # int32, as the original stores it
    model = models.CharField(max_length=100)  # the scoring model

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "ordinal"], name="sample_run_ordinal_uniq")
        ]

    def __str__(self) -> str:
        return f"sample {self.pk} (run {self.run_id} #{self.ordinal})"


class ScoreTarget(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="targets")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="targets")
    bundle_index = models.PositiveIntegerField()
    bundle_signature = models.TextField()
    est_tokens = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sample", "bundle_index"], name="target_sample_bundle_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"target {self.pk} (sample {self.sample_id} bundle {self.bundle_index})"


class ScoreTargetItem(models.Model):
    target = models.ForeignKey(ScoreTarget, on_delete=models.CASCADE, related_name="items")
    evidence = models.ForeignKey("evidence.Evidence", on_delete=models.PROTECT, related_name="+")
    window_id = models.BigIntegerField()
    position = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["target", "position"], name="target_item_pos_uniq")
        ]

    def __str__(self) -> str:
        return f"target {self.target_id} item {self.position}"


class Rubric(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="rubrics")
    sample = models.OneToOneField(Sample, on_delete=models.CASCADE, related_name="rubric")
    llm_request_id = models.BigIntegerField()
    model = models.CharField(max_length=100)
    concept = models.TextField()
    scale_size = models.PositiveSmallIntegerField()
    justification = models.TextField()
    stages = models.JSONField()  # [{stage_number, label, criteria[]}]
    label_mapping = models.JSONField()  # {token: stage_number}
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"rubric for sample {self.sample_id}"


class RubricCritic(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="rubric_critics")
    sample = models.OneToOneField(Sample, on_delete=models.CASCADE, related_name="rubric_critic")
    llm_request_id = models.BigIntegerField()
    model = models.CharField(max_length=100)
    justification = models.TextField()
    observability_score = models.FloatField()
    discriminability_score = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"rubric critic for sample {self.sample_id}"


class Score(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="scores")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="scores")
    target = models.OneToOneField(ScoreTarget, on_delete=models.CASCADE, related_name="score")
    llm_request_id = models.BigIntegerField()
    model = models.CharField(max_length=100)
    justification = models.TextField()
    raw_verdict = models.TextField()
    decoded_scores = models.JSONField()  # 1-based stages; [] = abstain
    abstained = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["run"], name="score_run_idx")]

    def __str__(self) -> str:
        return f"score for target {self.target_id}: {self.decoded_scores}"


class ScoreCritic(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="score_critics")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="score_critics")
    target = models.OneToOneField(
        ScoreTarget, on_delete=models.CASCADE, related_name="score_critic"
    )
    llm_request_id = models.BigIntegerField()
    model = models.CharField(max_length=100)
    justification = models.TextField()
    expert_agreement_prob = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["run"], name="score_critic_run_idx")]

    def __str__(self) -> str:
        return f"score critic for target {self.target_id}"
