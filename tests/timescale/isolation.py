"""Every relation a tenant role can reach, tried for another tenant's rows.

Shared by the isolation tests on plain PostgreSQL and on TimescaleDB. For each role subject to
row-level security, every relation of the database in every schema (pg_catalog and
information_schema included: pg_stats, for one, shows column values) on which the role holds any
table or column privilege, plus every child of a table with row-level security (TimescaleDB's
chunks, partitions) whatever its privileges, is tried with app.tenant_id set to tenant A:

- read: any row whose readable columns carry tenant B's marker;
- write: insert a row of tenant B (modelled on a row of A in the same relation, and first proved
  valid by inserting it as the superuser), update or delete B's rows;
- TRUNCATE, which row-level security does not govern, must not be granted at all.

A try that succeeds is a path into B's rows; a try the database refuses (privilege, policy, no
schema access) is not. Every try is rolled back. Tenant B's rows carry its id in every text column.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support import unique

ROLES = ("tenant_reader", "ingest_writer")
PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
Conn = psycopg.Connection[Any]
POINTS = 20  # rows of a tenant per instant: enough that ANALYZE lists its id among the most common values

# Tables, views, materialized views, foreign tables and partitioned tables (chunks are tables):
# indexes, sequences, composite types and TOAST tables hold no rows a role can query.
RELATIONS = """
WITH RECURSIVE children AS (
    SELECT i.inhrelid AS oid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relrowsecurity
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN children c ON i.inhparent = c.oid
)
SELECT n.nspname::text, c.relname::text, c.oid IN (SELECT oid FROM children),
       array(SELECT p FROM unnest(%(privileges)s::text[]) p WHERE has_table_privilege(%(role)s, c.oid, p)),
       a.every, a.fillable, a.readable, a.insertable, a.updatable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(attname::text ORDER BY attnum), '{}') AS every,
           coalesce(array_agg(attname::text ORDER BY attnum) FILTER (WHERE NOT atthasdef), '{}') AS fillable,
           coalesce(array_agg(attname::text ORDER BY attnum)
                    FILTER (WHERE has_column_privilege(%(role)s, c.oid, attnum, 'SELECT')), '{}') AS readable,
           coalesce(array_agg(attname::text ORDER BY attnum)  -- columns with a default are left to it
                    FILTER (WHERE NOT atthasdef AND has_column_privilege(%(role)s, c.oid, attnum, 'INSERT')),
                    '{}') AS insertable,
           coalesce(array_agg(attname::text ORDER BY attnum)
                    FILTER (WHERE has_column_privilege(%(role)s, c.oid, attnum, 'UPDATE')), '{}') AS updatable
    FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped
) a
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
  -- Other sessions' temporary tables: PostgreSQL lets no other session touch them (what their
  -- statistics show is in pg_stats, which is tried like every other view).
  AND NOT (c.relpersistence = 't' AND c.relnamespace <> pg_my_temp_schema())
