"""Telemetry retention: the SQL beat's daily purge runs to remove measurements and device events
older than `TELEMETRY_RETENTION_DAYS`.

All of it goes through `ingest_purge_telemetry` (migrations 0009, 0011, 0013), which runs as the
tables' owner: a worker's login is only a member of ingest_writer, may not delete rows nor drop
chunks, and never reads another tenant's rows. On TimescaleDB the function drops whole chunks; on
plain PostgreSQL it deletes one bounded batch a call. Each call is its own transaction
(autocommit), so a large backlog neither grows one transaction nor holds a lock on ts_reading or
ts_point for long. Series and devices (ts_series, ts_device) are kept: a few hundred bytes each,
there for the next reading.
Refuses to decide whether retention is on: the caller passes a number of days of at least 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from ingest_tasks.dlq.queries import session

log = logging.getLogger(__name__)

PURGE_BATCH = 10_000  # rows a transaction on plain PostgreSQL
PURGE_OLD = "SELECT chunks_dropped, rows_deleted FROM ingest_purge_telemetry(%s, %s)"  # migration 0013


@dataclass(frozen=True, slots=True)
class Purged:
    """What one retention run removed: whole chunks (TimescaleDB) and rows deleted (plain tables)."""

    chunks: int = 0
    rows: int = 0
    batches: int = 0


def purge_telemetry(dsn: str, older_than_days: int, batch: int = PURGE_BATCH) -> Purged:
    """Remove telemetry and events older than `older_than_days`, a batch per transaction,
    until a batch comes back short."""
    chunks = rows = batches = 0
    with session(dsn) as conn:
        while True:
            row = conn.execute(PURGE_OLD, (older_than_days, batch)).fetchone()
            dropped, deleted = cast(tuple[int, int], row)
            chunks, rows, batches = chunks + dropped, rows + deleted, batches + 1
            if deleted < batch:
                return Purged(chunks, rows, batches)
