"""Nothing waits forever: timeouts and keepalives on every connection, and a hung chunk is retried.

The worker tests hold a row lock in another real session, so the worker's INSERT of the same row
blocks as it would behind a concurrent transaction or an operator's DDL.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from ingest_tasks.app import TASK_SOFT_TIME_LIMIT_S, TASK_TIME_LIMIT_S, create_app, redis_socket_options
from ingest_tasks.dlq import queries as dead_letters
from ingest_tasks.envelope import QUEUE, TASK_NAME
from ingest_tasks.postgres import KEEPALIVE_COUNT, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S
from ingest_tasks.settings import Settings
from ingest_tasks.store import LOCK_TIMEOUT_S, STATEMENT_TIMEOUT_S, Store
from migrations.runner import Migration, apply_pending
from tests.conftest import fresh_redis_db
from tests.support import (
    PG_ADMIN,
    REDIS_HOST,
    Process,
    count,
    query,
    service_env,
    start_worker,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

KEEPALIVES = (1, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
SERVER_KEEPALIVES = [(str(KEEPALIVE_IDLE_S),), (str(KEEPALIVE_INTERVAL_S),), (str(KEEPALIVE_COUNT),)]
TS = "2025-10-07T15:30:00Z"
RETRY_BACKOFF_S = 4.0  # the first retry waits 2 to 4 s: time to look at the database in between


def socket_keepalives(sock: socket.socket) -> tuple[int, int, int, int]:
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


def client_keepalives(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, int, int, int]:
    """The keepalive options of the client's socket (a duplicate, so libpq keeps its own)."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        return socket_keepalives(sock)


