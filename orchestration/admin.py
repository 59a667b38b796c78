"""Operator admin for experiments, runs, artifacts and the transport tables.

Opinions (STYLE.md habit 13, trap 6):
* Nothing here writes a row itself. Creating an experiment calls ``experiment_create``;
  start/pause/resume/cancel call the control services and report each outcome (errors with
  code, message and fix) through ``message_user``. So the admin, the CLI and the API refuse
  the same things with the same words.
* Runs, artifacts, requests, batches and events are *records*: no add, change or delete.
  Control actions need ``orchestration.change_run`` (checked as the custom "operate"
  permission) even though the change form itself is never offered.
* Lists are built for 10^5+ rows: ``list_select_related`` for every foreign key shown,
  ``raw_id_fields`` instead of giant selects, no full result counts on the request table.
* The run page (``run/<id>/progress/``) reads the same selector as ``manage.py experiments
  status`` and the same diagnostics as the API, so the three views cannot disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, Model, OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from configs_app.spec import SpecError, parse_spec
from evidence.models import Pool
from orchestration.diagnostics import run_diagnostics
from orchestration.models import (
    ACTIVE_RUN_STATUSES,
    STAGE_ORDER,
    Experiment,
    LlmBatch,
    LlmRequest,
    PromptTemplate,
    Rubric,
    RubricCritic,
    Run,
    RunEvent,
    Sample,
    SchedulerLock,
    Score,
    ScoreCritic,
    ScoreTarget,
    ScoreTargetItem,
    TransportHold,
)
from orchestration.models.transport import ACTIVE_BATCH_STATUSES
from orchestration.selectors import RunProgress, run_progress
from orchestration.services.control import run_cancel, run_pause, run_resume
from orchestration.services.errors import ServiceError
from orchestration.services.runs import experiment_create, experiments_start

_M = TypeVar("_M", bound=Model)

#: Same rule as ``experiment_create`` (checked early so the form can show it on the field).
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
OPERATE_PERMISSION = "orchestration.change_run"
RECENT_EVENTS = 50


# --- helpers ---------------------------------------------------------------------------------


def _pre(text: object, *, max_chars: int = 20000) -> SafeString:
    """Long text (prompts, outputs, raw errors) as wrapped preformatted HTML."""
    value = "" if text is None else str(text)
    if len(value) > max_chars:
        value = value[:max_chars] + f"\n… ({len(value) - max_chars} more characters)"
    return format_html('<pre style="white-space: pre-wrap; max-width: 100em">{}</pre>', value)


def _json_pre(value: object) -> SafeString:
    return _pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def _link(viewname: str, args: list[Any], label: object) -> SafeString:
    return format_html('<a href="{}">{}</a>', reverse(viewname, args=args), label)


def progress_url(run_id: int) -> str:
    return reverse("admin:orchestration_run_progress", args=[run_id])


def service_error_text(exc: ServiceError) -> str:
    """``[code] message (fix: ...)``: the one format every admin message uses for errors."""
    fix = f" (fix: {exc.fix})" if exc.fix else ""
    return f"[{exc.code}] {exc.message}{fix}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


class ReadOnlyAdmin(admin.ModelAdmin[_M]):
    """A record, not a document: viewable, never added, edited or deleted in the admin."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False


class OperateMixin:
    """The "operate" action permission: may pause/resume/cancel/start runs."""

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(OPERATE_PERMISSION)


def _control(
    admin_: admin.ModelAdmin[Any],
    request: HttpRequest,
    items: Iterable[tuple[str, int | None]],
    verb: str,
    call: Callable[[int], Run],
) -> None:
    """Call ``call(run_id)`` for each (label, run id) and report each outcome on its own."""
    for label, run_id in items:
        if run_id is None:
            admin_.message_user(request, f"{label}: has no run to {verb}", messages.WARNING)
            continue
        try:
            run = call(run_id)
        except ServiceError as exc:
            admin_.message_user(
                request, f"{label}: {verb} failed: {service_error_text(exc)}", messages.ERROR
            )
        else:
            admin_.message_user(request, f"{label}: run {run.pk} is {run.status}", messages.SUCCESS)


# --- experiments -----------------------------------------------------------------------------


