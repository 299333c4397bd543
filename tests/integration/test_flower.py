"""Flower, started as an operator starts it (`celery -A ingest_tasks flower`), on a real worker.

The broker is a Redis with a password (a private `redis-server` on a free port), as in production,
so the tests can check that Flower never shows that password.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest_tasks.app import FLOWER_MAX_TASKS, create_app
from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.settings import Settings
from tests.support import (
    REDIS_HOST,
    VENV_BIN,
    Process,
    free_port,
    service_env,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

BROKER_PASSWORD = unique("s3cret-")
AUTH = ("ops", unique("pw-"))


@dataclass
class Flower:
    port: int
    broker_url: str
    process: Process
    worker: Process

    def get(self, path: str, auth: tuple[str, str] | None = AUTH) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, f"{path}: {status} {body[:300]}"
        return json.loads(body)


def start_redis_with_password(log_dir: Path) -> tuple[Process, int]:
    if not shutil.which("redis-server"):
        pytest.fail("these tests need the redis-server binary (scripts/services.sh installs it)")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", REDIS_HOST, "--requirepass", BROKER_PASSWORD,
            "--save", "", "--appendonly", "no", "--dir", str(log_dir)]
    redis = Process("redis", argv, {}, log_dir)
    redis.wait_for_log("Ready to accept connections")
    return redis, port


def start_flower(env: dict[str, str], log_dir: Path, name: str = "flower") -> tuple[Process, int]:
    port = free_port()
    argv = [str(VENV_BIN / "celery"), "-A", "ingest_tasks", "flower", f"--port={port}", "--address=127.0.0.1"]
    flower = Process(name, argv, env, log_dir)
    flower.wait_for_log("Visit me at")
    # Flower listens for events only after it serves HTTP: wait for a worker heartbeat to arrive,
    # or the first task's events could go by unseen.
    view = Flower(port, "", flower, flower)
    wait_until(lambda: any(line.startswith("flower_worker_online{") and line.endswith(" 1.0")
                           for line in view.get("/metrics")[1].splitlines()),
               what=f"{name} to see a worker heartbeat")
    return flower, port


@pytest.fixture(scope="module")
def flower(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    log_dir = tmp_path_factory.mktemp("flower")
    redis, redis_port = start_redis_with_password(log_dir)
    broker_url = f"redis://:{BROKER_PASSWORD}@{REDIS_HOST}:{redis_port}/0"
    env = service_env(database_url, 0, unique("ts"), CELERY_BROKER_URL=broker_url,
                      FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}")
    worker = start_worker(env, log_dir, concurrency=1)
    process, port = start_flower(env, log_dir)
    try:
        yield Flower(port, broker_url, process, worker)
    finally:
        process.stop()
        worker.stop()
        redis.stop()


def send_chunks(broker_url: str, n: int) -> list[str]:
    """n valid one-message chunks, sent the way the listener sends them."""
    app = create_app(Settings(CELERY_BROKER_URL=broker_url))
    topic = f"traksense/{unique('t')}/s/d/ack"
    ids = []
    for _ in range(n):
        chunk_id = unique("chunk-")
        payload = json.dumps({"cmd_id": chunk_id, "ok": True}).encode()
        app.send_task(TASK_NAME, args=(chunk_id, [[topic, payload, 1.0]]), queue=QUEUE)
        ids.append(chunk_id)
    return ids


def succeeded(metrics: str, task: str = TASK_NAME) -> float:
    """flower_events_total of task-succeeded events, over every worker; of one task unless `task=""`."""
    wanted = ("flower_events_total{", 'type="task-succeeded"', f'task="{task}"' if task else "")
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(wanted[0]) and all(w in line for w in wanted[1:]))


def test_flower_shows_our_worker_tasks_and_queue_and_counts_them(flower: Flower) -> None:
    before = succeeded(flower.get("/metrics")[1])
    ids = send_chunks(flower.broker_url, 3)
    for chunk_id in ids:
        flower.worker.wait_for_log(f"chunk {chunk_id}: messages=1")

    def our_tasks() -> list[dict[str, Any]] | None:
        tasks = flower.get_json(f"/api/tasks?taskname={TASK_NAME}&state=SUCCESS")
        found = [t for t in tasks.values() if t["args"] and any(i in t["args"] for i in ids)]
        return found if len(found) == 3 else None

    def counted() -> str | None:
        metrics = flower.get("/metrics")[1]
        return metrics if succeeded(metrics) >= before + 3 else None

    tasks = wait_until(our_tasks, what="our 3 tasks in Flower")
    workers: dict[str, Any] = wait_until(lambda: flower.get_json("/api/workers?refresh=1"),
                                         what="workers in Flower")
    metrics = wait_until(counted, what="flower_events_total to count our tasks")
    queues = flower.get_json("/api/queues/length")

    assert {t["name"] for t in tasks} == {TASK_NAME}
    assert {t["worker"] for t in tasks} == set(workers)
    assert TASK_NAME in next(iter(workers.values()))["registered"]
    assert succeeded(metrics) == before + 3
    assert "flower_worker_online{" in metrics
    assert {"name": QUEUE, "messages": 0} in queues["active_queues"]


def test_basic_auth_guards_the_ui_and_the_api(flower: Flower) -> None:
    for path in ("/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/api/queues/length"):
        assert flower.get(path, auth=None)[0] == 401, path
        assert flower.get(path, auth=(AUTH[0], "wrong"))[0] == 401, path
        assert flower.get(path)[0] == 200, path
    # Flower leaves these two open by design: docker-compose's health check calls the first and
    # Prometheus scrapes the second without credentials (it holds counts, no task arguments).
    assert flower.get("/healthcheck", auth=None) == (200, "OK")
    status, metrics = flower.get("/metrics", auth=None)
    assert status == 200 and "flower_events_total" in metrics


def test_the_broker_password_is_never_shown(flower: Flower) -> None:
    status, page = flower.get("/broker")
    _, workers = flower.get("/api/workers?refresh=1")
    assert status == 200
    assert f"{REDIS_HOST}:" in page and QUEUE in page
    for text in (page, workers, flower.process.log()):
        assert BROKER_PASSWORD not in text


def test_flower_keeps_at_most_max_tasks(flower: Flower, database_url: str, tmp_path: Path) -> None:
    env = service_env(database_url, 0, unique("ts"), CELERY_BROKER_URL=flower.broker_url,
                      FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}", FLOWER_MAX_TASKS="3")
    capped, port = start_flower(env, tmp_path, name="flower-capped")
    try:
        view = Flower(port, flower.broker_url, capped, flower.worker)
        ids = send_chunks(flower.broker_url, 6)
        for chunk_id in ids:
            flower.worker.wait_for_log(f"chunk {chunk_id}: messages=1")
        # Any task name: a task evicted before its last event comes back without one.
        wait_until(lambda: succeeded(view.get("/metrics")[1], task="") == 6, what="6 tasks counted")
        stored = view.get_json("/api/tasks")
    finally:
        capped.stop()
    assert len(stored) == 3


def test_celery_flower_gets_the_project_default_cap() -> None:
    """What Flower's `max_tasks` option is after `celery -A ingest_tasks` loaded the app."""
    probe = (
        "import flower.options\n"
        "from flower.command import apply_env_options\n"
        "from tornado.options import options\n"
        "from celery.app.utils import find_app\n"
        "find_app('ingest_tasks')  # what `celery -A ingest_tasks` does before running `flower`\n"
        "apply_env_options()\n"
        "print(options.max_tasks)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_MAX_TASKS"}
    out = subprocess.run([str(VENV_BIN / "python"), "-c", probe], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == [str(FLOWER_MAX_TASKS)]
