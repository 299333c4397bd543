"""The store writes new rows with a plain INSERT and falls back to the conflict check when a row exists."""

from __future__ import annotations

import logging
import time

import orjson
import pytest

from ingest_tasks.envelope import Chunk, Message
from ingest_tasks.pipeline import process_chunk
from ingest_tasks.store import Store
from tests.support import count, unique

pytestmark = pytest.mark.integration


def chunk(tenant: str, seconds: list[int]) -> Chunk:
    """One three-point v1 message per second given, from one device."""
    messages = tuple(
        Message(f"traksense/{tenant}/s/d/telem", orjson.dumps({
            "schema": "v1", "ts": f"2025-10-07T15:30:{s:02d}Z",
            "points": [{"name": n, "t": "float", "v": s} for n in ("a", "b", "c")],
        }), time.time())
        for s in seconds
    )
    return Chunk(unique("chunk-"), messages)


def test_rows_already_stored_are_skipped_and_the_rest_of_the_chunk_is_stored(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = unique("t")
    store = Store(database_url)
    try:
        first = store.write("first", process_chunk(chunk(tenant, [1, 2]), 65_536))
        assert first.rows["ts_measure"] == 6
        with caplog.at_level(logging.INFO, logger="ingest_tasks.store"):
            overlapping = chunk(tenant, [2, 3])  # second 2 is stored already: a redelivered message
            again = store.write(overlapping.id, process_chunk(overlapping, 65_536))
        assert again.rows["ts_measure"] == 3
        assert "already stored" in caplog.text
        # While conflicts are expected, chunks are written with the check from the start.
        later = store.write("later", process_chunk(chunk(tenant, [3, 4]), 65_536))
        assert later.rows["ts_measure"] == 3
    finally:
        store.close()
    assert count(database_url, "ts_measure", tenant) == 12
