"""``manage.py provider_simulator``: serve the offline OpenAI/Anthropic simulator.

Thin by design: parsing flags into a :class:`SimulatorConfig` and calling ``run_forever``
(which traps SIGTERM/SIGINT and shuts down cleanly). Binds 127.0.0.1 unless told otherwise.
Point the engine at it with ``JUDGE_SIMULATOR_URL=<printed url>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.simulator.config import SimulatorConfig, load_json_arg
from orchestration.simulator.faults import FaultConfigError
from orchestration.simulator.server import is_loopback, run_forever


class Command(BaseCommand):
    help = "Run the provider simulator (OpenAI- and Anthropic-compatible APIs with faults)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument(
            "--batch-duration", type=float, default=None, help="seconds a batch runs (0 = instant)"
        )
        parser.add_argument(
            "--faults",
            default=None,
            help='config JSON or @file: {"seed", "batch_duration_s", "faults": [rules]} or a rules list',
        )
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--data-dir", default=None, help="where files/results/logs are kept")
        parser.add_argument("--responder", default=None, help="dotted path of respond(...)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            raw = load_json_arg(options["faults"])
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"--faults: {exc}") from exc
        data = raw if isinstance(raw, dict) else {"faults": raw or []}
        host = str(options["host"])
        if not is_loopback(host):
            self.stderr.write(f"WARNING: binding {host}: the simulator has no real authentication.")
        try:
            config = SimulatorConfig.from_mapping(
                data,
                host=host,
                port=int(options["port"]),
                batch_duration_s=options["batch_duration"],
                seed=options["seed"],
                data_dir=Path(options["data_dir"]) if options["data_dir"] else None,
                responder_path=options["responder"],
            )
        except FaultConfigError as exc:
            raise CommandError(f"--faults: {exc}") from exc
        if config.data_dir is not None:
            config.data_dir.mkdir(parents=True, exist_ok=True)

        def ready(url: str) -> None:
            self.stdout.write(f"provider simulator listening on {url}")
            self.stdout.write(f"  OpenAI:    {url}/openai/v1\n  Anthropic: {url}/anthropic")
            self.stdout.write(f"  export JUDGE_SIMULATOR_URL={url}")
            self.stdout.flush()

        run_forever(config, on_ready=ready)
        self.stdout.write("provider simulator stopped")
