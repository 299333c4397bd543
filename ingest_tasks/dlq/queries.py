"""All SQL of the dead-letter queue's tooling: select, fetch, replay and purge `ingest_errors` rows.

The tooling runs as the role of `DATABASE_URL`: in production a login that is a member of
`dlq_operator` (migration 0008), whose own row-level security policies show it every tenant's
dead letters and nothing else; a superuser (`make run`) works too. A replayed message is written
as the writer role, through the same `write_outcomes` as the workers, so RLS checks its rows
exactly as it checks a chunk's; it leaves the DLQ in the transaction that stores it, so it is
never lost and never stored twice. The retention purge runs in a worker, as the writer, through
the `ingest_purge_dead_letters` function, so a worker never reads another tenant's dead letters.
Refuses to format anything for people: that is the CLI's job (`ingest_tasks.dlq.cli`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from ingest_tasks.envelope import Message
from ingest_tasks.errors import Blame
from ingest_tasks.pipeline import Accepted, process_message
from ingest_tasks.postgres import CONNECT_TIMEOUT_S, with_keepalives
from ingest_tasks.store import (
    WRITER_ROLE,
    Refusal,
    blame_of,
    problem_of,
    translate_errors,
    write_outcomes,
)

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]
PurgeProgress = Callable[[int, int], None]  # (removed so far, total selected)

REPLAY_BATCH = 500
PURGE_BATCH = 5_000
MAX_ID = 2**63 - 1  # bigserial's largest
COLUMNS = "id, ts, tenant_id, topic, reason, detail, payload, chunk_id, chunk_seq"
PURGE_OLD = "SELECT ingest_purge_dead_letters(%s, %s)"  # migration 0008
SET_WRITER = sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(WRITER_ROLE))


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters an operator means; every field left empty matches every row."""

    tenant: str | None = None
    reason: str | None = None
    older_than_days: float | None = None
    ids: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return self == Filter()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    ts: datetime
    tenant_id: str | None
    topic: str
    reason: str
    detail: str | None
    payload: bytes
    chunk_id: str | None
    chunk_seq: int | None


@dataclass
class ReplayCounts:
    landed: int = 0
    still_invalid: int = 0
    refused: int = 0

    @property
    def done(self) -> int:
        return self.landed + self.still_invalid + self.refused


ReplayProgress = Callable[[ReplayCounts, int], None]  # (counts so far, total selected)


@contextmanager
def session(dsn: str) -> Iterator[Conn]:
    """An operator connection; any database failure inside the block becomes `StorageUnavailable`."""
    # Autocommit: reads take no locks between commands; writes open their own transactions.
    with translate_errors(), psycopg.connect(
        with_keepalives(dsn), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as conn:
        yield conn


def where(flt: Filter) -> tuple[sql.Composed, list[object]]:
    days = None if flt.older_than_days is None else float(flt.older_than_days)
    clauses = [sql.SQL("true")]
    params: list[object] = []
    for clause, value in (
        ("tenant_id = %s", flt.tenant),
        ("reason = %s", flt.reason),
        ("ts < now() - %s * interval '1 day'", days),
        ("id = ANY(%s)", list(flt.ids) or None),
    ):
        if value is not None:
            clauses.append(sql.SQL(clause))
            params.append(value)
    return sql.SQL(" AND ").join(clauses), params


def select(
    conn: Conn, flt: Filter, *, after_id: int = 0, upto_id: int = MAX_ID,
    limit: int | None = None, lock: bool = False,
) -> list[DeadLetter]:
    """Matching rows with ids in (after_id, upto_id], in id order; `lock` skips rows others hold."""
    condition, params = where(flt)
    query = sql.SQL(
        "SELECT {} FROM ingest_errors WHERE {} AND id > %s AND id <= %s ORDER BY id LIMIT %s{}"
    ).format(sql.SQL(COLUMNS), condition, sql.SQL(" FOR UPDATE SKIP LOCKED" if lock else ""))
    with conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        return cur.execute(query, [*params, after_id, upto_id, limit]).fetchall()


def iter_dead_letters(
    conn: Conn, flt: Filter, limit: int | None = None, page: int = 1_000
) -> Iterator[DeadLetter]:
    """Every matching row in id order, read a page at a time so a huge DLQ never sits in memory."""
    after, left = 0, limit
    while left is None or left > 0:
        rows = select(conn, flt, after_id=after, limit=page if left is None else min(page, left))
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].id
        left = None if left is None else left - len(rows)


