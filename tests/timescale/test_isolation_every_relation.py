"""On TimescaleDB, no tenant role reads or writes another tenant's rows through any relation:
chunks included, whenever they were made.

The database lives through the migrations with data in it: rows stored while ts_measure was a
plain table (made into chunks by migration 0003, after the roles had their grants), chunks made
by inserts before the isolation migration (0007) granted the roles anew, and chunks made after
it, by the superuser and by the writer; migration 0011 moved them all into ts_point's chunks, and
0013 into ts_reading's (points written later through ts_measure land in both). Tenants' rows are
weeks apart, one chunk a week.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support import unique
from tests.timescale.cluster import fresh_timescale_database
from tests.timescale.isolation import (
    POINTS,
    ROLES,
    Reach,
    attempt,
    cross_tenant_paths,
    insert_statement,
    modelled_row,
    reaches,
    rows_with,
    session_as,
    store_measures,
    store_other_rows,
)

pytestmark = pytest.mark.integration

WEEK1 = datetime(2025, 1, 6, 12, tzinfo=UTC)  # chunks are a day long: each week below is its own chunk
ISOLATION_MIGRATION = 7


def week(n: int) -> datetime:
    return WEEK1 + timedelta(weeks=n - 1)


def store_weeks(url: str, tenants: tuple[str, ...], weeks: range) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for n in weeks:
            for tenant in tenants:
                store_measures(conn, tenant, week(n))


def write_as_writer(url: str, tenant: str, when: datetime) -> None:
    """A row stored as the workers store them: the writer role, app.tenant_id set to its tenant."""
    with session_as(url, "ingest_writer", tenant) as conn:
        conn.execute("INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_text) "
                     "VALUES (%(t)s, %(t)s || '-dev', 'by-writer', %(when)s, %(t)s)", {"t": tenant, "when": when})


@pytest.fixture(scope="module")
def staged() -> Iterator[tuple[str, tuple[str, str]]]:
    a, b = unique("ta"), unique("tb")
    stages = {
        3: lambda url: store_weeks(url, (a, b), range(1, 3)),  # a plain table still
        ISOLATION_MIGRATION: lambda url: store_weeks(url, (a, b), range(3, 5)),  # a hypertable, old grants
    }
    with fresh_timescale_database("traksense_isolation_", stages) as url:
        store_weeks(url, (a, b), range(5, 7))  # chunks made after every migration
        for tenant in (a, b):
            write_as_writer(url, tenant, week(7))  # the writer makes week 7's chunk
            write_as_writer(url, tenant, week(1))  # and writes into an old one
        with psycopg.connect(url, autocommit=True) as conn:
            for tenant in (a, b):
                store_other_rows(conn, tenant, week(7))
            conn.execute("ANALYZE")  # statistics, which pg_stats shows, as autovacuum would gather
        yield url, (a, b)


def chunks(url: str, *hypertables: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(r[0]) for table in hypertables or ("ts_reading", "ts_point")
                for r in conn.execute("SELECT show_chunks(%s)", (table,)).fetchall()]


def test_the_rows_lie_in_a_chunk_a_week(staged: tuple[str, tuple[str, str]]) -> None:
    url, _ = staged
    assert len(chunks(url, "ts_reading")) == 7
    # Weeks 1-4 since 0011, emptied by 0013's move; 5 and 6 hold the points stored apart (ts_measure
    # inserts a device's first point of an instant as a reading, its others here); week 7 has one
    # point a tenant, a reading.
    assert len(chunks(url, "ts_point")) == 6


def test_no_tenant_role_reads_or_writes_another_tenants_rows_through_any_relation(
    staged: tuple[str, tuple[str, str]],
) -> None:
    url, tenants = staged
    paths, tried = cross_tenant_paths(url, tenants)
    assert paths == []
    for role in ROLES:  # every chunk was among the relations tried, as each role
        assert {f"{role} {c}" for c in chunks(url)} <= set(tried)


def test_chunks_give_the_tenant_roles_no_privilege(staged: tuple[str, tuple[str, str]]) -> None:
    url, _ = staged
    with psycopg.connect(url, autocommit=True) as admin:
        granted = [(role, r.name) for role in ROLES for r in reaches(admin, role) if r.child and r.reachable]
    assert granted == []


def ts_measure_as(admin: psycopg.Connection[tuple[object, ...]], role: str) -> Reach:
    (reach,) = [r for r in reaches(admin, role) if r.name == "public.ts_measure"]
    return reach


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reads_its_own_tenants_rows_through_ts_measure_in_every_chunk(
    staged: tuple[str, tuple[str, str]], role: str,
) -> None:
    """The probe that finds no path to B's rows finds A's: it can see rows when they are there."""
    url, (a, _) = staged
    with psycopg.connect(url, autocommit=True) as admin:
        reach = ts_measure_as(admin, role)
    with session_as(url, role, a) as conn:
        assert rows_with(conn, reach, a) == 6 * POINTS + 2  # weeks 1-6 stored by the superuser, the writer's two
        weeks = conn.execute("SELECT count(DISTINCT date_trunc('week', ts)) FROM ts_measure").fetchone()
    assert weeks == (7,)


def test_the_writer_inserts_its_own_tenants_row_the_way_the_probe_tries_b(staged: tuple[str, tuple[str, str]]) -> None:
    url, (a, _) = staged
    with psycopg.connect(url, autocommit=True) as admin:
        reach = ts_measure_as(admin, "ingest_writer")
        row = modelled_row(admin, reach, a, a)
    assert row is not None
    with session_as(url, "ingest_writer", a) as conn:
        assert attempt(conn, insert_statement(reach, reach.insertable), (Jsonb(row),)) == 1
