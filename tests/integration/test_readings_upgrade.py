"""Migration 0013 on a database with points in it, as production upgrades: the roles made by the
init script, every migration applied by the owner's login (no superuser, so under FORCE ROW LEVEL
SECURITY), on both backends.

What ts_measure showed before, it shows after, row for row (ingested_at and meta included): a
device's points of one instant that came in one transaction with one meta become one reading; the
ones that came in another stay in ts_point beside it. A redelivery of those messages afterwards adds
nothing, and a new message of that device and instant adds only its new point.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from psycopg import sql

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.pipeline import process_chunk
from ingest_tasks.store import Store
from migrations.runner import apply_pending, discover
from tests.integration.test_roles import OWNER, WORKER, Db, run_init_script
from tests.support import PG_ADMIN, query, unique
from tests.timescale.cluster import admin_url as timescale_admin_url

pytestmark = pytest.mark.integration

READINGS = 13
T1, T2 = "2025-10-07T15:30:00+00:00", "2025-10-07T15:31:00+00:00"
EVERYTHING = ("SELECT tenant_id, device_id, point_id, ts, v_num, v_bool, v_text, unit, meta, ingested_at "
              "FROM ts_measure ORDER BY 1, 2, 3, 4")


@pytest.fixture(params=["postgresql", "timescaledb"])
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    server = PG_ADMIN if request.param == "postgresql" else timescale_admin_url()
    name = unique("traksense_upgrade_")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = Db(server, name)
    try:
        run_init_script(server, name)
        yield database
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def stored_before(db: Db, tenant: str) -> None:
    """Points of migration 0011's ts_point, written through ts_measure as the superuser, one
    transaction a statement: d1 at T1 in two messages (p0, p1 with meta A; then p2 with meta B),
    d1 at T2, d2 at T1, and a text and a boolean point."""
    for rows in (
        [(tenant, "d1", "p0", T1, 1.0, None, None, "C", {"m": "A"}),
         (tenant, "d1", "p1", T1, 2.0, None, None, "C", {"m": "A"})],
        [(tenant, "d1", "p2", T1, 3.0, None, None, None, {"m": "B"})],
        [(tenant, "d1", "p0", T2, 4.0, None, None, "C", None),
         (tenant, "d1", "mode", T2, None, None, "auto", None, None),
         (tenant, "d1", "on", T2, None, True, None, None, None)],
        [(tenant, "d2", "p0", T1, 5.0, None, None, "C", {"m": "A"})],
    ):
        with psycopg.connect(db.admin) as conn:
            conn.cursor().executemany(
                "INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_num, v_bool, v_text, unit, meta) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(*r[:8], None if r[8] is None else orjson.dumps(r[8]).decode()) for r in rows])


def telem(tenant: str, device: str, ts: str, points: list[tuple[str, float]], meta: dict[str, str]) -> Message:
    payload = {"schema": "v1", "ts": ts, "meta": meta,
               "points": [{"name": n, "t": "float", "v": v, "u": "C"} for n, v in points]}
    return Message(f"traksense/{tenant}/s/{device}/telem", orjson.dumps(payload), time.time())


def test_points_stored_before_0013_read_the_same_after_it_and_are_never_stored_twice(db: Db) -> None:
    before = [m for m in discover() if m.version < READINGS]
    apply_pending(db.login(OWNER), before)
    tenants = (unique("a-"), unique("b-"))
    for tenant in tenants:
        stored_before(db, tenant)
    shown = query(db.admin, EVERYTHING)
    assert len(shown) == 2 * 7

    apply_pending(db.login(OWNER))

    assert query(db.admin, EVERYTHING) == shown
    # d1@T1 with meta A, d1@T2, d2@T1 are readings; p2 (meta B, later) stays beside its reading.
    assert query(db.admin, "SELECT count(*), sum(cardinality(series)) FROM ts_reading") == [(6, 12)]
    assert query(db.admin, "SELECT count(*) FROM ts_point") == [(2,)]

    a = tenants[0]
    redelivered = Chunk(unique("chunk-"), (
        telem(a, "d1", T1, [("p0", 1.0), ("p1", 2.0)], {"m": "A"}),
        telem(a, "d1", T1, [("p2", 3.0)], {"m": "B"}),
        telem(a, "d2", T1, [("p0", 5.0)], {"m": "A"}),
    ))
    new = Chunk(unique("chunk-"), (telem(a, "d1", T1, [("p0", 9.0), ("p3", 6.0)], {"m": "C"}),))
    store = Store(db.login(WORKER))
    try:
        assert store.write(redelivered.id, process_chunk(redelivered, 65_536)).rows["ts_measure"] == 0
        assert store.write(new.id, process_chunk(new, 65_536)).rows["ts_measure"] == 1
    finally:
        store.close()
    after = query(db.admin, EVERYTHING)
    assert [r for r in after if r[2] != "p3"] == shown
    assert [(r[0], r[1], r[4], r[8]) for r in after if r[2] == "p3"] == [(a, "d1", 6.0, {"m": "C"})]
