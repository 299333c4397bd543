"""Every process stops at start with one line naming a bad setting; JSON logs are JSON."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support import ROOT, VENV_BIN, free_port, service_env, start_listener, unique

pytestmark = pytest.mark.integration

PYTHON = str(VENV_BIN / "python")
CELERY = str(VENV_BIN / "celery")


@pytest.mark.parametrize(("argv", "variable", "value"), [
    pytest.param([PYTHON, "-m", "listener"], "MQTT_QOS", "7", id="listener"),
    pytest.param([CELERY, "-A", "ingest_tasks", "worker"], "INGEST_BATCH_SIZE", "abc", id="worker"),
    pytest.param([CELERY, "-A", "ingest_tasks", "beat"], "LOG_FORMAT", "xml", id="beat"),
    pytest.param([CELERY, "-A", "ingest_tasks", "flower"], "FLOWER_BASIC_AUTH", "nocolon", id="flower"),
    pytest.param([PYTHON, "-m", "migrations"], "DATABASE_URL", "mysql://db/x", id="migrations"),
    pytest.param([PYTHON, "-m", "ingest_tasks.dlq", "list"], "MQTT_URL", "http://broker", id="dlq"),
])
def test_a_bad_setting_stops_the_process_with_one_line_naming_it(
    argv: list[str], variable: str, value: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MQTT_QOS", "LOG_FORMAT")}
    done = subprocess.run(argv, cwd=tmp_path, env={**env, variable: value, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"invalid setting {variable}: ")


def test_log_format_json_gives_one_json_object_per_line(database_url: str, redis_db: int, log_dir: Path) -> None:
    env = service_env(database_url, redis_db, unique("ts"), LOG_FORMAT="json", METRICS_PORT=str(free_port()))
    listener = start_listener(env, log_dir)
    listener.stop()
    lines = [line for line in listener.log().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any("mqtt subscribed" in r["message"] for r in records)
