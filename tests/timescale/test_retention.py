"""What TimescaleDB 2.28.3 refuses on ts_reading (the hypertable under the ts_measure view) because
it has row-level security: the facts docs/storage.md states, checked on the test
cluster so an upgrade that changes them is noticed. Each refusal leaves the hypertable as it was."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("statement", [
    pytest.param("ALTER TABLE ts_reading SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_no')",
                 id="compression"),
    pytest.param("ALTER TABLE ts_reading SET (timescaledb.enable_columnstore = true)", id="columnstore"),
])
def test_compression_is_refused_on_a_hypertable_with_row_level_security(timescale_url: str, statement: str) -> None:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        with pytest.raises(errors.FeatureNotSupported, match="columnstore cannot be used on table with row security"):
            conn.execute(statement.encode())
        enabled = conn.execute("SELECT compression_enabled FROM timescaledb_information.hypertables "
                               "WHERE hypertable_name = 'ts_reading'").fetchone()
    assert enabled == (False,)


def test_a_continuous_aggregate_is_refused_on_a_hypertable_with_row_level_security(timescale_url: str) -> None:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        with pytest.raises(errors.FeatureNotSupported,
                           match="cannot create continuous aggregate on hypertable with row security"):
            conn.execute("CREATE MATERIALIZED VIEW ts_hourly WITH (timescaledb.continuous) AS "
                         "SELECT device_no, time_bucket('1 hour', ts) AS hour, count(*) FROM ts_reading "
                         "GROUP BY 1, 2 WITH NO DATA")
        assert conn.execute("SELECT to_regclass('ts_hourly')").fetchone() == (None,)


def test_the_chunk_interval_is_a_day_and_retention_drops_whole_chunks_through_the_owner(timescale_url: str) -> None:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        intervals = conn.execute("SELECT hypertable_name::text, time_interval::text "
                                 "FROM timescaledb_information.dimensions ORDER BY 1").fetchall()
        owner = conn.execute("SELECT p.proowner = c.relowner, p.prosecdef, p.proconfig FROM pg_proc p, pg_class c "
                             "WHERE p.proname = 'ingest_purge_telemetry' AND c.oid = 'ts_reading'::regclass").fetchone()
    assert intervals == [("ts_point", "1 day"), ("ts_reading", "1 day")]
    assert owner == (True, True, ["search_path=pg_catalog, pg_temp", "lock_timeout=10s"])