ORDER BY 1, 2
"""


def store_measures(conn: Conn, tenant: str, when: datetime) -> None:
    """POINTS rows of `tenant` at `when` through ts_measure (into ts_point, under series of
    ts_series), its id in every text column (as the superuser)."""
    conn.execute("INSERT INTO ts_measure (tenant_id, device_id, point_id, ts, v_text, unit, meta) "
                 "SELECT %(t)s, %(t)s || '-dev', %(t)s || '-p' || g, %(when)s, %(t)s, %(t)s, "
                 "jsonb_build_object('m', %(t)s::text) FROM generate_series(1, %(n)s) g",
                 {"t": tenant, "when": when, "n": POINTS})


def store_other_rows(conn: Conn, tenant: str, when: datetime) -> None:
    """A row of `tenant` in each of the other tenant tables, its id in every text column."""
    conn.execute("INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok, ts_exec, err, payload) "
                 "VALUES (%(t)s, %(t)s || '-dev', %(t)s || %(cmd)s, false, %(when)s, %(t)s, "
                 "jsonb_build_object('m', %(t)s::text))", {"t": tenant, "when": when, "cmd": f"-{when:%s}"})
    conn.execute("INSERT INTO device_event (tenant_id, device_id, ts, type, data) VALUES "
                 "(%(t)s, %(t)s || '-dev', %(when)s, %(t)s, jsonb_build_object('m', %(t)s::text))",
                 {"t": tenant, "when": when})
    conn.execute("INSERT INTO ingest_errors (tenant_id, topic, payload, reason, detail) VALUES "
                 "(%(t)s, 'traksense/' || %(t)s || '/s/d/telem', convert_to(%(t)s, 'UTF8'), 'invalid_json', %(t)s)",
                 {"t": tenant})


# Left out, and why no tenant's rows can be in it: it describes the element types of arrays in
# column and routine definitions, read from pg_namespace, pg_type, pg_class, pg_attribute and
# pg_proc, which hold definitions, not column values (and are tried themselves); it takes seconds.
NOT_TRIED = {("information_schema", "element_types")}


@dataclass(frozen=True)
class Reach:
    """What one role may do with one relation."""

    schema: str
    table: str
    child: bool  # a child of a table with row-level security
    privileges: tuple[str, ...]  # table-level
    columns: tuple[str, ...]
    fillable: tuple[str, ...]  # columns without a default
    readable: tuple[str, ...]  # columns the role may select
    insertable: tuple[str, ...]  # columns without a default the role may insert into
    updatable: tuple[str, ...]

    @property
    def reachable(self) -> bool:
        return bool(self.privileges or self.readable or self.insertable or self.updatable)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


def reaches(admin: Conn, role: str) -> list[Reach]:
    """Every relation `role` can reach, and every child of a table with row-level security."""
    rows = admin.execute(RELATIONS, {"role": role, "privileges": PRIVILEGES}).fetchall()
    found = [Reach(r[0], r[1], r[2], *(tuple(v) for v in r[3:])) for r in rows]
    return [r for r in found if (r.reachable or r.child) and (r.schema, r.table) not in NOT_TRIED]


@contextmanager
def session_as(url: str, role: str, tenant: str) -> Iterator[Conn]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        yield conn


def attempt(conn: Conn, statement: sql.Composed, params: tuple[Any, ...] = ()) -> int | None:
    """Rows the statement counted or changed, undone afterwards; None when the database refused it."""
    try:
        with conn.transaction(force_rollback=True):
            cur = conn.execute(statement, params)
            row = cur.fetchone() if cur.description else None
            return int(row[0]) if row else cur.rowcount
    except psycopg.Error:
        return None


def as_text(columns: tuple[str, ...]) -> sql.Composable:
    """`concat_ws(' ', col::text, ...)`: a row's values as one text to search."""
    texts = [sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns]
    return sql.SQL("concat_ws(' ', {})").format(sql.SQL(", ").join(texts))


def rows_with(conn: Conn, reach: Reach, marker: str) -> int | None:
    """Rows carrying `marker` that `conn` reads from the relation (through the columns it may read,
    or all of them when it may read none, which the database then refuses)."""
    columns = reach.readable or reach.columns
    if not columns:
        return None
    statement = sql.SQL("SELECT count(*) FROM {} WHERE strpos({}, %s) > 0").format(reach.ident, as_text(columns))
    return attempt(conn, statement, (marker,))


def modelled_row(admin: Conn, reach: Reach, model: str, tenant: str) -> dict[str, Any] | None:
    """A new row of `tenant`, copied from a row of tenant `model` in the same relation (or of any
    tenant when `model` has none there: a chunk of other tests' rows). A tenant is its id where the
    relation has one, else its number (ts_reading, ts_point and their chunks, under a new device and
    series of `tenant`)."""
    if "tenant_id" in reach.columns:
        mine = sql.SQL("r.tenant_id = %s")
    elif "tenant_no" in reach.columns:
        mine = sql.SQL("r.tenant_no = (SELECT tenant_no FROM ts_tenant WHERE tenant_id = %s)")
    else:
        return None
    found = admin.execute(sql.SQL("SELECT to_jsonb(r) FROM {} r ORDER BY {} DESC LIMIT 1").format(
        reach.ident, mine), (model,)).fetchone()
    if not found:
        return None
    if reach.name == "public.ts_tenant":  # a row per tenant, B's is there: a tenant A has not named
        return {**found[0], "tenant_id": unique(f"{tenant}-")}
    row = {**found[0], **tenant_columns(admin, tenant, reach.columns)}
    if "tenant_id" in reach.columns:
        row["device_id"] = unique(f"{tenant}-dev-")
        if "device_no" in reach.columns and reach.name != "public.ts_device":  # ts_series
            row["device_no"], _ = new_series(admin, row["tenant_no"], tenant, row["device_id"])
    return row


