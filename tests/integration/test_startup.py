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


SECRET = "q7Zx/ü:@Kj?#%9w"  # no three characters of it in a row are in any fixed message


@pytest.mark.parametrize(("variable", "value", "problem"), [
    pytest.param("MQTT_URL", f"mqtt://svc:{SECRET}@broker", "MQTT_URL: the port is not a number", id="MQTT_URL"),
    pytest.param("CELERY_BROKER_URL", f"redis://:{SECRET}@redis:6379/0", "CELERY_BROKER_URL: the port is not",
                 id="CELERY_BROKER_URL"),
    pytest.param("DATABASE_URL", f"postgresql://u:{SECRET}@db/x", "DATABASE_URL: the port is not", id="DATABASE_URL"),
    pytest.param("FLOWER_BASIC_AUTH", SECRET.replace(":", ""), "FLOWER_BASIC_AUTH: must be user:password",
                 id="FLOWER_BASIC_AUTH"),
    pytest.param("MQTT_URL_FILE", "", "MQTT_URL: the port is not a number", id="MQTT_URL_FILE"),
])
def test_the_listener_stops_on_a_bad_secret_without_showing_any_of_it(
    variable: str, value: str, problem: str, tmp_path: Path
) -> None:
    if variable.endswith("_FILE"):
        (tmp_path / "secret").write_text(f"mqtt://svc:{SECRET}@broker\n")
        value = str(tmp_path / "secret")
    secrets = ("MQTT_URL", "CELERY_BROKER_URL", "DATABASE_URL", "FLOWER_BASIC_AUTH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(secrets)}
    done = subprocess.run([PYTHON, "-m", "listener"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**env, variable: value, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"invalid setting {problem}")
    pieces = {SECRET[i:i + 3] for i in range(len(SECRET) - 2)}
    assert [p for p in pieces if p in done.stdout + done.stderr] == []
