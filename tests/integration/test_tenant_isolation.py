"""Row-level security as the migrations set it up: readers and the writer see only their tenant,
through every relation they can reach, on plain PostgreSQL and on TimescaleDB (ts_measure a
hypertable, its rows in chunks)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support import unique
from tests.timescale.cluster import fresh_timescale_database
from tests.timescale.isolation import cross_tenant_paths, store_measures, store_other_rows

pytestmark = pytest.mark.integration

TABLES = ("ts_measure", "cmd_ack", "device_event", "ingest_errors")


@pytest.fixture(scope="module", params=["postgresql", "timescaledb"])
def database_url(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """Every test here runs on the session's plain PostgreSQL database and on a TimescaleDB one."""
    if request.param == "postgresql":
        yield database_url
    else:
        with fresh_timescale_database("traksense_isolation_") as url:
            yield url


@pytest.fixture
def tenants(database_url: str) -> Iterator[tuple[str, str]]:
    """Two tenants with one row in every table, and one dead letter that has no tenant."""
    a, b = unique("ta"), unique("tb")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for tenant in (a, b):
            conn.execute("INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num) "
                         "VALUES (%s, 'd', 'p', now(), 1)", (tenant,))
            conn.execute("INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok) VALUES (%s, 'd', 'c', true)",
                         (tenant,))
            conn.execute("INSERT INTO device_event (tenant_id, device_id, ts, type) VALUES (%s, 'd', now(), 'x')",
                         (tenant,))
            conn.execute("INSERT INTO ingest_errors (tenant_id, topic, payload, reason) "
                         "VALUES (%s, 't', '\\x00', 'invalid_json')", (tenant,))
        conn.execute("INSERT INTO ingest_errors (tenant_id, topic, payload, reason) "
                     "VALUES (NULL, 'bad', '\\x00', 'invalid_topic')")
    yield a, b


def visible(database_url: str, role: str, tenant: str | None, table: str) -> set[str | None]:
    with psycopg.connect(database_url) as conn:
        conn.execute(f"SET ROLE {role}")
        if tenant is not None:
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        return {row[0] for row in conn.execute(f"SELECT DISTINCT tenant_id FROM {table}")}


@pytest.mark.parametrize("table", TABLES)
def test_a_reader_sees_only_its_tenant(database_url: str, tenants: tuple[str, str], table: str) -> None:
    a, _ = tenants
    assert visible(database_url, "tenant_reader", a, table) == {a}


@pytest.mark.parametrize("table", TABLES)
def test_a_reader_with_no_tenant_set_sees_nothing(database_url: str, tenants: tuple[str, str], table: str) -> None:
    assert visible(database_url, "tenant_reader", None, table) == set()
    assert visible(database_url, "tenant_reader", "", table) == set()


@pytest.mark.parametrize("tricky", ["' OR '1'='1", "%", "_", "*", "ta%' --"])
def test_a_tenant_id_with_sql_or_pattern_tricks_sees_nothing(
    database_url: str, tenants: tuple[str, str], tricky: str
) -> None:
    for table in TABLES:
        assert visible(database_url, "tenant_reader", tricky, table) == set()


@pytest.mark.parametrize(("table", "insert"), [
    ("ts_measure", "INSERT INTO ts_measure (tenant_id, device_id, point_id, ts) VALUES (%s, 'd', 'q', now())"),
    ("cmd_ack", "INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok) VALUES (%s, 'd', 'c2', true)"),
    ("device_event", "INSERT INTO device_event (tenant_id, device_id, ts, type) VALUES (%s, 'd', now(), 'y')"),
    ("ingest_errors", "INSERT INTO ingest_errors (tenant_id, topic, payload, reason) "
                      "VALUES (%s, 't', '\\x00', 'invalid_json')"),
])
def test_the_writer_cannot_write_a_row_under_another_tenants_setting(
    database_url: str, tenants: tuple[str, str], table: str, insert: str
) -> None:
    a, b = tenants
    with psycopg.connect(database_url) as conn:
        conn.execute("SET ROLE ingest_writer")
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (a,))
        conn.execute(insert.encode(), (a,))  # its own tenant: allowed
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(insert.encode(), (b,))


def test_the_writer_cannot_change_another_tenants_ack(database_url: str, tenants: tuple[str, str]) -> None:
    a, b = tenants
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE ingest_writer")
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (a,))
        assert conn.execute("UPDATE cmd_ack SET ok = false WHERE tenant_id = %s", (b,)).rowcount == 0
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT ok FROM cmd_ack WHERE tenant_id = %s", (b,)).fetchall() == [(True,)]


