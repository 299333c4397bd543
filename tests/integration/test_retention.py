"""Telemetry retention on both backends, with the shipped roles: the database is made as compose
makes it (init-roles.sh, then the migrations as the owner's login, no superuser), and the purge
runs as the workers' login, a member of ingest_writer only.

On TimescaleDB whole chunks of ts_reading and ts_point (the readings and points under the
ts_measure view) are dropped; on plain PostgreSQL their old rows are deleted a bounded batch a
transaction; device_event goes by ts on both; cmd_ack stays; series and devices stay (ts_series,
ts_device). Points written through ts_measure, as here, are a reading of the first point of a
device and instant and a row of ts_point for each other point: a row a point, as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from celery import Celery
from psycopg import errors, sql

from ingest_tasks.app import RETENTION_TASK
from ingest_tasks.envelope import QUEUE
from ingest_tasks.errors import StorageUnavailable
from ingest_tasks.retention import Purged, purge_telemetry
from migrations.runner import apply_pending
from tests.integration.test_roles import OWNER, WORKER, Db, run_init_script
from tests.support import PG_ADMIN, REDIS_HOST, query, service_env, start_worker, unique
from tests.timescale.cluster import admin_url as timescale_admin_url

pytestmark = pytest.mark.integration

DAYS = 7
OLD_DAYS = range(30, 40)  # ten whole days, each a chunk of its own on TimescaleDB
POINTS = ("temp", "flow", "rpm")
# The day (a chunk on TimescaleDB) that holds the cutoff: its rows are older than the retention,
# but the chunk is not wholly so. Plain PostgreSQL deletes them; TimescaleDB keeps the chunk.
BOUNDARY = f"date_trunc('day', now() - interval '{DAYS} days')"


@contextmanager
def production_database(server: str, migrated_by_superuser: bool = False) -> Iterator[Db]:
    """As compose makes it at its first start; or migrated by the superuser (`make run`) and then
    handed to the owner by the init script, as an existing database is."""
    name = unique("traksense_retention_")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db = Db(server, name)
    try:
        if migrated_by_superuser:
            apply_pending(db.admin)
        run_init_script(server, name)
        apply_pending(db.login(OWNER))
        yield db
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["postgresql", "timescaledb"])
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    with production_database(PG_ADMIN if request.param == "postgresql" else timescale_admin_url()) as database:
        yield database


@pytest.fixture(params=["postgresql", "timescaledb"])
def handed_over(request: pytest.FixtureRequest) -> Iterator[Db]:
    server = PG_ADMIN if request.param == "postgresql" else timescale_admin_url()
    with production_database(server, migrated_by_superuser=True) as database:
        yield database


@pytest.fixture
def tsdb() -> Iterator[Db]:
    with production_database(timescale_admin_url()) as database:
        yield database


def on_timescaledb(db: Db) -> bool:
    return db.server != PG_ADMIN


def execute(db: Db, statement: str, params: tuple[object, ...] = ()) -> None:
    """As the superuser, who is not subject to row-level security: seeding and counting."""
    with psycopg.connect(db.admin, autocommit=True) as conn:
        conn.execute("SET timezone = 'UTC'")  # chunks are UTC days; BOUNDARY must be one too
        conn.execute(statement.encode(), params)


def measures(db: Db, tenant: str, when: str, n: int = 1) -> None:
    """`n` rows a point at instant `when` (an SQL expression), a minute apart going back."""
    execute(db, "INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num) "
            f"SELECT %s, 'd1', p, ({when}) - g * interval '1 minute', g "
            "FROM unnest(%s::text[]) p, generate_series(0, %s - 1) g", (tenant, list(POINTS), n))


def events(db: Db, tenant: str, when: str, n: int = 1) -> None:
    execute(db, "INSERT INTO device_event (tenant_id, device_id, ts, type) "
            f"SELECT %s, 'd1', ({when}) - g * interval '1 minute', 'boot' FROM generate_series(0, %s - 1) g",
            (tenant, n))


def ack(db: Db, tenant: str) -> None:
    execute(db, "INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok, ts_exec, received_at) "
            "VALUES (%s, 'd1', 'c1', true, now() - interval '40 days', now() - interval '40 days')", (tenant,))


def count(db: Db, table: str, tenant: str | None = None) -> int:
    where = "true" if tenant is None else "tenant_id = %s"
    rows = query(db.admin, f"SELECT count(*) FROM {table} WHERE {where}", () if tenant is None else (tenant,))
    return int(rows[0][0])


def chunks(db: Db, older_than_days: int | None = None) -> int:
    """Chunks of both hypertables: each instant below makes one of each."""
    older = "" if older_than_days is None else f", older_than => now() - interval '{older_than_days} days'"
    return int(query(db.admin, f"SELECT (SELECT count(*) FROM show_chunks('ts_reading'{older})) "
                     f"+ (SELECT count(*) FROM show_chunks('ts_point'{older}))")[0][0])


def seed_history(db: Db, tenant: str) -> None:
    """Per tenant: 30 old measurements, 3 at the boundary, 9 recent; 10 old events, 1 recent; an old ack."""
    for day in OLD_DAYS:
        measures(db, tenant, f"now() - interval '{day} days'")
        events(db, tenant, f"now() - interval '{day} days'")
    measures(db, tenant, BOUNDARY)
    for when in ("now() - interval '1 hour'", "now() - interval '3 days'", f"now() - interval '{DAYS - 1} days'"):
        measures(db, tenant, when)
    events(db, tenant, "now() - interval '1 day'")
    ack(db, tenant)


def test_rows_older_than_the_retention_go_and_newer_stay(db: Db) -> None:
    rows_older_than_the_retention_go_and_newer_stay(db)


def test_the_same_on_a_database_migrated_by_the_superuser_and_handed_over(handed_over: Db) -> None:
    rows_older_than_the_retention_go_and_newer_stay(handed_over)


def rows_older_than_the_retention_go_and_newer_stay(db: Db) -> None:
    tenants = (unique("a-"), unique("b-"))
    for tenant in tenants:
        seed_history(db, tenant)

    purged = purge_telemetry(db.login(WORKER), DAYS)

    boundary_kept = 3 if on_timescaledb(db) else 0  # the cutoff's chunk is not dropped
    for tenant in tenants:
        assert count(db, "ts_measure", tenant) == 9 + boundary_kept
        assert count(db, "device_event", tenant) == 1
        assert count(db, "cmd_ack", tenant) == 1  # acknowledgements are kept
    assert count(db, "ts_measure") == 2 * (9 + boundary_kept)
    measures_deleted = 0 if on_timescaledb(db) else 2 * (30 + 3)
    assert (purged.rows, purged.chunks) == (measures_deleted + 2 * 10, 2 * len(OLD_DAYS) if on_timescaledb(db) else 0)


def test_on_timescaledb_whole_chunks_are_dropped(tsdb: Db) -> None:
    tenant = unique("a-")
    seed_history(tsdb, tenant)
    before, old = chunks(tsdb), chunks(tsdb, DAYS)
    assert (before, old) == (2 * (len(OLD_DAYS) + 4), 2 * len(OLD_DAYS))  # the old days; boundary, -6 d, -3 d, now

    purged = purge_telemetry(tsdb.login(WORKER), DAYS)

    assert purged == Purged(chunks=2 * len(OLD_DAYS), rows=10, batches=1)  # the rows: device events
    assert (chunks(tsdb), chunks(tsdb, DAYS)) == (before - old, 0)
    assert purge_telemetry(tsdb.login(WORKER), DAYS) == Purged(0, 0, 1)  # nothing left to do


def test_a_chunk_being_read_is_left_for_the_next_run_after_the_lock_timeout(tsdb: Db) -> None:
    measures(tsdb, unique("a-"), "now() - interval '20 days'")
    with psycopg.connect(tsdb.admin) as reader:  # a transaction that has read the old chunk
        reader.execute("SELECT count(*) FROM ts_measure")
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="LockNotAvailable"):  # not QueryCanceled at 30 s
            purge_telemetry(tsdb.login(WORKER) + "?options=-c%20statement_timeout%3D30s", DAYS)
        assert 9 < time.monotonic() - started < 30  # the function's lock_timeout, 10 s
        assert chunks(tsdb) == 2
    assert purge_telemetry(tsdb.login(WORKER), DAYS).chunks == 2


def test_a_backlog_goes_a_bounded_batch_a_transaction(db: Db) -> None:
    tenant = unique("a-")
    measures(db, tenant, "now() - interval '20 days'", n=200)  # 600 rows, within one day
    events(db, tenant, "now() - interval '20 days'", n=400)
    with psycopg.connect(db.login(WORKER), autocommit=True) as conn:
        first = conn.execute("SELECT chunks_dropped, rows_deleted FROM ingest_purge_telemetry(%s, 100)",
                             (DAYS,)).fetchone()
    left = count(db, "ts_measure") + count(db, "device_event")
    if on_timescaledb(db):  # the measurements' chunks at once, then 100 events
        assert (first, left) == ((2, 100), 300)
    else:  # 100 measurements (points stored apart first), nothing else
        assert (first, left) == ((0, 100), 900)

    purged = purge_telemetry(db.login(WORKER), DAYS, batch=100)

    assert count(db, "ts_measure") + count(db, "device_event") == 0
    assert purged == Purged(0, 300, 4) if on_timescaledb(db) else Purged(0, 900, 10)


# --- the workers' role ------------------------------------------------------------------------


def worker(db: Db, tenant: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(db.login(WORKER), autocommit=True)
    if tenant is not None:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
    return conn


@pytest.mark.parametrize("statement", [
    "DELETE FROM ts_point",
    "DELETE FROM ts_reading",
    "DELETE FROM ts_series",
    "DELETE FROM ts_device",
    "DELETE FROM device_event",
    "TRUNCATE ts_point",
    "TRUNCATE ts_reading",
    "TRUNCATE ts_series",
    "TRUNCATE device_event",
    "DELETE FROM ts_point WHERE ctid = ANY(ARRAY(SELECT ctid FROM ts_point LIMIT 1))",
])
def test_the_worker_deletes_nothing_itself(db: Db, statement: str) -> None:
    tenant = unique("a-")
    measures(db, tenant, "now() - interval '20 days'")
    events(db, tenant, "now() - interval '20 days'")
    with worker(db, tenant) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement.encode())
    assert (count(db, "ts_measure"), count(db, "device_event")) == (3, 1)


def test_the_worker_drops_no_chunk_itself(tsdb: Db) -> None:
    measures(tsdb, unique("a-"), "now() - interval '20 days'")
    with worker(tsdb) as conn, pytest.raises(errors.InsufficientPrivilege, match="must be owner"):
        conn.execute("SELECT drop_chunks('ts_reading', older_than => now())")
    assert chunks(tsdb) == 2


@pytest.mark.parametrize(("days", "batch"), [(0, 100), (-1, 100), (None, 100), (7, 0), (7, 50_001)])
def test_the_function_refuses_what_would_remove_everything_or_too_much_at_once(
    db: Db, days: int | None, batch: int,
) -> None:
    measures(db, unique("a-"), "now() - interval '1 hour'")
    with worker(db) as conn, pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT * FROM ingest_purge_telemetry(%s, %s)", (days, batch))
    assert count(db, "ts_measure") == 3


def test_only_the_writer_may_run_the_function(db: Db) -> None:
    grantees = query(db.admin, "SELECT grantee::regrole::text FROM pg_proc, aclexplode(proacl) "
                     "WHERE proname = 'ingest_purge_telemetry' AND privilege_type = 'EXECUTE'")
    assert sorted(r[0] for r in grantees) == sorted(["ingest_writer", OWNER])
    with psycopg.connect(db.admin, autocommit=True) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SET ROLE tenant_reader")
        conn.execute("SELECT * FROM ingest_purge_telemetry(7, 100)")


def test_the_owners_policies_show_the_worker_no_other_tenant(db: Db) -> None:
    mine, theirs = unique("a-"), unique("b-")
    for tenant in (mine, theirs):
        measures(db, tenant, "now() - interval '1 hour'")
        events(db, tenant, "now() - interval '1 hour'")
    with worker(db, mine) as conn:
        seen = conn.execute("SELECT tenant_id FROM ts_measure UNION SELECT tenant_id FROM device_event")
        assert seen.fetchall() == [(mine,)]


def test_the_owners_policies_leave_a_tenants_query_as_it_was(db: Db) -> None:
    """A policy for everyone would be OR-ed into each tenant's query, and `tenant_id = ... OR
    current_user = ...` keeps the planner off the key index: a sequential scan per dashboard query."""
    measures(db, "a", "now()")  # on TimescaleDB, a chunk to plan a scan of
    with psycopg.connect(db.admin, autocommit=True) as conn:
        conn.execute("SET ROLE tenant_reader")
        conn.execute("SELECT set_config('app.tenant_id', 'a', false)")
        plans = {table: "\n".join(str(r[0]) for r in conn.execute(f"EXPLAIN SELECT * FROM {table}".encode()))
                 for table in ("ts_measure", "device_event", "ingest_errors")}  # ingest_errors: 0010
    for plan in plans.values():
        assert "tenant_id = NULLIF" in plan, plan
        assert "CURRENT_USER" not in plan, plan


# --- the beat task, run by a real worker --------------------------------------------------------


def run_task(redis_db: int) -> None:
    Celery("test", broker=f"redis://{REDIS_HOST}:6379/{redis_db}").send_task(RETENTION_TASK, queue=QUEUE)


def test_the_beat_task_removes_old_telemetry_in_a_real_worker(db: Db, redis_db: int, tmp_path: Path) -> None:
    tenant = unique("a-")
    seed_history(db, tenant)
    env = service_env(db.login(WORKER), redis_db, unique("t"), TELEMETRY_RETENTION_DAYS=str(DAYS))
    proc = start_worker(env, tmp_path, concurrency=1)
    try:
        run_task(redis_db)
        proc.wait_for_log("telemetry retention: dropped")
    finally:
        proc.stop()
    assert count(db, "ts_measure", tenant) == (12 if on_timescaledb(db) else 9)
    assert count(db, "device_event", tenant) == 1


def test_the_beat_task_removes_nothing_by_default(db: Db, redis_db: int, tmp_path: Path) -> None:
    tenant = unique("a-")
    seed_history(db, tenant)
    proc = start_worker(service_env(db.login(WORKER), redis_db, unique("t")), tmp_path, concurrency=1)
    try:
        run_task(redis_db)
        proc.wait_for_log("telemetry retention: off")
    finally:
        proc.stop()
    assert (count(db, "ts_measure", tenant), count(db, "device_event", tenant)) == (42, 11)
