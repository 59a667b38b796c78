from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "evidence"

    def ready(self) -> None:
        """Plug the evidence pipeline into the transport (handler, notifier, reconciler).

        The transport routes results by custom-key prefix (``evidence:<id>:<stage>``) and
        completions by process prefix (``window:<window_run_id>``); the reconciler is the
        periodic fallback that re-drives window runs a lost message left behind.
        """
        from evidence.services.advance import windows_notify
        from evidence.services.handlers import PREFIX, EvidenceHandler
        from evidence.services.windows import windows_reconcile
        from orchestration.transport import registry

        registry.register_handler(PREFIX, EvidenceHandler())
        registry.register_process_notifier("window", windows_notify)

        def reconcile() -> None:
            windows_reconcile()

        registry.register_reconciler("windows", reconcile)