def new_series(admin: Conn, number: int, tenant: str, device: str) -> tuple[int, int]:
    """A new device of `tenant` and a series of it: (device_no, series_id)."""
    found = admin.execute(
        "INSERT INTO ts_device (tenant_no, tenant_id, device_id) VALUES (%s, %s, %s) RETURNING device_no",
        (number, tenant, device)).fetchone()
    assert found is not None
    device_no = int(found[0])
    found = admin.execute(
        "INSERT INTO ts_series (tenant_no, tenant_id, device_id, point_id, device_no) "
        "VALUES (%s, %s, %s, 'p', %s) RETURNING series_id", (number, tenant, device, device_no)).fetchone()
    assert found is not None
    return device_no, int(found[0])


def tenant_columns(admin: Conn, tenant: str, columns: tuple[str, ...]) -> dict[str, Any]:
    """What makes a row `tenant`'s: its id, its number, and (in ts_reading and ts_point) a device
    and series of its own."""
    found = admin.execute("SELECT tenant_no FROM ts_tenant WHERE tenant_id = %s", (tenant,)).fetchone()
    assert found is not None, f"tenant {tenant} has no number in ts_tenant"
    picked: dict[str, Any] = {"tenant_no": found[0]} if "tenant_no" in columns else {}
    if "tenant_id" in columns:
        picked["tenant_id"] = tenant
    elif "series_id" in columns or "device_no" in columns:
        device_no, series = new_series(admin, found[0], tenant, unique(f"{tenant}-dev-"))
        if "series_id" in columns:
            picked["series_id"] = series
        if "device_no" in columns:
            picked.update(device_no=device_no, series=[series])
    return picked


def insert_statement(reach: Reach, columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("INSERT INTO {rel} ({cols}) SELECT {picked} FROM jsonb_populate_record(NULL::{rel}, %s) r").format(
        rel=reach.ident, cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        picked=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in columns))


def insert_paths(admin: Conn, conn: Conn, reach: Reach, tenants: tuple[str, str]) -> list[str]:
    """Tries to insert a row of B; a child is tried even without privileges (then refused)."""
    if not (reach.insertable or reach.child):
        return []
    row = modelled_row(admin, reach, *tenants)
    if row is None and reach.insertable:
        return [f"{reach.name}: insertable, but this probe finds no row to model one of B on"]
    if row is None:  # an empty child the role has no privilege on: nothing in it, nothing to try
        return []
    statement = insert_statement(reach, reach.insertable or reach.fillable)
    assert attempt(admin, statement, (Jsonb(row),)) == 1, f"{reach.name}: the probe's row of B is not valid"
    return [f"{reach.name}: inserted a row of tenant B"] if attempt(conn, statement, (Jsonb(row),)) else []


def change_paths(admin: Conn, conn: Conn, reach: Reach, b: str) -> list[str]:
    """Tries to update and to delete B's rows, where granted and where there are any (pg_settings
    is updatable by everyone, and holds no tenant's rows)."""
    tries = []
    if reach.updatable:
        column = sql.Identifier(reach.updatable[0])
        tries.append(("UPDATE", sql.SQL("UPDATE {} SET {} = {} WHERE tenant_id = %s").format(
            reach.ident, column, column)))
    if "DELETE" in reach.privileges:
        tries.append(("DELETE", sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(reach.ident)))
    if not tries or not rows_with(admin, reach, b):
        return []
    if "tenant_id" not in reach.readable:
        return [f"{reach.name}: {tries[0][0]} granted on B's rows, and this probe cannot tell them apart"]
    return [f"{reach.name}: {verb} reached B's rows" for verb, statement in tries if attempt(conn, statement, (b,))]


def cross_tenant_paths(url: str, tenants: tuple[str, str]) -> tuple[list[str], list[str]]:
    """Every way a role under tenant A's setting read or wrote tenant B's rows; and every
    (role, relation) tried."""
    a, b = tenants
    paths: list[str] = []
    tried: list[str] = []
    with psycopg.connect(url, autocommit=True) as admin:
        for role in ROLES:
            with session_as(url, role, a) as conn:
                for reach in reaches(admin, role):
                    tried.append(f"{role} {reach.name}")
                    if rows_with(conn, reach, b):
                        paths.append(f"{role} read tenant B's rows from {reach.name}")
                    if "TRUNCATE" in reach.privileges:
                        paths.append(f"{role}: TRUNCATE granted on {reach.name} (row-level security ignores it)")
                    paths += [f"{role}: {p}" for p in insert_paths(admin, conn, reach, tenants)]
                    paths += [f"{role}: {p}" for p in change_paths(admin, conn, reach, b)]
    return paths, tried