def server_keepalives(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [conn.execute(f"SHOW tcp_keepalives_{name}").fetchone() or () for name in ("idle", "interval", "count")]


def test_the_worker_connection_has_timeouts_and_keepalives_on_both_ends(database_url: str) -> None:
    store = Store(database_url)
    try:
        conn = store.connect()
        assert conn.execute("SHOW statement_timeout").fetchone() == (f"{STATEMENT_TIMEOUT_S // 60}min",)
        assert conn.execute("SHOW lock_timeout").fetchone() == (f"{LOCK_TIMEOUT_S}s",)
        assert server_keepalives(conn) == SERVER_KEEPALIVES
        assert client_keepalives(conn) == KEEPALIVES
    finally:
        store.close()


def test_a_dlq_tooling_session_has_keepalives_on_both_ends(database_url: str) -> None:
    with dead_letters.session(database_url) as conn:
        assert server_keepalives(conn) == SERVER_KEEPALIVES
        assert client_keepalives(conn) == KEEPALIVES


def test_the_migrations_run_on_a_connection_with_keepalives(tmp_path: Path) -> None:
    probe = tmp_path / "0001_probe.sql"
    probe.write_text("CREATE TABLE probe AS SELECT current_setting('tcp_keepalives_idle') AS idle, "
                     "current_setting('tcp_keepalives_interval') AS interval, "
                     "current_setting('tcp_keepalives_count') AS count")
    name = unique("traksense_probe_")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        apply_pending(url, [Migration(1, "0001_probe", probe)])
        assert query(url, "SELECT idle, interval, count FROM probe") == [
            (str(KEEPALIVE_IDLE_S), str(KEEPALIVE_INTERVAL_S), str(KEEPALIVE_COUNT))]
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def pooled_socket(client: redis.Redis) -> socket.socket:
    """The socket of the client's connection (connected by a command before)."""
    connection = client.connection_pool.get_connection()
    client.connection_pool.release(connection)
    sock = connection._sock
    assert isinstance(sock, socket.socket)
    return sock


def test_the_brokers_and_the_ledgers_redis_connections_have_keepalives_and_timeouts(redis_db: int) -> None:
    url = f"redis://{REDIS_HOST}:6379/{redis_db}"
    app = create_app(Settings(CELERY_BROKER_URL=url))
    with app.connection_for_write() as broker:
        client = broker.default_channel.client
        client.ping()
        assert socket_keepalives(pooled_socket(client)) == KEEPALIVES
        assert pooled_socket(client).gettimeout() == redis_socket_options()["socket_timeout"]
    with redis.Redis.from_url(url, **redis_socket_options()) as ledger_client:  # as tasks.py builds it
        ledger_client.ping()
        assert socket_keepalives(pooled_socket(ledger_client)) == KEEPALIVES


def test_the_time_limits_end_a_chunk_before_redis_hands_it_to_another_worker() -> None:
    # A slow statement fails on its own timeout before the task's soft limit, and both limits
    # end the task well before the default visibility timeout sends its chunk elsewhere.
    default_visibility_s = Settings().visibility_timeout_s
    assert STATEMENT_TIMEOUT_S < TASK_SOFT_TIME_LIMIT_S < TASK_TIME_LIMIT_S <= default_visibility_s / 2


@pytest.fixture(scope="module")
def worker(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    db_index = fresh_redis_db()
    env = service_env(database_url, db_index, unique("ts"), INGEST_RETRY_BACKOFF_S=str(RETRY_BACKOFF_S),
                      INGEST_RETRY_BACKOFF_MAX_S=str(RETRY_BACKOFF_S))
    proc = start_worker(env, tmp_path_factory.mktemp("timeouts"))
    yield proc, env["CELERY_BROKER_URL"]
    proc.stop()
    redis.Redis(host=REDIS_HOST, port=6379, db=db_index).flushdb()


@contextmanager
def holding_row(database_url: str, tenant: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Another session's uncommitted row with the key the chunk writes: its INSERT has to wait."""
    with psycopg.connect(database_url) as holder:
        holder.execute("INSERT INTO ts_measure (tenant_id, device_id, point_id, ts) VALUES (%s, 'd', 'p', %s)",
                       (tenant, TS))
        yield holder
        holder.rollback()


def waiting_on_locks(database_url: str) -> int:
    rows = query(database_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND datname = current_database()")
    return int(rows[0][0])


def send_chunk(broker_url: str, tenant: str, **limits: float) -> str:
    chunk_id = unique("chunk-")
    payload = b'{"schema":"v1","ts":"%s","points":[{"name":"p","t":"float","v":1}]}' % TS.encode()
    app = create_app(Settings(CELERY_BROKER_URL=broker_url))
    app.send_task(TASK_NAME, args=(chunk_id, [[f"traksense/{tenant}/s/d/telem", payload, time.time()]]),
                  queue=QUEUE, **limits)
    return chunk_id


def test_a_chunk_blocked_on_a_lock_is_retried_after_the_lock_timeout(
    database_url: str, worker: tuple[Process, str],
) -> None:
    proc, broker_url = worker
    tenant = unique("locked-")
    with holding_row(database_url, tenant):
        sent = time.monotonic()
        chunk_id = send_chunk(broker_url, tenant)
        proc.wait_for_log(f"chunk {chunk_id}: LockNotAvailable", timeout=LOCK_TIMEOUT_S + 20)
        waited = time.monotonic() - sent
        assert f"chunk {chunk_id}: LockNotAvailable: canceling statement due to lock timeout" in proc.log()
        assert waited >= LOCK_TIMEOUT_S
    wait_until(lambda: count(database_url, "ts_measure", tenant) == 1, timeout=RETRY_BACKOFF_S + 10,
               what="the retried chunk's row")


def test_a_chunk_past_its_soft_time_limit_cancels_its_statement_and_is_retried(
    database_url: str, worker: tuple[Process, str],
) -> None:
    proc, broker_url = worker
    tenant = unique("slow-")
    with holding_row(database_url, tenant):
        chunk_id = send_chunk(broker_url, tenant, soft_time_limit=2, time_limit=30)
        proc.wait_for_log(f"chunk {chunk_id}: the task ran past its soft time limit of 2 s; retry 1",
                          timeout=LOCK_TIMEOUT_S - 2)
        # Its statement was cancelled, not left waiting for the lock until the lock timeout.
        wait_until(lambda: waiting_on_locks(database_url) == 0, timeout=1, what="no statement waiting on the lock")
    wait_until(lambda: count(database_url, "ts_measure", tenant) == 1, timeout=RETRY_BACKOFF_S + 10,
               what="the retried chunk's row")
