"""Beat's schedule: the telemetry purge runs daily, on the workers' queue, at another minute than
the DLQ purge (so the two never add their load at the same moment)."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.schedules import crontab

from ingest_tasks.app import PURGE_TASK, RETENTION_TASK, create_app
from ingest_tasks.envelope import QUEUE
from ingest_tasks.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)


def test_the_telemetry_purge_runs_daily_at_its_own_minute_on_the_workers_queue() -> None:
    conf = create_app(Settings()).conf
    entries = {e["task"]: e["schedule"] for e in conf.beat_schedule.values()}
    assert entries[RETENTION_TASK] == crontab(hour=3, minute=47)
    assert entries[RETENTION_TASK] != entries[PURGE_TASK]
    assert conf.task_routes[RETENTION_TASK] == {"queue": QUEUE}