def fetch_dead_letter(conn: Conn, dead_letter_id: int) -> DeadLetter | None:
    rows = select(conn, Filter(ids=(dead_letter_id,)))
    return rows[0] if rows else None


def count_and_last(conn: Conn, flt: Filter) -> tuple[int, int]:
    condition, params = where(flt)
    query = sql.SQL("SELECT count(*), coalesce(max(id), 0) FROM ingest_errors WHERE {}").format(condition)
    return cast(tuple[int, int], conn.execute(query, params).fetchone())


def replay_dead_letters(
    conn: Conn, flt: Filter, max_payload_bytes: int,
    batch: int = REPLAY_BATCH, progress: ReplayProgress | None = None,
) -> ReplayCounts:
    """Re-run the selected rows through validation and storage, a transaction per batch.

    Only rows present when the replay starts are considered (ids up to the last one then), so
    dead letters that arrive meanwhile wait for the next run.
    """
    total, last_id = count_and_last(conn, flt)
    counts, after = ReplayCounts(), 0
    chunk_id = f"replay-{uuid.uuid4().hex}"
    while True:
        with conn.transaction():
            rows = select(conn, flt, after_id=after, upto_id=last_id, limit=batch, lock=True)
            for row in rows:
                replay_one(conn, chunk_id, row, max_payload_bytes, counts)
        if not rows:
            return counts
        if progress is not None:
            progress(counts, total)
        after = rows[-1].id


def replay_one(
    conn: Conn, chunk_id: str, row: DeadLetter, max_payload_bytes: int, counts: ReplayCounts
) -> None:
    outcome = process_message(0, Message(row.topic, row.payload, time.time()), max_payload_bytes)
    if not isinstance(outcome, Accepted):
        counts.still_invalid += 1
        return
    try:
        with conn.transaction():  # a savepoint: a refused message keeps its dead letter
            land(conn, chunk_id, outcome, row.id)
    except Refusal as exc:
        if blame_of(exc) is Blame.CHUNK:  # the database's problem, not the message's: stop here
            raise
        log.warning("dead letter %d: refused by the database, kept: %s", row.id, problem_of(exc))
        counts.refused += 1
        return
    counts.landed += 1


def land(conn: Conn, chunk_id: str, message: Accepted, dead_letter_id: int) -> None:
    conn.execute(SET_WRITER)
    write_outcomes(conn, chunk_id, [message], [])
    conn.execute("RESET ROLE")  # the operator again: the DLQ row may belong to any tenant
    conn.execute("DELETE FROM ingest_errors WHERE id = %s", (dead_letter_id,))


def purge(conn: Conn, flt: Filter, batch: int = PURGE_BATCH, progress: PurgeProgress | None = None) -> int:
    """Delete the selected rows, a bounded batch per transaction, so no lock is held for long.

    SKIP LOCKED lets two purges run at once without waiting on each other or deleting a row
    twice; a batch cut short by rows another purge holds ends this one, and that one finishes.
    """
    condition, params = where(flt)
    query = sql.SQL(
        "DELETE FROM ingest_errors WHERE id IN ("
        "SELECT id FROM ingest_errors WHERE {} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
    ).format(condition)
    total = count_and_last(conn, flt)[0] if progress is not None else 0
    removed = 0
    while True:
        with conn.transaction():
            deleted = max(conn.execute(query, [*params, batch]).rowcount, 0)
        removed += deleted
        if progress is not None and deleted:
            progress(removed, total)
        if deleted < batch:
            return removed


def purge_dead_letters(dsn: str, older_than_days: int, batch: int = PURGE_BATCH) -> int:
    """The retention purge (what beat runs daily): delete DLQ rows older than the retention.

    Through the purge function, a batch per call and per transaction (autocommit), so a worker's
    login needs no right on `ingest_errors` beyond what the writer has.
    """
    removed = 0
    with session(dsn) as conn:
        while True:
            row = conn.execute(PURGE_OLD, (older_than_days, batch)).fetchone()
            deleted = int(cast(tuple[int], row)[0])
            removed += deleted
            if deleted < batch:
                return removed