class ExperimentAddForm(forms.ModelForm[Experiment]):
    """Creation form; saving calls ``experiment_create`` (ExperimentAdmin.save_model).

    The cheap checks the service makes are repeated here only so they land on the field; the
    service stays the authority and its refusals are reported as messages.
    """

    tag = forms.CharField(
        required=False,
        max_length=100,
        help_text="Leave blank for a generated adjective-noun-xxxxxx tag.",
    )

    class Meta:
        model = Experiment
        fields = ("tag", "template", "pool", "bundle_plan", "team")
        help_texts = {
            "template": "The config template version to run.",
            "pool": "Leave blank to use the spec's evidence.pool_tag.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "pool" in self.fields:  # absent on the read-only view page
            self.fields["pool"].required = False

    def clean_tag(self) -> str:
        tag = str(self.cleaned_data.get("tag") or "").strip()
        if tag and not TAG_RE.match(tag):
            raise ValidationError(
                "Not a slug: use lowercase letters, digits, '-' and '_' (max 100 characters)."
            )
        return tag

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        template = data.get("template")
        if template is None:
            return data
        try:
            spec = parse_spec(template.config_body)
        except SpecError as exc:
            self.add_error("template", f"config {template} is invalid: {exc}")
            return data
        if data.get("pool") is None:
            pool_tag = spec.evidence.pool_tag
            if not pool_tag:
                self.add_error("pool", "The spec has no evidence.pool_tag: choose a pool.")
            elif not Pool.objects.filter(tag=pool_tag).exists():
                self.add_error(
                    "pool", f"The spec's pool {pool_tag!r} does not exist: choose a pool."
                )
        return data


def _experiment_template_ref(experiment: Experiment) -> str:
    return f"{experiment.template.template_id}@{experiment.template.version}"


@admin.register(Experiment)
class ExperimentAdmin(OperateMixin, admin.ModelAdmin[Experiment]):
    form = ExperimentAddForm
    list_display = (
        "tag",
        "template",
        "pool",
        "team",
        "latest_run",
        "latest_status",
        "latest_stage",
        "created_at",
    )
    list_select_related = ("template", "pool", "team")
    list_filter = ("team", "template__template_id")
    search_fields = ("tag", "template__template_id", "pool__tag")
    raw_id_fields = ("template", "pool", "bundle_plan", "team")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    actions = ("start_runs", "pause_latest", "resume_latest", "cancel_latest")
    view_fieldsets = (
        (None, {"fields": ("tag", "template", "pool", "bundle_plan", "team", "created_at")}),
        ("Runs", {"fields": ("latest_run", "latest_status", "latest_stage", "run_count")}),
        ("Config body", {"fields": ("config_body",), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Experiment]:
        # The latest run's columns as subqueries: one query for the whole changelist page.
        latest = Run.objects.filter(experiment=OuterRef("pk")).order_by("-pk")
        return (
            super()
            .get_queryset(request)
            .annotate(
                latest_run_id=Subquery(latest.values("pk")[:1]),
                latest_run_status=Subquery(latest.values("status")[:1]),
                latest_run_stage=Subquery(latest.values("current_stage")[:1]),
            )
        )

    # Experiments are defined once; a different setup is a new experiment.
    def has_change_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return False

    def get_fieldsets(self, request: HttpRequest, obj: Experiment | None = None) -> Any:
        if obj is None:
            return ((None, {"fields": ("tag", "template", "pool", "bundle_plan", "team")}),)
        return self.view_fieldsets

    def get_readonly_fields(
        self, request: HttpRequest, obj: Experiment | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("latest_run", "latest_status", "latest_stage", "run_count", "config_body")

    @admin.display(description="latest run", ordering="latest_run_id")
    def latest_run(self, obj: Experiment) -> SafeString | str:
        run_id = getattr(obj, "latest_run_id", None)
        if run_id is None:
            return "—"
        return format_html('<a href="{}">run {}</a>', progress_url(run_id), run_id)

    @admin.display(description="status", ordering="latest_run_status")
    def latest_status(self, obj: Experiment) -> str:
        return getattr(obj, "latest_run_status", None) or "—"

    @admin.display(description="stage", ordering="latest_run_stage")
    def latest_stage(self, obj: Experiment) -> str:
        return getattr(obj, "latest_run_stage", None) or "—"

    @admin.display(description="runs")
    def run_count(self, obj: Experiment) -> int:
        return obj.runs.count()

    @admin.display(description="config body")
    def config_body(self, obj: Experiment) -> SafeString:
        return _json_pre(obj.template.config_body)

    def save_model(self, request: HttpRequest, obj: Experiment, form: Any, change: bool) -> None:
        """Create through the service and make ``obj`` the row it created (for the log and
        the redirect). A ServiceError propagates to ``add_view``, which reports it."""
        if change:  # unreachable: no change permission; never save a stored experiment here
            raise PermissionDenied
        data = form.cleaned_data
        created = experiment_create(
            template_ref=_experiment_template_ref(obj),
            pool_tag=data["pool"].tag if data.get("pool") else None,
            tag=data.get("tag") or None,
            team_slug=data["team"].slug if data.get("team") else None,
            bundle_plan_tag=data["bundle_plan"].tag if data.get("bundle_plan") else None,
        )
        for model_field in Experiment._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(created, model_field.attname))
        obj._state.adding = False
        obj._state.db = created._state.db

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().add_view(request, form_url, extra_context)
        except ServiceError as exc:
            # The admin's atomic block has rolled back; nothing was written.
            self.message_user(request, f"not created: {service_error_text(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def response_add(
        self, request: HttpRequest, obj: Experiment, post_url_continue: str | None = None
    ) -> HttpResponse:
        self.message_user(
            request,
            f"Created experiment {obj.tag} from {obj.template}; start it with the "
            "'Start a run' action.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:orchestration_experiment_changelist"))

    @admin.action(description="Start a run", permissions=["operate"])
    def start_runs(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        tags = list(queryset.order_by("tag").values_list("tag", flat=True))
        result = experiments_start(tags=tags)
        for item in result.started:
            self.message_user(
                request, f"{item['tag']}: started run {item['run_id']}", messages.SUCCESS
            )
        for item in result.failed:
            err = item["error"]
            fix = f" (fix: {err['fix']})" if err.get("fix") else ""
            self.message_user(
                request,
                f"{item['tag']}: not started: [{err['code']}] {err['message']}{fix}",
                messages.ERROR,
            )

    def _latest(self, queryset: QuerySet[Experiment]) -> list[tuple[str, int | None]]:
        return [(e.tag, getattr(e, "latest_run_id", None)) for e in queryset.order_by("tag")]

    @admin.action(description="Pause the latest run", permissions=["operate"])
    def pause_latest(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        _control(self, request, self._latest(queryset), "pause", lambda rid: run_pause(run_id=rid))

    @admin.action(description="Resume the latest run", permissions=["operate"])
    def resume_latest(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        _control(
            self, request, self._latest(queryset), "resume", lambda rid: run_resume(run_id=rid)
        )

    @admin.action(description="Cancel the latest run", permissions=["operate"])
    def cancel_latest(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        _control(
            self,
            request,
            self._latest(queryset),
            "cancel",
            lambda rid: run_cancel(run_id=rid, reason=f"canceled in admin by {request.user}"),
        )


# --- runs ------------------------------------------------------------------------------------


def _stage_rows(progress: RunProgress) -> list[dict[str, Any]]:
    """Per-stage numbers plus bar segment widths (percent of the stage total)."""
    rows = []
    for s in progress.stages:

        def pct(n: int, total: int = s.total) -> float:
            return round(100.0 * n / total, 2) if total > 0 else 0.0

        rows.append(
            {
                "stage": s.stage,
                "status": s.status,
                "total": s.total,
                "completed": s.completed,
                "failed": s.failed,
                "pending": s.pending,
                "queued": s.queued,
                "in_flight": s.in_flight,
                "retries": s.retries,
                "failed_attempts": s.failed_attempts,
                "materialized": s.materialized,
                "current": s.stage == progress.current_stage,
                "pct_completed": pct(s.completed),
                "pct_failed": pct(s.failed),
                "pct_in_flight": pct(s.in_flight),
                "pct_queued": pct(s.queued),
                "pct_done": round(pct(s.completed + s.failed)),
            }
        )
    return rows


@admin.register(Run)
class RunAdmin(OperateMixin, ReadOnlyAdmin[Run]):
    list_display = (
        "id",
        "experiment",
        "status",
        "current_stage",
        "pause_after",
        "target_count",
        "created_at",
        "started_at",
        "completed_at",
        "progress_link",
    )
    list_display_links = ("id",)
    list_filter = ("status", "current_stage")
    list_select_related = ("experiment",)
    search_fields = ("=id", "experiment__tag")
    raw_id_fields = ("experiment", "run_config")
    ordering = ("-id",)
    date_hierarchy = "created_at"
    actions = ("pause_runs", "resume_runs", "cancel_runs")
    change_form_template = "admin/orchestration/run/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "experiment",
                    "status",
                    "current_stage",
                    "pause_after",
                    "progress_link",
                    "last_error",
                )
            },
        ),
        ("Config", {"fields": ("run_config_link", "spec_signature", "materialized_stages")}),
        ("Size", {"fields": ("sample_count", "target_count")}),
        (
            "Timing",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "stage_started_at",
                    "completed_at",
                    "updated_at",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    readonly_fields = ("progress_link", "run_config_link", "spec_signature")

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: "<path:object_id>/" would otherwise swallow ".../progress/".
        custom = [
            path(
                "<int:run_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="orchestration_run_progress",
            )
        ]
        return custom + super().get_urls()

    @admin.display(description="progress")
    def progress_link(self, obj: Run) -> SafeString:
        return format_html('<a href="{}">progress</a>', progress_url(obj.pk))

    @admin.display(description="run config (diff vs previous)")
    def run_config_link(self, obj: Run) -> SafeString:
        return _link("admin:configs_app_runconfig_change", [obj.run_config_id], obj.run_config_id)

    @admin.display(description="spec signature")
    def spec_signature(self, obj: Run) -> str:
        return obj.run_config.spec_signature

    @admin.action(description="Pause", permissions=["operate"])
    def pause_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        items = [(f"run {pk}", pk) for pk in queryset.order_by("pk").values_list("pk", flat=True)]
        _control(self, request, items, "pause", lambda rid: run_pause(run_id=rid))

    @admin.action(description="Resume", permissions=["operate"])
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        items = [(f"run {pk}", pk) for pk in queryset.order_by("pk").values_list("pk", flat=True)]
        _control(self, request, items, "resume", lambda rid: run_resume(run_id=rid))

    @admin.action(description="Cancel", permissions=["operate"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        items = [(f"run {pk}", pk) for pk in queryset.order_by("pk").values_list("pk", flat=True)]
        reason = f"canceled in admin by {request.user}"
        _control(self, request, items, "cancel", lambda rid: run_cancel(run_id=rid, reason=reason))

    def _progress_post(self, request: HttpRequest, run: Run) -> HttpResponse:
        """The page's pause/resume/cancel buttons: same services, same messages."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        op = request.POST.get("op", "")
        label = f"run {run.pk}"
        if op == "pause":
            _control(self, request, [(label, run.pk)], "pause", lambda rid: run_pause(run_id=rid))
        elif op == "resume":
            choice = request.POST.get("pause_after", "")
            pause_after = choice if choice in STAGE_ORDER else None
            clear = choice == "clear"
            _control(
                self,
                request,
                [(label, run.pk)],
                "resume",
                lambda rid: run_resume(run_id=rid, pause_after=pause_after, clear=clear),
            )
        elif op == "cancel":
            reason = f"canceled in admin by {request.user}"
            _control(
                self,
                request,
                [(label, run.pk)],
                "cancel",
                lambda rid: run_cancel(run_id=rid, reason=reason),
            )
        else:
            self.message_user(request, f"unknown operation {op!r}", messages.ERROR)
        return HttpResponseRedirect(progress_url(run.pk))

    def progress_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """Per-stage progress, batches in flight, ETA, config, recent events, diagnostics."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = Run.objects.select_related("experiment", "run_config").filter(pk=run_id).first()
        if run is None:
            raise Http404(f"run {run_id} does not exist")
        if request.method == "POST":
            return self._progress_post(request, run)
        progress = run_progress(run=run)
        diagnostics = run_diagnostics(run=run)
        # Active batches holding any of this run's requests: the partial batch index keeps
        # the outer scan small, the (batch, status) request index answers the EXISTS.
        batches = (
            LlmBatch.objects.filter(status__in=ACTIVE_BATCH_STATUSES)
            .filter(Exists(LlmRequest.objects.filter(batch_id=OuterRef("pk"), process=run.process)))
            .order_by("pk")[:50]
        )
        events = RunEvent.objects.filter(process=run.process).order_by("-pk")[:RECENT_EVENTS]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {run.pk} of {run.experiment.tag}",
            "opts": self.model._meta,
            "run": run,
            "progress": progress,
            "stages": _stage_rows(progress),
            "eta": format_duration(progress.eta_seconds),
            "batches": list(batches),
            "events": [
                {"event": e, "payload": json.dumps(e.payload, sort_keys=True)[:300]} for e in events
            ],
            "diagnostics": diagnostics,
            "run_config_url": reverse(
                "admin:configs_app_runconfig_change", args=[run.run_config_id]
            ),
            "requests_url": reverse("admin:orchestration_llmrequest_changelist")
            + f"?process={run.process}",
            "events_url": reverse("admin:orchestration_runevent_changelist")
            + f"?process={run.process}",
            "can_operate": self.has_operate_permission(request),
            "is_active": run.status in ACTIVE_RUN_STATUSES,
            "stage_choices": STAGE_ORDER,
        }
        return TemplateResponse(request, "admin/orchestration/run/progress.html", context)


# --- samples, targets, artifacts -------------------------------------------------------------


@admin.register(Sample)
class SampleAdmin(ReadOnlyAdmin[Sample]):
    list_display = ("id", "run", "ordinal", "model", "seed")
    list_select_related = ("run",)
    list_filter = ("model",)
    search_fields = ("=run__id", "run__experiment__tag")
    raw_id_fields = ("run",)
    ordering = ("-run_id", "ordinal")


class ScoreTargetItemInline(admin.TabularInline[ScoreTargetItem, ScoreTarget]):
    model = ScoreTargetItem
    fields = ("position", "evidence", "window_id")
    readonly_fields = fields
    raw_id_fields = ("evidence",)
    extra = 0
    can_delete = False
    ordering = ("position",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ScoreTarget)
class ScoreTargetAdmin(ReadOnlyAdmin[ScoreTarget]):
    list_display = ("id", "run", "sample", "bundle_index", "est_tokens", "short_signature")
    list_select_related = ("run", "sample")
    search_fields = ("=run__id", "=sample__id", "run__experiment__tag", "bundle_signature")
    raw_id_fields = ("run", "sample")
    ordering = ("-run_id", "sample_id", "bundle_index")
    inlines = (ScoreTargetItemInline,)

    @admin.display(description="bundle signature")
    def short_signature(self, obj: ScoreTarget) -> str:
        return obj.bundle_signature[:40]


#: Searches every artifact list supports (run id, sample id, experiment tag, free text).
ARTIFACT_SEARCH = ("=run__id", "=sample__id", "run__experiment__tag", "justification")


class ArtifactAdmin(ReadOnlyAdmin[_M]):
    """Shared shape of the four artifact tables (all keyed by run, sample and request)."""

    ordering = ("-id",)
    date_hierarchy = "created_at"

    @admin.display(description="request")
    def request_link(self, obj: Any) -> SafeString:
        return _link(
            "admin:orchestration_llmrequest_change", [obj.llm_request_id], obj.llm_request_id
        )

    @admin.display(description="justification")
    def justification_pre(self, obj: Any) -> SafeString:
        return _pre(obj.justification)


@admin.register(Rubric)
class RubricAdmin(ArtifactAdmin[Rubric]):
    list_display = ("id", "run", "sample", "model", "concept", "scale_size", "created_at")
    list_select_related = ("run", "sample")
    raw_id_fields = ("run", "sample")
    list_filter = ("model",)
    search_fields = (*ARTIFACT_SEARCH, "concept")
    fields = (
        "run",
        "sample",
        "model",
        "concept",
        "scale_size",
        "request_link",
        "justification_pre",
        "stages_pre",
        "label_mapping_pre",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="stages")
    def stages_pre(self, obj: Rubric) -> SafeString:
        return _json_pre(obj.stages)

    @admin.display(description="label mapping")
    def label_mapping_pre(self, obj: Rubric) -> SafeString:
        return _json_pre(obj.label_mapping)


@admin.register(RubricCritic)
class RubricCriticAdmin(ArtifactAdmin[RubricCritic]):
    list_display = (
        "id",
        "run",
        "sample",
        "model",
        "observability_score",
        "discriminability_score",
        "created_at",
    )
    list_select_related = ("run", "sample")
    raw_id_fields = ("run", "sample")
    list_filter = ("model",)
    search_fields = ARTIFACT_SEARCH
    fields = (
        "run",
        "sample",
        "model",
        "observability_score",
        "discriminability_score",
        "request_link",
        "justification_pre",
        "created_at",
    )
    readonly_fields = fields


@admin.register(Score)
class ScoreAdmin(ArtifactAdmin[Score]):
    list_display = ("id", "run", "sample", "target", "decoded_scores", "abstained", "model")
    list_select_related = ("run", "sample", "target")
    raw_id_fields = ("run", "sample", "target")
    list_filter = ("abstained", "model")
    search_fields = (*ARTIFACT_SEARCH, "=target__id", "raw_verdict")
    fields = (
        "run",
        "sample",
        "target",
        "model",
        "decoded_scores",
        "abstained",
        "raw_verdict",
        "request_link",
        "justification_pre",
        "created_at",
    )
    readonly_fields = fields


@admin.register(ScoreCritic)
class ScoreCriticAdmin(ArtifactAdmin[ScoreCritic]):
    list_display = ("id", "run", "sample", "target", "expert_agreement_prob", "model")
    list_select_related = ("run", "sample", "target")
    raw_id_fields = ("run", "sample", "target")
    list_filter = ("model",)
    search_fields = (*ARTIFACT_SEARCH, "=target__id")
    fields = (
        "run",
        "sample",
        "target",
        "model",
        "expert_agreement_prob",
        "request_link",
        "justification_pre",
        "created_at",
    )
    readonly_fields = fields


# --- transport -------------------------------------------------------------------------------


@admin.register(LlmRequest)
class LlmRequestAdmin(ReadOnlyAdmin[LlmRequest]):
    list_display = (
        "id",
        "custom_key",
        "attempt_index",
        "stage",
        "status",
        "route",
        "model",
        "error_class",
        "batch_id",
        "created_at",
    )
    list_filter = ("status", "stage", "error_class", "route", "provider")
    search_fields = ("=process", "^custom_key", "=batch__id")
    ordering = ("-id",)
    # A count(*) over 10^6 attempts on every page view is the slowest part of a changelist.
    show_full_result_count = False
    list_per_page = 100
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "custom_key",
                    "attempt_index",
                    "max_attempts",
                    "process",
                    "stage",
                    "status",
                    "route",
                    "route_hint",
                    "batchable",
                    "batch_link",
                )
            },
        ),
        ("Model", {"fields": ("provider", "model", "provider_model", "params_pre")}),
        ("Prompt", {"fields": ("prompt_version", "system_prompt_text", "user_prompt_text")}),
        (
            "Output",
            {"fields": ("output_text_pre", "input_tokens", "output_tokens", "cost_usd")},
        ),
        ("Error", {"fields": ("error_class", "error_message_pre")}),
        (
            "Timing and leases",
            {
                "fields": (
                    "created_at",
                    "next_attempt_at",
                    "started_at",
                    "completed_at",
                    "lease_owner",
                    "lease_expires_at",
                    "est_input_tokens",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    readonly_fields = (
        "batch_link",
        "params_pre",
        "system_prompt_text",
        "user_prompt_text",
        "output_text_pre",
        "error_message_pre",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[LlmRequest]:
        # Prompts and outputs can be megabytes per row: the list never needs them.
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").endswith("changelist"):
            return qs.defer("user_prompt", "output_text", "error_message", "params")
        return qs.select_related("system_prompt")

    @admin.display(description="batch")
    def batch_link(self, obj: LlmRequest) -> SafeString | str:
        if obj.batch_id is None:
            return "—"
        return _link("admin:orchestration_llmbatch_change", [obj.batch_id], obj.batch_id)

    @admin.display(description="params")
    def params_pre(self, obj: LlmRequest) -> SafeString:
        return _json_pre(obj.params)

    @admin.display(description="system prompt")
    def system_prompt_text(self, obj: LlmRequest) -> SafeString:
        return _pre(obj.system_prompt.content if obj.system_prompt else "")

    @admin.display(description="user prompt")
    def user_prompt_text(self, obj: LlmRequest) -> SafeString:
        return _pre(obj.user_prompt)

    @admin.display(description="output")
    def output_text_pre(self, obj: LlmRequest) -> SafeString:
        return _pre(obj.output_text)

    @admin.display(description="error")
    def error_message_pre(self, obj: LlmRequest) -> SafeString:
        return _pre(obj.error_message)


@admin.register(LlmBatch)
class LlmBatchAdmin(ReadOnlyAdmin[LlmBatch]):
    list_display = (
        "id",
        "provider",
        "model",
        "status",
        "provider_status",
        "request_count",
        "succeeded_count",
        "failed_count",
        "missing_count",
        "next_poll_at",
        "created_at",
    )
    list_filter = ("status", "provider", "model")
    search_fields = ("=id", "provider_batch_id", "submission_key", "batch_key")
    ordering = ("-id",)
    date_hierarchy = "created_at"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "provider",
                    "model",
                    "provider_model",
                    "status",
                    "provider_status",
                    "requests_link",
                    "last_error",
                )
            },
        ),
        (
            "Counts",
            {
                "fields": (
                    "request_count",
                    "succeeded_count",
                    "failed_count",
                    "missing_count",
                    "input_bytes",
                    "est_input_tokens",
                )
            },
        ),
        (
            "Provider ids and keys",
            {
                "fields": (
                    "provider_batch_id",
                    "submission_key",
                    "batch_key",
                    "attempt_index",
                    "input_file_id",
                    "output_file_id",
                    "error_file_id",
                    "results_url",
                ),
                "classes": ("collapse",),
            },
        ),
        (
            "Polling and timing",
            {
                "fields": (
                    "next_poll_at",
                    "poll_count",
                    "finalize_attempts",
                    "lease_owner",
                    "lease_expires_at",
                    "submit_started_at",
                    "submitted_at",
                    "completed_at",
                    "created_at",
                    "updated_at",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    readonly_fields = ("requests_link",)

    @admin.display(description="requests")
    def requests_link(self, obj: LlmBatch) -> SafeString:
        url = reverse("admin:orchestration_llmrequest_changelist") + f"?batch__id__exact={obj.pk}"
        return format_html('<a href="{}">{} requests</a>', url, obj.request_count)


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyAdmin[RunEvent]):
    list_display = (
        "id",
        "created_at",
        "process",
        "stage",
        "event_type",
        "custom_key",
        "batch_id",
        "task_id",
    )
    list_filter = ("event_type", "stage")
    search_fields = ("=process", "^custom_key", "=task_id", "=batch_id")
    ordering = ("-id",)
    show_full_result_count = False
    fields = (
        "created_at",
        "process",
        "stage",
        "event_type",
        "custom_key",
        "batch_id",
        "task_id",
        "payload_pre",
    )
    readonly_fields = ("payload_pre",)

    @admin.display(description="payload")
    def payload_pre(self, obj: RunEvent) -> SafeString:
        return _json_pre(obj.payload)


@admin.register(TransportHold)
class TransportHoldAdmin(ReadOnlyAdmin[TransportHold]):
    """Holds are placed and lifted by pause/resume/cancel only."""

    list_display = ("process", "reason", "created_at")
    list_filter = ("reason",)
    search_fields = ("=process",)


@admin.register(PromptTemplate)
class PromptTemplateAdmin(ReadOnlyAdmin[PromptTemplate]):
    list_display = ("id", "short_hash", "created_at")
    search_fields = ("=content_hash",)
    fields = ("content_hash", "created_at", "content_pre")
    readonly_fields = ("content_pre",)

    @admin.display(description="hash")
    def short_hash(self, obj: PromptTemplate) -> str:
        return obj.content_hash[:12]

    @admin.display(description="content")
    def content_pre(self, obj: PromptTemplate) -> SafeString:
        return _pre(obj.content)


@admin.register(SchedulerLock)
class SchedulerLockAdmin(ReadOnlyAdmin[SchedulerLock]):
    """Is the tick alive? ``heartbeat_at`` answers without reading Celery state."""

    list_display = ("name", "owner", "expires_at", "heartbeat_at", "runs")