def test_the_writer_adds_untenanted_dead_letters_only_with_no_tenant_set(
    database_url: str, tenants: tuple[str, str]
) -> None:
    a, _ = tenants
    insert = ("INSERT INTO ingest_errors (tenant_id, topic, payload, reason) "
              "VALUES (NULL, 'x', '\\x00', 'invalid_topic')")
    with psycopg.connect(database_url) as conn:
        conn.execute("SET ROLE ingest_writer")
        conn.execute(insert)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (a,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(insert)


def test_the_writer_is_not_a_superuser_and_cannot_bypass_rls(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles "
                           "WHERE rolname = 'ingest_writer'").fetchone()
    assert row == (False, False, False)


def test_no_tenant_role_reads_or_writes_another_tenants_rows_through_any_relation(database_url: str) -> None:
    """Every relation either role can reach, in every schema (on TimescaleDB, ts_measure's chunks
    too: its rows lie three weeks apart, a chunk each), tried for tenant B's rows under A's setting."""
    a, b = unique("ta"), unique("tb")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for weeks in range(3):
            for tenant in (a, b):
                store_measures(conn, tenant, datetime(2025, 3, 3, tzinfo=UTC) + timedelta(weeks=weeks))
        for tenant in (a, b):
            store_other_rows(conn, tenant, datetime(2025, 3, 3, tzinfo=UTC))
        conn.execute("ANALYZE")  # pg_stats shows what ANALYZE gathered, as autovacuum would
    paths, tried = cross_tenant_paths(database_url, (a, b))
    assert paths == []
    assert "tenant_reader public.ts_measure" in tried


def test_a_writer_cannot_block_or_show_another_tenants_point_through_its_series(
    database_url: str, tenants: tuple[str, str]
) -> None:
    """ts_reading and ts_point have no foreign key to ts_series (an index search per point): a
    writer under A's setting may insert a reading numbered A under B's device and series at B's
    instant, or such a point. Neither collides with anything of B's (each key holds the tenant's
    number), and no tenant role sees them through ts_measure. (The superuser, past row-level
    security, sees the reading under B's identifiers: migration 0013 says why the view does not
    compare the tenant numbers; the point in ts_point it does not see.)"""
    a, b = tenants
    with psycopg.connect(database_url, autocommit=True) as conn:
        (series, device, instant), = conn.execute(
            "SELECT s.series_id, s.device_no, now() + interval '1 hour' FROM ts_series s WHERE s.tenant_id = %s",
            (b,))
        conn.execute("SET ROLE ingest_writer")
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (a,))
        conn.execute("INSERT INTO ts_point (tenant_no, series_id, ts, v_num) "
                     "SELECT t.tenant_no, %s, %s, 666 FROM ts_tenant t", (series, instant))
        conn.execute("INSERT INTO ts_reading (tenant_no, device_no, ts, series, v_num) "
                     "SELECT t.tenant_no, %s, %s, ARRAY[%s::bigint], '{667}' FROM ts_tenant t",
                     (device, instant, series))
        assert conn.execute("SELECT count(*) FROM ts_measure WHERE v_num >= 666").fetchone() == (0,)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (b,))
        conn.execute("INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num) "
                     "VALUES (%s, 'd', 'p', %s, 7)", (b, instant))
        assert conn.execute("SELECT v_num FROM ts_measure WHERE ts = %s", (instant,)).fetchall() == [(7.0,)]
        conn.execute("SET ROLE tenant_reader")
        for tenant in (a, b):
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
            assert conn.execute("SELECT count(*) FROM ts_measure WHERE v_num >= 666").fetchone() == (0,)
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT tenant_id, v_num FROM ts_measure WHERE v_num >= 666").fetchall() == [(b, 667.0)]


def test_a_readers_query_of_a_series_uses_the_indexes(database_url: str, tenants: tuple[str, str]) -> None:
    """The dashboard's query through the view: the tenant's number once (an InitPlan), its series
    by the series key, its readings by the reading key; no table scanned."""
    a, _ = tenants
    with psycopg.connect(database_url) as conn:
        conn.execute("SET ROLE tenant_reader")
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (a,))
        conn.execute("SET enable_seqscan = off")  # the tables hold a few rows: any plan is cheap
        plan = "\n".join(str(r[0]) for r in conn.execute(
            "EXPLAIN SELECT ts, v_num FROM ts_measure WHERE device_id = 'd' AND point_id = 'p' "
            "AND ts > now() - interval '1 day'"))
    assert "InitPlan" in plan
    assert "ts_series_tenant_id_device_id_point_id_key" in plan
    assert "ts_reading_key" in plan  # the readings
    assert "ts_point_key" in plan  # the points stored apart from their reading
    assert "Seq Scan" not in plan
