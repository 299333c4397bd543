"""Fixtures of the fault suite: owned broker, Redis and database, and the processes under test.

Every fault is injected into an instance the test starts itself (see `services`); the shared
services of the machine are only used for a fresh database on the shared PostgreSQL when the
test does not stop PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from ingest_tasks.ledger import SENT
from tests.conftest import BACKENDS, fresh_backend_database
from tests.faults.load import Load, LoadPlan, stored_counts
from tests.faults.services import OwnedMosquitto, OwnedPostgres, OwnedRedis
from tests.support import Process, service_env, start_listener, start_worker, unique
from tests.timescale.cluster import admin_url

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# The scenarios whose outcome depends on the database run on both backends; the others (broker,
# Redis, listener faults) on plain PostgreSQL only, which keeps the suite's time in bounds.
BOTH_BACKENDS = frozenset({"test_postgres_outage_dlq", "test_postgres_restart", "test_worker_crash"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in BOTH_BACKENDS and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of this scenario: plain PostgreSQL unless parametrized above."""
    name = str(getattr(request, "param", "postgres"))
    if name == "timescaledb":
        admin_url()  # builds and installs TimescaleDB when missing; fails with the script's line
    return name

QUEUE = "ingest"


@dataclass
class Rig:
    """One pipeline under test: its own broker, Redis and database, and the processes it started."""

    mosquitto: OwnedMosquitto
    redis: OwnedRedis
    database_url: str
    log_dir: Path
    prefix: str = field(default_factory=lambda: unique("ts"))
    client_id: str = field(default_factory=lambda: unique("faults-listener-"))
    settings: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = service_env(self.database_url, 0, self.prefix, MQTT_CLIENT_ID=self.client_id,
                          MQTT_SESSION_EXPIRY="600", INGEST_BATCH_MS="250", INGEST_RESEND_AFTER_S="10")
        env["CELERY_BROKER_URL"] = self.redis.url()
        env["MQTT_URL"] = self.mosquitto.url
        env.update(self.settings)
        return env

    def start_listener(self, name: str = "listener") -> Process:
        proc = start_listener(self.env(), self.log_dir, name=name)
        self.processes.append(proc)
        return proc

    def start_worker(self, name: str = "worker", concurrency: int = 2) -> Process:
        proc = start_worker(self.env(), self.log_dir, name=name, concurrency=concurrency)
        self.processes.append(proc)
        return proc

    def supervise(self, worker: Process) -> Process:
        """What a supervisor (compose `restart: unless-stopped`) does: start a worker again if it exited."""
        if worker.popen.poll() is None:
            return worker
        return self.start_worker(name=f"{worker.name}-restarted")

    def load(self, **plan: object) -> Load:
        load = Load(LoadPlan(self.prefix, **plan), self.mosquitto.port)  # type: ignore[arg-type]
        self.loads.append(load)
        return load

    def queue_drained(self) -> bool:
        """Nothing waits in Redis: no chunk queued, held by a worker, or sent and not yet stored."""
        client = self.redis.client()
        return int(client.llen(QUEUE)) == 0 and int(client.hlen("unacked")) == 0 and int(client.zcard(SENT)) == 0

    def report(self) -> str:
        """What a person needs to see when a scenario fails: counts, queue state, each log's tail."""
        try:
            lines = [f"stored (rows, dead letters): {stored_counts(self.database_url)}"]
        except psycopg.Error as exc:
            lines = [f"database: {exc}"]
        try:
            client = self.redis.client()
            lines.append(f"redis: {QUEUE} length {client.llen(QUEUE)}, unacked {client.hlen('unacked')}")
            for key in sorted(client.scan_iter(count=1000)):
                found = client.type(key)
                kind = found.decode() if isinstance(found, bytes) else found
                size = {"list": client.llen, "hash": client.hlen, "set": client.scard,
                        "zset": client.zcard}.get(kind, lambda _k: "-")(key)
                lines.append(f"  redis key {key!r}: {kind} {size}")
        except redis.RedisError as exc:
            lines.append(f"redis: {exc}")
        for load in self.loads:
            lines.append(f"load: {load.published} of {load.plan.messages} published")
        for proc in self.processes:
            state = "running" if proc.popen.poll() is None else f"exited {proc.popen.returncode}"
            lines.append(f"--- {proc.name} ({state}), last lines of {proc.log_path}:")
            lines.extend(proc.log().splitlines()[-40:])
        return "\n".join(lines)

    def close(self) -> None:
        for load in self.loads:
            load.close()
        for proc in self.processes:
            if proc.popen.poll() is None:
                with contextlib.suppress(AssertionError):  # stop() kills what does not stop; the
                    proc.stop(timeout=15)  # test's own result is what matters


@pytest.fixture
def mosquitto(log_dir: Path) -> Iterator[OwnedMosquitto]:
    broker = OwnedMosquitto(log_dir)
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def redis_server(log_dir: Path) -> Iterator[OwnedRedis]:
    server = OwnedRedis(log_dir)
    server.start()
    yield server
    server.close()


@pytest.fixture
def owned_postgres(backend: str) -> Iterator[OwnedPostgres]:
    cluster = OwnedPostgres(timescaledb=backend == "timescaledb")
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def shared_database(backend: str) -> Iterator[str]:
    """A fresh database on the shared PostgreSQL (or the TimescaleDB test cluster), for tests that
    never stop PostgreSQL."""
    with fresh_backend_database(backend, "traksense_faults_") as url:
        yield url


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def report_if_failed(request: pytest.FixtureRequest, rig: Rig) -> None:
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"\n=== state of the rig after {request.node.name} failed ===\n{rig.report()}")


@pytest.fixture
def rig(mosquitto: OwnedMosquitto, redis_server: OwnedRedis, shared_database: str,
        log_dir: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    r = Rig(mosquitto, redis_server, shared_database, log_dir)
    yield r
    report_if_failed(request, r)
    r.close()


@pytest.fixture
def rig_own_pg(mosquitto: OwnedMosquitto, redis_server: OwnedRedis, owned_postgres: OwnedPostgres,
               log_dir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Rig, OwnedPostgres]]:
    r = Rig(mosquitto, redis_server, owned_postgres.migrated_database("traksense"), log_dir)
    yield r, owned_postgres
    report_if_failed(request, r)
    r.close()
    if not owned_postgres.running:
        owned_postgres.start()  # so that close() finds it in a known state

