from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "orchestration"

    def ready(self) -> None:
        """Plug the judging domain into the transport (handlers, notifier, reconciler)."""
        from orchestration.services.advance import runs_notify, runs_reconcile
        from orchestration.services.handlers import SampleHandler, TargetHandler
        from orchestration.transport import registry
        from orchestration.transport.bench_handler import BenchHandler

        registry.register_handler("sample", SampleHandler())
        registry.register_handler("sample_score_target", TargetHandler())
        registry.register_handler("bench", BenchHandler())
        registry.register_process_notifier("run", runs_notify)
        registry.register_reconciler("runs", runs_reconcile)
