"""A running pipeline (listener + worker) shared by the end-to-end tests of one module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import BACKENDS, fresh_redis_db
from tests.support import REDIS_HOST, Process, service_env, start_listener, start_worker, unique

pytestmark = pytest.mark.integration

# The modules whose database tests run on both backends (each test that uses `database_url`,
# `pipeline` or `backend` there runs once per backend; the others once). test_redelivery runs once:
# it is about chunks lost between Redis and a worker, and what a redelivered chunk does to the
# database is test_store's (on both), so a second backend cost 27 s of make test and proved nothing.
BOTH_BACKENDS = frozenset({
    "test_dlq", "test_end_to_end", "test_hostile_neighbours", "test_many_tenants", "test_metrics", "test_store",
})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in BOTH_BACKENDS and "backend" in metafunc.fixturenames:
        # Module scope: each backend's database and pipeline are made once per module.
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of this module's tests: plain PostgreSQL unless parametrized above."""
    return str(getattr(request, "param", "postgres"))


@pytest.fixture(scope="module")
def database_url(backend: str, database_url: str, request: pytest.FixtureRequest) -> str:
    """The session's migrated database on this module's backend."""
    if backend == "timescaledb":
        return str(request.getfixturevalue("timescaledb_url"))
    return database_url


@dataclass
class Pipeline:
    database_url: str
    redis_url: str
    prefix: str
    env: dict[str, str]
    listener: Process
    worker: Process

    def topic(self, tenant: str, device: str, kind: str = "telem", site: str = "s1") -> str:
        return f"{self.prefix}/{tenant}/{site}/{device}/{kind}"

    def odd_topic(self, *levels: str) -> str:
        """A topic under the custom subscription, which does not check the shape."""
        return "/".join((f"{self.prefix}odd", *levels))


@pytest.fixture(scope="module")
def pipeline(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    log_dir: Path = tmp_path_factory.mktemp("pipeline")
    db_index = fresh_redis_db()
    prefix = unique("ts")
    env = service_env(database_url, db_index, prefix, INGEST_MAX_PAYLOAD_BYTES="4096")
    # A custom subscription that lets through topics of the wrong shape, as an operator's might.
    env["MQTT_TOPICS"] += f",{prefix}odd/#"
    worker = start_worker(env, log_dir)
    listener = start_listener(env, log_dir)
    yield Pipeline(database_url, env["CELERY_BROKER_URL"], prefix, env, listener, worker)
    listener.stop()
    worker.stop()
    redis.Redis(host=REDIS_HOST, port=6379, db=db_index).flushdb()
