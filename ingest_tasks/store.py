"""The SQL of storing chunks (the DLQ tooling's is in dlq/queries.py).

Writes a chunk's outcomes in one transaction: each message's points as one reading (the device,
the instant, its points' series, values and units in arrays, its meta once) into
`ingest_insert_readings` (migration 0013), one array of readings a chunk, inserted tenant by
tenant; acks upserted, events inserted, rejects dead-lettered under a per-chunk key so a retried
chunk never adds its DLQ rows twice. Every tenant's rows are written with `app.tenant_id` set to that tenant,
as the non-superuser writer role, so RLS checks each row.

A point is stored under the integer id of its series (tenant, device, point), a reading under its
device's. The ids are cached per process (`SeriesIds`); a chunk's unknown series are created or
looked up by one call (`ingest_series`) in the chunk's transaction, and cached only once that transaction has
committed, so an id from a rolled-back transaction is never used. Series are never deleted.

Idempotency: a point already stored is never stored again. A message names a point at most once
in its reading (the first of a repeated name is kept, as a conflict check would keep it). The
first try is a plain INSERT: no conflict check, which costs PostgreSQL a second search of the
unique index for every reading. If a reading of that device and instant is already there (a
redelivered chunk or message, or another message of the same instant) the unique index refuses
it, the transaction is rolled back, and the chunk is written again checking for conflicts (the
points a stored reading lacks are stored apart, migration 0013), as are the chunks of the next
`CONFLICT_HOLD_S` seconds.

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
import struct
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import TypeVar, cast

import psycopg
import psycopg.errors
from psycopg import pq, sql
from psycopg.adapt import Dumper

from ingest_tasks import wire_arrays
from ingest_tasks.dead_letter_columns import writable
from ingest_tasks.errors import Blame, DbRejected, StorageUnavailable, blame
from ingest_tasks.pipeline import Accepted, MeasureRow, Outcome, Rejected
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
SERIES_IDS = "SELECT i, series_id, device_no FROM ingest_series(%b::text[], %b::text[], %b::text[])"
# (tenants, upto, readings, check_conflicts) -> points added
INSERT_READINGS = "SELECT ingest_insert_readings(%b::text[], %b::int4[], %b::ingest_reading[], %b)"
READING_TYPE = "SELECT 'ingest_reading'::regtype::oid"
# A series id takes ~200 bytes of the cache; past this many the cache starts again empty.
MAX_CACHED_SERIES = 500_000
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
CONFLICT_HOLD_S = 60.0  # after a chunk met rows already stored, check for conflicts this long
SeriesKey = tuple[str, str, str]  # tenant, device, point
SeriesNumbers = tuple[int, int]  # series_id, device_no


@dataclass
class WriteResult:
    """What one chunk's transaction stored."""

    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead: list[Rejected] = field(default_factory=list)
    series: dict[SeriesKey, SeriesNumbers] = field(default_factory=dict)  # looked up by this transaction


class SeriesIds:
    """The series this process knows to be committed: (tenant, device, point) -> (series id, device
    number)."""

    def __init__(self, limit: int = MAX_CACHED_SERIES) -> None:
        self.known: dict[SeriesKey, SeriesNumbers] = {}
        self._limit = limit

    def learn(self, committed: dict[SeriesKey, SeriesNumbers]) -> None:
        if len(self.known) + len(committed) > self._limit:
            self.known.clear()
        self.known.update(committed)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A parameter already in PostgreSQL's binary format (wire_arrays)."""

    data: bytes


class EncodedDumper(Dumper):
    """Sends an `Encoded` as it is, of no announced type: the statement casts each such parameter
    (`%b::int8[]`), which is the type PostgreSQL then reads it as."""

    format = pq.Format.BINARY
    oid = 0

    def dump(self, obj: Encoded) -> bytes:
        return obj.data


