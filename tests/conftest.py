"""Session fixtures on the real services: a fresh, migrated database and a clean Redis index."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.support import REDIS_HOST, fresh_database
from tests.timescale.cluster import fresh_timescale_database

# The storage backends the database tests run on: plain PostgreSQL (the shared server on 5432) and
# TimescaleDB (the test-owned cluster of scripts/timescaledb.sh, ts_measure a hypertable).
BACKENDS = ("postgres", "timescaledb")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database made for this test session by the project's own migrations, dropped at the end."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def timescaledb_url() -> Iterator[str]:
    """The same on TimescaleDB; fails (never skips) with the script's line when it cannot be had."""
    with fresh_timescale_database("traksense_tsdb_session_") as url:
        yield url


@contextmanager
def fresh_backend_database(backend: str, prefix: str) -> Iterator[str]:
    """A fresh migrated database on `backend` (one of BACKENDS), dropped afterwards."""
    assert backend in BACKENDS, f"unknown backend {backend!r}; expected one of {BACKENDS}"
    fresh = fresh_timescale_database if backend == "timescaledb" else fresh_database
    with fresh(prefix) as url:
        yield url


_used_redis_dbs: set[int] = set()


def fresh_redis_db() -> int:
    """An empty Redis database index (1-15) that no other test in this session uses."""
    free = [n for n in range(1, 16) if n not in _used_redis_dbs]
    index = random.choice(free)
    _used_redis_dbs.add(index)
    redis.Redis(host=REDIS_HOST, port=6379, db=index).flushdb()
    return index


@pytest.fixture
def redis_db() -> Iterator[int]:
    index = fresh_redis_db()
    yield index
    redis.Redis(host=REDIS_HOST, port=6379, db=index).flushdb()
    _used_redis_dbs.discard(index)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
