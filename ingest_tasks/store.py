"""The SQL of storing chunks (the DLQ tooling's is in dead_letters.py).

Writes a chunk's outcomes in one transaction: measurements by binary COPY into a temporary
staging table then `INSERT ... SELECT` per tenant (PostgreSQL refuses COPY into a table with
row-level security), acks upserted, events inserted, rejects dead-lettered under a per-chunk key so a retried
chunk never adds its DLQ rows twice. Every tenant's rows are written with `app.tenant_id` set to
that tenant, as the non-superuser writer role, so RLS checks each row. The per-tenant loop over
the staged measurements runs in PostgreSQL (`ingest_insert_staged`, migration 0005): one call a
chunk instead of two statements a tenant.

Idempotency: a row already stored is never stored again. The first try is a plain INSERT: no
conflict check, which costs PostgreSQL a second search of the unique index for every row (a
third of its CPU per row here). If a row is already there (a redelivered chunk or message) the
unique index refuses it, the transaction is rolled back, and the chunk is written again with
`ON CONFLICT DO NOTHING`, as are the chunks of the next `CONFLICT_HOLD_S` seconds.

Translates psycopg's failures: a data error in one message's rows makes that message `db_rejected`
(found by writing each message in its own savepoint); anything else is `StorageUnavailable`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar, cast

import psycopg
import psycopg.errors
from psycopg import sql

from ingest_tasks.errors import DbRejected, StorageUnavailable
from ingest_tasks.pipeline import Accepted, Outcome, Rejected

log = logging.getLogger(__name__)

WRITER_ROLE = "ingest_writer"
CONNECT_TIMEOUT_S = 3  # worker_process_init must not block for more than 4 s
MEASURE_COLUMNS = "tenant_id, device_id, point_id, ts, v_num, v_bool, v_text, unit, meta"
STAGE_TYPES = ["text", "text", "text", "timestamptz", "float8", "bool", "text", "text", "text"]

CREATE_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS ts_measure_stage (
    tenant_id text, device_id text, point_id text, ts timestamptz, v_num float8,
    v_bool bool, v_text text, unit text, meta text
) ON COMMIT DELETE ROWS
"""
INSERT_STAGED = "SELECT ingest_insert_staged(%s, %s)"  # (tenants, check_conflicts) -> rows added
UPSERT_ACK = """
INSERT INTO cmd_ack (tenant_id, device_id, cmd_id, ok, ts_exec, err, payload, received_at)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, now())
ON CONFLICT (tenant_id, device_id, cmd_id) DO UPDATE SET
    ok = EXCLUDED.ok, ts_exec = EXCLUDED.ts_exec, err = EXCLUDED.err,
    payload = EXCLUDED.payload, received_at = EXCLUDED.received_at
"""
INSERT_EVENT = """
INSERT INTO device_event (tenant_id, device_id, ts, type, severity, data)
VALUES (%s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT DO NOTHING
"""
INSERT_DEAD = """
INSERT INTO ingest_errors (tenant_id, topic, payload, reason, detail, chunk_id, chunk_seq)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (chunk_id, chunk_seq) DO NOTHING
"""
SET_TENANT = "SELECT set_config('app.tenant_id', %s, true)"
# Past this many tenants in a chunk, the per-tenant INSERTs find their rows through an index on
# the staging table instead of scanning all of it each time (which grows with tenants x rows).
MANY_TENANTS = 32
CONFLICT_HOLD_S = 60.0  # after a chunk met rows already stored, check for conflicts this long
INDEX_STAGE = "CREATE INDEX ts_measure_stage_tenant ON ts_measure_stage (tenant_id); ANALYZE ts_measure_stage"
UNINDEX_STAGE = "DROP INDEX ts_measure_stage_tenant"