# For every connection of the process (the DLQ replay's too, which writes through write_outcomes);
# the type is ours, so no other value is dumped differently.
psycopg.adapters.register_dumper(Encoded, EncodedDumper)


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
        self._series = SeriesIds()

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.close()
        with translate_errors():
            conn = psycopg.connect(with_keepalives(self._dsn), connect_timeout=CONNECT_TIMEOUT_S)
            conn.execute(SET_TIMEOUTS)
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(WRITER_ROLE)))
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
                result = self._write_all(conn, chunk_id, accepted, rejected)
            except Refusal as exc:
                if blame_of(exc) is Blame.CHUNK:
                    raise
                log.warning("chunk %s: refused as a whole (SQLSTATE %s); writing it again in parts to find why",
                            chunk_id, sqlstate_of(exc))
                with conn.transaction():
                    result = self._write_each(conn, chunk_id, accepted, rejected)
            self._series.learn(result.series)  # committed: the transaction has ended without error
            return result

    def _write_all(
        self, conn: psycopg.Connection[tuple[object, ...]], chunk_id: str,
        accepted: list[Accepted], rejected: list[Rejected],
    ) -> WriteResult:
        if time.monotonic() >= self._check_conflicts_until:
            try:
                with conn.transaction():
                    return write_outcomes(conn, chunk_id, accepted, rejected, series_ids=self._series,
                                          check_conflicts=False)
            except psycopg.errors.UniqueViolation as exc:
                if not already_stored(exc):
                    raise
                log.info("chunk %s: some rows were already stored (a redelivery); writing it again "
                         "without them, and checking for conflicts for %.0f s", chunk_id, CONFLICT_HOLD_S)
                self._check_conflicts_until = time.monotonic() + CONFLICT_HOLD_S
        with conn.transaction():
            return write_outcomes(conn, chunk_id, accepted, rejected, series_ids=self._series)

    def dead_letter(self, chunk_id: str, rejected: Sequence[Rejected]) -> WriteResult:
        with self._failing_over():
            conn = self.connect()
            with conn.transaction():
                return write_outcomes(conn, chunk_id, [], list(rejected), series_ids=self._series)

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
        apart = Apart(conn, chunk_id, self._series)
        middle = len(accepted) // 2  # the whole chunk was refused already: start with its halves
        apart.write(accepted[:middle])
        apart.write(accepted[middle:])
        if apart.unsure is not None and not apart.stored:
            # No message got past it: the setup's problem, not theirs (errors.Blame.UNKNOWN).
            raise StorageUnavailable(f"every message refused, SQLSTATE {sqlstate_of(apart.unsure)}: "
                                     f"{problem_of(apart.unsure)}") from apart.unsure
        dead = write_outcomes(conn, chunk_id, [], sorted([*rejected, *apart.refused], key=lambda r: r.seq),
                              series_ids=self._series)
        result = WriteResult(rows=apart.rows, dead=dead.dead, series=apart.series)
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
    series_ids: SeriesIds
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    series: dict[SeriesKey, SeriesNumbers] = field(default_factory=dict)
    refused: list[Rejected] = field(default_factory=list)
    stored: int = 0
    unsure: BaseException | None = None  # the last refusal of a kind errors.blame cannot place

    def write(self, messages: list[Accepted]) -> None:
        if not messages:
            return
        try:
            with self.conn.transaction():  # a savepoint: only these messages' rows are undone
                part = write_outcomes(self.conn, self.chunk_id, messages, [], series_ids=self.series_ids)
        except Refusal as exc:
            self._refused(messages, exc)
            return
        self.stored += len(messages)
        self.series.update(part.series)
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
    accepted: Sequence[Accepted], rejected: Sequence[Rejected], *,
    series_ids: SeriesIds | None = None, check_conflicts: bool = True,
) -> WriteResult:
    """Write rows and dead letters on `conn` inside the caller's transaction, as the writer role.

    Without `check_conflicts`, a measurement row that is already stored raises UniqueViolation.
    The series ids looked up here are in the result, for the caller to learn once committed.
    """
    rejected = [writable(r) for r in rejected]
    result = WriteResult(dead=rejected)
    with conn.cursor() as cur:
        known = series_ids.known if series_ids is not None else {}
        result.rows["ts_measure"] += insert_readings(cur, accepted, known, result.series, check_conflicts)
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
    """Whether a reading of that device and instant is already stored: a duplicate on
    `ts_reading_key`, or on the copy of it that TimescaleDB gives each chunk
    (`_hyper_3_1_chunk_ts_reading_key`)."""
    return (exc.diag.constraint_name or "").endswith("ts_reading_key")


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


def insert_readings(
    cur: psycopg.Cursor[tuple[object, ...]], accepted: Sequence[Accepted], known: dict[SeriesKey, SeriesNumbers],
    looked_up: dict[SeriesKey, SeriesNumbers], check_conflicts: bool,
) -> int:
    """Insert each message's points as one reading, the readings grouped by tenant; the points
    added. The readings are encoded here (wire_arrays): psycopg's dumpers cost the worker ~10 µs
    a message."""
    groups = by_tenant(m for m in accepted if m.measures)
    if not groups:
        return 0
    messages = [m for group in groups.values() for m in group]
    upto = list(accumulate(len(group) for group in groups.values()))
    numbers = series_of(cur, [row for m in messages for row in m.measures], known, looked_up)
    readings = []
    seen = Repeats()
    at = 0
    for m in messages:
        readings.append(reading(m.measures, numbers[at : at + len(m.measures)], seen))
        at += len(m.measures)
    cur.execute(INSERT_READINGS, (
        list(groups), Encoded(wire_arrays.int4s(upto)),
        Encoded(wire_arrays.records(reading_type(cur.connection), readings)), check_conflicts,
    ))
    (added,) = cur.fetchone() or (0,)
    return cast(int, added)


