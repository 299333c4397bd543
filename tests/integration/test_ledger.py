"""The ledger finds exactly the chunks that no queue and no worker holds, on a real Redis: the listener's
side (`listener.ledger.SentChunks`) records and searches, the worker's (`ingest_tasks.ledger.Ledger`) forgets."""

from __future__ import annotations

import msgpack
import orjson
import pytest
import redis

from ingest_tasks.ledger import BODY, RESENT, Ledger
from listener.ledger import MAX_RESENDS, SCAN_LIMIT, SentChunks
from tests.support import REDIS_HOST

pytestmark = pytest.mark.integration

QUEUE = "ingest"
WIRE = [["traksense/t/s/d/telem", b"\xff not utf-8", 1.5]]


def kombu_message(task_id: str) -> bytes:
    """A queued Celery message as kombu stores it in Redis (only what the ledger reads matters)."""
    return orjson.dumps({"body": "", "headers": {"id": task_id, "task": "ingest_tasks.ingest_chunk"},
                         "properties": {"delivery_tag": f"tag-{task_id}"}})


@pytest.fixture
def client(redis_db: int) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=6379, db=redis_db)


def test_only_chunks_neither_queued_nor_held_are_lost(client: redis.Redis) -> None:
    ledger = SentChunks(client)
    for chunk_id in ("queued", "held", "gone", "recent"):
        ledger.record(chunk_id, WIRE, now=100.0 if chunk_id != "recent" else 200.0)
    client.lpush(QUEUE, kombu_message("queued"))
    client.hset("unacked", "tag-held", orjson.dumps([orjson.loads(kombu_message("held")), "ingest", "ingest"]))

    assert ledger.lost(sent_before=150.0, queue=QUEUE) == [("gone", WIRE)]  # bytes come back as bytes

    Ledger(client).forget("gone")
    assert ledger.lost(sent_before=150.0, queue=QUEUE) == []
    assert ledger.size() == 3


def test_a_backlog_is_not_searched_and_a_resent_chunk_waits_again(client: redis.Redis) -> None:
    ledger = SentChunks(client)
    ledger.record("gone", WIRE, now=100.0)
    for n in range(SCAN_LIMIT + 1):
        client.lpush(QUEUE, kombu_message(f"other-{n}"))
    assert ledger.lost(sent_before=150.0, queue=QUEUE) == []  # a long queue: look again later

    client.delete(QUEUE)
    assert [c for c, _ in ledger.lost(sent_before=150.0, queue=QUEUE)] == ["gone"]
    assert ledger.sent_again("gone", now=160.0) == 1
    assert ledger.lost(sent_before=150.0, queue=QUEUE) == []
    assert [c for c, _ in ledger.lost(sent_before=170.0, queue=QUEUE)] == ["gone"]


def test_a_chunk_that_never_gets_stored_is_sent_again_only_so_many_times(client: redis.Redis) -> None:
    ledger = SentChunks(client)
    ledger.record("poison", WIRE, now=100.0)
    times = [ledger.sent_again("poison", now=100.0 + n) for n in range(1, MAX_RESENDS + 1)]
    assert times == list(range(1, MAX_RESENDS + 1))
    assert ledger.lost(sent_before=1e12, queue=QUEUE) == []  # no more chances
    assert ledger.size() == 1  # but kept, with its messages, for an operator
    Ledger(client).forget("poison")
    assert ledger.size() == 0 and client.hlen(RESENT) == 0


def test_a_chunk_is_kept_compressed_and_one_kept_uncompressed_still_comes_back(client: redis.Redis) -> None:
    ledger = SentChunks(client)
    wire = [[f"traksense/t/s/d{n}/telem", b'{"schema":"v1","points":[]}' + bytes([n]), 1.5 + n] for n in range(256)]
    ledger.record("new", wire, now=100.0)
    assert len(client.hget(BODY, "new") or b"") * 4 < len(msgpack.packb(wire, use_bin_type=True))
    # as a listener from before compression recorded it: plain msgpack
    ledger.record("old", WIRE, now=100.0)
    client.hset(BODY, "old", msgpack.packb(WIRE, use_bin_type=True))

    assert sorted(ledger.lost(sent_before=150.0, queue=QUEUE)) == [("new", wire), ("old", WIRE)]