@dataclass
class WriteResult:
    """What one chunk's transaction stored."""

    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead: list[Rejected] = field(default_factory=list)


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise StorageUnavailable(f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc


class Store:
    """One connection per process, opened lazily and reopened after it breaks."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._check_conflicts_until = 0.0

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.close()
        with translate_errors():
            conn = psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S)
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(WRITER_ROLE)))
            conn.execute(CREATE_STAGE)
            conn.commit()
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def write(self, chunk_id: str, outcomes: Sequence[Outcome]) -> WriteResult:
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        rejected = [o for o in outcomes if isinstance(o, Rejected)]
        with self._failing_over():
            conn = self.connect()
            try:
                return self._write_all(conn, chunk_id, accepted, rejected)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                log.warning("chunk %s: refused as a whole (%s); writing message by message",
                            chunk_id, exc.sqlstate)
                with conn.transaction():
                    return self._write_each(conn, chunk_id, accepted, rejected)

    def _write_all(
        self, conn: psycopg.Connection[tuple[object, ...]], chunk_id: str,
        accepted: list[Accepted], rejected: list[Rejected],
    ) -> WriteResult:
        if time.monotonic() >= self._check_conflicts_until:
            try:
                with conn.transaction():
                    return write_outcomes(conn, chunk_id, accepted, rejected, check_conflicts=False)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.table_name != "ts_measure":
                    raise
                log.info("chunk %s: some rows were already stored (a redelivery); writing it again "
                         "without them, and checking for conflicts for %.0f s", chunk_id, CONFLICT_HOLD_S)
                self._check_conflicts_until = time.monotonic() + CONFLICT_HOLD_S
        with conn.transaction():
            return write_outcomes(conn, chunk_id, accepted, rejected)

    def dead_letter(self, chunk_id: str, rejected: Sequence[Rejected]) -> WriteResult:
        with self._failing_over():
            conn = self.connect()
            with conn.transaction():
                return write_outcomes(conn, chunk_id, [], list(rejected))

    @contextmanager
    def _failing_over(self) -> Iterator[None]:
        try:
            with translate_errors():
                yield
        except StorageUnavailable:
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self.close()
            raise

    def _write_each(
        self, conn: psycopg.Connection[tuple[object, ...]], chunk_id: str,
        accepted: list[Accepted], rejected: list[Rejected],
    ) -> WriteResult:
        result = WriteResult()
        for message in accepted:
            try:
                with conn.transaction():  # a savepoint: only this message's rows are undone
                    part = write_outcomes(conn, chunk_id, [message], [])
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                rejected.append(refused(message, exc, chunk_id))
                continue
            for table, n in part.rows.items():
                result.rows[table] += n
        dead = write_outcomes(conn, chunk_id, [], sorted(rejected, key=lambda r: r.seq))
        result.dead = dead.dead
        result.rows["ingest_errors"] = dead.rows["ingest_errors"]
        return result


def write_outcomes(
    conn: psycopg.Connection[tuple[object, ...]], chunk_id: str,
    accepted: Sequence[Accepted], rejected: Sequence[Rejected], check_conflicts: bool = True,
) -> WriteResult:
    """Write rows and dead letters on `conn` inside the caller's transaction, as the writer role.

    Without `check_conflicts`, a measurement row that is already stored raises UniqueViolation.
    """
    result = WriteResult(dead=list(rejected))
    with conn.cursor() as cur:
        staged = stage_measures(cur, accepted)
        if staged:
            indexed = len(staged) > MANY_TENANTS
            if indexed:
                cur.execute(INDEX_STAGE)
            cur.execute(INSERT_STAGED, (staged, check_conflicts))
            (added,) = cur.fetchone() or (0,)
            result.rows["ts_measure"] += cast(int, added)
            if indexed:
                cur.execute(UNINDEX_STAGE)
        for tenant, messages in by_tenant(m for m in accepted if m.acks or m.events).items():
            cur.execute(SET_TENANT, (tenant,))
            result.rows["cmd_ack"] += upsert_acks(cur, messages)
            result.rows["device_event"] += insert_events(cur, messages)
        for tenant, dead in by_tenant(rejected).items():
            cur.execute(SET_TENANT, (tenant or "",))
            cur.executemany(INSERT_DEAD, [
                (r.tenant, r.topic, r.payload, r.reason, r.detail, chunk_id, r.seq) for r in dead
            ])
            result.rows["ingest_errors"] += len(dead)
    return result


def refused(message: Accepted, exc: psycopg.Error, chunk_id: str) -> Rejected:
    problem = exc.diag.message_primary or str(exc)
    log.warning("chunk %s: message %d refused by the database: %s", chunk_id, message.seq, problem)
    detail = f"the database refused this message's rows: {problem}"
    return Rejected(message.seq, message.tenant, message.topic, message.payload, DbRejected.reason, detail)


T = TypeVar("T", Accepted, Rejected)


def by_tenant(items: Iterable[T]) -> dict[str | None, list[T]]:
    groups: dict[str | None, list[T]] = defaultdict(list)
    for item in items:
        groups[item.tenant].append(item)
    return groups


def stage_measures(cur: psycopg.Cursor[tuple[object, ...]], accepted: Sequence[Accepted]) -> list[str]:
    """COPY the measurements into the staging table; the tenants they belong to, in order."""
    tenants = list(dict.fromkeys(m.tenant for m in accepted if m.measures))
    if not tenants:
        return tenants
    cur.execute("TRUNCATE ts_measure_stage")
    with cur.copy(f"COPY ts_measure_stage ({MEASURE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(STAGE_TYPES)
        for message in accepted:
            for row in message.measures:
                copy.write_row(row)
    return tenants


def upsert_acks(cur: psycopg.Cursor[tuple[object, ...]], messages: Sequence[Accepted]) -> int:
    # The last ack of a command in a chunk wins; one statement cannot update a row twice.
    latest = {(a[0], a[1], a[2]): a for m in messages for a in m.acks}
    if latest:
        cur.executemany(UPSERT_ACK, list(latest.values()))
    return len(latest)


def insert_events(cur: psycopg.Cursor[tuple[object, ...]], messages: Sequence[Accepted]) -> int:
    rows = [e for m in messages for e in m.events]
    if rows:
        cur.executemany(INSERT_EVENT, rows)
    return len(rows)