_INT8 = struct.Struct(">q")


# A reading's first fields: their count; the device number's type OID, length and value; the
# instant's type OID and length (its value follows).
_READING_HEAD = struct.Struct(">iIiqIi")
READING_FIELDS = 8


@dataclass
class Repeats:
    """The encodings of a chunk's instants, units and metas, which repeat across its messages: one
    dict each, so no value of one kind is ever taken for another's."""

    stamps: dict[datetime, bytes] = field(default_factory=dict)
    units: dict[tuple[str | None, ...], bytes] = field(default_factory=dict)
    metas: dict[str | None, bytes] = field(default_factory=dict)


def reading(rows: Sequence[MeasureRow], numbers: Sequence[SeriesNumbers], seen: Repeats) -> bytes:
    """One message's reading, an `ingest_reading` in binary: device number, instant, series ids
    and values (a point the message names twice: its first value), the message's meta once. A
    column of NULLs is sent as NULL."""
    series = [number for number, _ in numbers]
    if len(set(series)) < len(series):
        kept = sorted({number: i for i, number in reversed(list(enumerate(series)))}.values())
        rows, series = [rows[i] for i in kept], [series[i] for i in kept]
    _, _, _, stamps, nums, bools, texts, units, metas = zip(*rows, strict=True)
    stamp = seen.stamps.get(stamps[0])
    if stamp is None:
        stamp = seen.stamps[stamps[0]] = _INT8.pack((stamps[0] - wire_arrays.PG_EPOCH) // wire_arrays.MICROSECOND)
    unit = seen.units.get(units)
    if unit is None:
        unit = seen.units[units] = wire_arrays.field(
            wire_arrays.TEXT_ARRAY, None if units.count(None) == len(units) else wire_arrays.texts(units))
    meta = seen.metas.get(metas[0])
    if meta is None:
        meta = seen.metas[metas[0]] = wire_arrays.field(
            wire_arrays.JSONB, None if metas[0] is None else wire_arrays.jsonb(metas[0]))
    points = len(rows)
    return b"".join((
        _READING_HEAD.pack(READING_FIELDS, wire_arrays.INT8, 8, numbers[0][1], wire_arrays.TIMESTAMPTZ, 8),
        stamp,
        wire_arrays.field(wire_arrays.INT8_ARRAY, wire_arrays.int8s(series)),
        wire_arrays.field(wire_arrays.FLOAT8_ARRAY, None if nums.count(None) == points else wire_arrays.float8s(nums)),
        wire_arrays.field(wire_arrays.BOOL_ARRAY, None if bools.count(None) == points else wire_arrays.bools(bools)),
        wire_arrays.field(wire_arrays.TEXT_ARRAY, None if texts.count(None) == points else wire_arrays.texts(texts)),
        unit,
        meta,
    ))


# The type's OID differs from database to database: asked once per connection.
_reading_types: weakref.WeakKeyDictionary[psycopg.Connection[tuple[object, ...]], int] = weakref.WeakKeyDictionary()


def reading_type(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    oid = _reading_types.get(conn)
    if oid is None:
        row = conn.execute(READING_TYPE).fetchone()
        oid = _reading_types[conn] = cast(int, row[0] if row else 0)
    return oid


def series_of(
    cur: psycopg.Cursor[tuple[object, ...]], rows: Sequence[MeasureRow], known: dict[SeriesKey, SeriesNumbers],
    looked_up: dict[SeriesKey, SeriesNumbers],
) -> list[SeriesNumbers]:
    """Each row's series id and device number: from `known`, or looked up (created if need be)
    into `looked_up`."""
    keys = [row[:3] for row in rows]
    missing = sorted({key for key in keys if key not in known and key not in looked_up})
    if missing:
        tenants, devices, points = (list(column) for column in zip(*missing, strict=True))
        cur.execute(SERIES_IDS, (tenants, devices, points))
        for i, series_id, device_no in cur.fetchall():
            looked_up[missing[cast(int, i) - 1]] = (cast(int, series_id), cast(int, device_no))
    return [known[key] if key in known else looked_up[key] for key in keys]


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

