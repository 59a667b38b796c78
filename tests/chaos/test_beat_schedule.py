"""F10 root cause, without processes: what django-celery-beat actually stores for the tick.

The chaos matrix saw a tick storm (two beats: 68 ticks in 6.9 s; 16,881 tick messages queued
in Redis; 407 ticks executed in 30 s with *no* beat running; a 25 s run took 260 s). Cause:

* ``DatabaseScheduler`` stores the interval in ``IntervalSchedule.every``, an *integer*:
  ``JUDGE_TICK_SECONDS=0.5`` (the live test env) becomes ``every=0``, a zero interval, so
  every beat loop sends a tick;
* ``judge_project/celery.py`` passes ``options={"expires": ...}``, but
  ``ModelEntry._unpack_options`` only keeps ``expire_seconds``: the expiry is silently
  dropped, so ticks queued behind a busy worker never expire and run later in a burst.

Both are checked black-box: a fresh interpreter with ``JUDGE_TICK_SECONDS`` set imports the
Celery app and lets django-celery-beat persist and reload the entry, exactly as beat does.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestration.processes import BASE_DIR
from tests.live import live_env

pytestmark = pytest.mark.django_db(transaction=True)

PROBE = """
import json, django
django.setup()
from judge_project.celery import app
from django_celery_beat.schedulers import ModelEntry
name = "judge-gym-tick"
entry = ModelEntry.from_entry(name, app=app, **app.conf.beat_schedule[name])
reloaded = ModelEntry(entry.model.__class__.objects.get(name=name), app=app)
print(json.dumps({
    "every_s": reloaded.schedule.run_every.total_seconds(),
    "expires": reloaded.options.get("expires"),
}))
"""


def _persisted(tick_seconds: str) -> dict[str, float | None]:
    env = live_env("http://127.0.0.1:9", JUDGE_TICK_SECONDS=tick_seconds)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("tick_seconds", ["1", "2"])
def test_beat_persists_the_tick_interval_and_its_expiry(tick_seconds: str) -> None:
    stored = _persisted(tick_seconds)
    assert stored["every_s"] == pytest.approx(float(tick_seconds)), (
        f"JUDGE_TICK_SECONDS={tick_seconds} is stored as every {stored['every_s']} s"
    )
    assert stored["expires"] is not None, "the tick's expiry is dropped: queued ticks never expire"
    assert float(stored["expires"]) <= float(tick_seconds) * 2
