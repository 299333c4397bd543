"""The SQL of storing chunks (the DLQ tooling's is in dlq/queries.py).

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

Translates psycopg's failures by SQLSTATE (`errors.blame`): a refusal of one message's rows makes
that message `db_rejected` (found by writing the chunk again in savepoints, halving each refused
group down to single messages) and its neighbours are stored; the connection, the server's state
or its configuration is `StorageUnavailable`, and the chunk is retried. A dead letter is always
writable: text the columns of `ingest_errors` would refuse is escaped or cut (never the payload)
and its `detail` says so.

Nothing waits forever: every connection has TCP keepalives on both ends, and the worker's has a
statement and a lock timeout, so a hung server or a lock held elsewhere ends in a retry.
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

from ingest_tasks.dead_letter_columns import writable
from ingest_tasks.errors import Blame, DbRejected, StorageUnavailable, blame
from ingest_tasks.pipeline import Accepted, Outcome, Rejected
from ingest_tasks.postgres import CONNECT_TIMEOUT_S, with_keepalives

log = logging.getLogger(__name__)

WRITER_ROLE = "ingest_writer"
# A chunk's statements take milliseconds; a minute is past any of them on a slow disk, and below
# the task's soft time limit (app.py), so a hung statement ends with its own error (57014) first.
STATEMENT_TIMEOUT_S = 60
# The worker's writes wait only on other transactions writing the same keys (a redelivered chunk,
# committed within milliseconds) or on an operator's DDL. Past 10 s the chunk is retried with
# backoff, freeing its pool process, instead of queueing behind the DDL (and everything behind it).
LOCK_TIMEOUT_S = 10
# What psycopg raises when the database, or psycopg itself before sending, refuses a statement.
Refusal = (psycopg.Error, UnicodeEncodeError)
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
SET_TIMEOUTS = f"SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'; SET lock_timeout = '{LOCK_TIMEOUT_S}s'"
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


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a refusal. psycopg refusing a value before sending it (text with NUL, or
    that is not UTF-8) gives none, but it is a data exception (class 22) all the same."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return exc.sqlstate
    if isinstance(exc, psycopg.DataError | UnicodeEncodeError):
        return "22000"
    return None


def blame_of(exc: BaseException) -> Blame:
    return blame(sqlstate_of(exc))


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
            conn = psycopg.connect(with_keepalives(self._dsn), connect_timeout=CONNECT_TIMEOUT_S)
            conn.execute(SET_TIMEOUTS)
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(WRITER_ROLE)))
            conn.execute(CREATE_STAGE)
            conn.commit()
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def abandon(self) -> None:
        """Drop a connection that may be in the middle of a statement (its task ran out of time).

        The statement is cancelled first: PostgreSQL would otherwise notice the closed socket only
        when it next writes to it, holding the statement's locks until then.
        """
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.cancel_safe(timeout=CONNECT_TIMEOUT_S)
            except psycopg.Error as exc:
                log.warning("could not cancel the statement of an abandoned connection: %s", exc)
        self.close()

    def write(self, chunk_id: str, outcomes: Sequence[Outcome]) -> WriteResult:
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        rejected = [o for o in outcomes if isinstance(o, Rejected)]
        with self._failing_over():
            conn = self.connect()
            try:
                return self._write_all(conn, chunk_id, accepted, rejected)
            except Refusal as exc:
                if blame_of(exc) is Blame.CHUNK:
                    raise
                log.warning("chunk %s: refused as a whole (SQLSTATE %s); writing it again in parts to find why",
                            chunk_id, sqlstate_of(exc))
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
                if not already_stored(exc):
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
        apart = Apart(conn, chunk_id)
        middle = len(accepted) // 2  # the whole chunk was refused already: start with its halves
        apart.write(accepted[:middle])
        apart.write(accepted[middle:])
        if apart.unsure is not None and not apart.stored:
            # No message got past it: the setup's problem, not theirs (errors.Blame.UNKNOWN).
            raise StorageUnavailable(f"every message refused, SQLSTATE {sqlstate_of(apart.unsure)}: "
                                     f"{problem_of(apart.unsure)}") from apart.unsure
        dead = write_outcomes(conn, chunk_id, [], sorted([*rejected, *apart.refused], key=lambda r: r.seq))
        result = WriteResult(rows=apart.rows, dead=dead.dead)
        result.rows["ingest_errors"] = dead.rows["ingest_errors"]
        return result


@dataclass
class Apart:
    """Messages written a group at a time, each group in its own savepoint, to find the refused.

    A refused group is split in two and each half written again, down to the single messages the
    database refuses: one refused message among 800 costs about 20 savepoints, not 800.
    """

    conn: psycopg.Connection[tuple[object, ...]]
    chunk_id: str
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused: list[Rejected] = field(default_factory=list)
    stored: int = 0
    unsure: BaseException | None = None  # the last refusal of a kind errors.blame cannot place

    def write(self, messages: list[Accepted]) -> None:
        if not messages:
            return
        try:
            with self.conn.transaction():  # a savepoint: only these messages' rows are undone
                part = write_outcomes(self.conn, self.chunk_id, messages, [])
        except Refusal as exc:
            self._refused(messages, exc)
            return
        self.stored += len(messages)
        for table, n in part.rows.items():
            self.rows[table] += n

    def _refused(self, messages: list[Accepted], exc: BaseException) -> None:
        if blame_of(exc) is Blame.CHUNK:
            raise exc
        if len(messages) > 1:
            self.write(messages[: len(messages) // 2])
            self.write(messages[len(messages) // 2 :])
            return
        if blame_of(exc) is Blame.UNKNOWN:
            self.unsure = exc
        self.refused.append(refused(messages[0], exc, self.chunk_id))


def write_outcomes(
    conn: psycopg.Connection[tuple[object, ...]], chunk_id: str,
    accepted: Sequence[Accepted], rejected: Sequence[Rejected], check_conflicts: bool = True,
) -> WriteResult:
    """Write rows and dead letters on `conn` inside the caller's transaction, as the writer role.

    Without `check_conflicts`, a measurement row that is already stored raises UniqueViolation.
    """
    rejected = [writable(r) for r in rejected]
    result = WriteResult(dead=rejected)
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


def already_stored(exc: psycopg.errors.UniqueViolation) -> bool:
    """Whether a measurement row is already stored: a duplicate on `ts_measure_key`, or on the
    copy of it that TimescaleDB gives each chunk (`_hyper_1_1_chunk_ts_measure_key`)."""
    return (exc.diag.constraint_name or "").endswith("ts_measure_key")


def refused(message: Accepted, exc: BaseException, chunk_id: str) -> Rejected:
    state, problem = sqlstate_of(exc), problem_of(exc)
    log.warning("chunk %s: message %d refused by the database (SQLSTATE %s): %s",
                chunk_id, message.seq, state, problem[:300])
    detail = f"the database refused this message's rows (SQLSTATE {state}): {problem}"
    return Rejected(message.seq, message.tenant, message.topic, message.payload, DbRejected.reason, detail)


def problem_of(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return str(exc).strip()


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

