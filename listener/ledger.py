"""Chunks sent but not yet stored: the safety net under kombu's Redis transport.

kombu takes a message off the queue (BRPOP) and only then, with a second command, records it as
unacknowledged; a worker SIGKILLed between the two loses the message, and no visibility timeout
brings it back (celery/celery#7950). So the listener records every chunk it sends in the ledger
(keys in `ingest_tasks.ledger`), and a worker forgets it once the chunk's outcome is committed.

A chunk recorded `INGEST_RESEND_AFTER_S` (30 s) ago that is neither in the queue nor held by a
worker was lost that way (once a worker has a chunk it is stored in well under a second; one in
a backlog or waiting for a retry is in one of the two), and the listener sends it again
(`listener.sweeper`). Writes are idempotent: a copy sent again that was not lost after all adds
nothing. A chunk sent again `MAX_RESENDS` times and still not stored makes a worker fail every
time (a bug, not a lost message): it is no longer sent, and stays in the ledger for an operator.
The cost is a second copy of every chunk in Redis until it is stored: zstd-compressed msgpack,
like the task message's body (about 10 KB for 800 of the benchmark's five-point messages,
instead of 270 KB).

The chunk's id is its Celery task id, which is how a chunk is found in the queue or in kombu's
`unacked` hash without decoding its body.

Staged messages (`listener.staging`) are acknowledged before their chunk is sent: they wait in a
Redis list per client id (`StagedMessages`), oldest first. A chunk that holds some of them is
recorded and takes them off the list in one script (atomic, like MULTI), so a crash leaves each
either staged or recorded (and a recorded chunk reaches the queue: the sweeper sees to it), never
both nor neither. The list's entries are numbered from its first ever (the count taken off is kept
beside it), and a chunk takes off "up to entry N": recording the same chunk again, after a reply
lost to a dropped connection, takes nothing more off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import msgpack
import orjson
import redis

from ingest_tasks.envelope import compress, decompress
from ingest_tasks.ledger import BODY, RESENT, SENT

MAX_RESENDS = 3
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages
SCAN_LIMIT = 10  # a longer queue is a backlog that still holds old chunks: look again later
BATCH = 100  # overdue chunks looked at per sweep
STAGED_PREFIX = "ingest:listener:staged:"  # + MQTT client id: a list of msgpack [topic, payload, received_at]
TAKEN_SUFFIX = ":taken"  # + to the list's key: how many entries ever came off it

# KEYS: BODY, SENT, the staged list, its taken count; ARGV: chunk id, body, now, up to which entry.
RECORD_UNSTAGING = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local taken = tonumber(redis.call('GET', KEYS[4]) or '0')
local upto = tonumber(ARGV[4])
if upto > taken then
  redis.call('LTRIM', KEYS[3], upto - taken, -1)
  redis.call('SET', KEYS[4], upto)
end
"""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # how every zstd frame starts

Wire = list[list[Any]]


class SentChunks:
    """The listener's side of the ledger: record a chunk, find the lost ones, count resends."""

    def __init__(self, client: redis.Redis, staged_key: str = "") -> None:
        self._client = client
        self._staged_keys = [BODY, SENT, staged_key, staged_key + TAKEN_SUFFIX]
        self._record_unstaging = client.register_script(RECORD_UNSTAGING)

    def record(self, chunk_id: str, wire: Sequence[Sequence[object]], now: float, staged_upto: int = 0) -> None:
        """Record the chunk; with `staged_upto`, the staged list's entries before that number come off
        it in the same step (the chunk holds them)."""
        body = compress(msgpack.packb(wire, use_bin_type=True))
        if staged_upto:
            self._record_unstaging(keys=self._staged_keys, args=[chunk_id, body, now, staged_upto])
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(BODY, chunk_id, body)
        pipe.zadd(SENT, {chunk_id: now})
        pipe.execute()

    def sent_again(self, chunk_id: str, now: float) -> int:
        """Note that the chunk was sent again; how many times it has been, until it is stored."""
        times = int(self._client.hincrby(RESENT, chunk_id, 1))
        # Never overdue again once it has had its chances: a worker fails on it, so it waits here.
        self._client.zadd(SENT, {chunk_id: now if times < MAX_RESENDS else float("inf")}, xx=True)
        return times

    def size(self) -> int:
        return int(self._client.zcard(SENT))

    def lost(self, sent_before: float, queue: str) -> list[tuple[str, Wire]]:
        """Chunks recorded before `sent_before` that no queue or worker holds, with their messages."""
        found = self._client.zrangebyscore(SENT, 0, sent_before, start=0, num=BATCH)
        overdue = [c.decode() for c in cast(list[bytes], found)]
        if not overdue or int(self._client.llen(queue)) > SCAN_LIMIT:
            return []
        # unacked first: a chunk on its way from the queue to a worker is then seen in the queue.
        held = task_ids(orjson.loads(v)[0] for v in self._client.hvals(UNACKED))
        held |= task_ids(orjson.loads(v) for v in self._client.lrange(queue, 0, -1))
        missing = [c for c in overdue if c not in held]
        if not missing:
            return []
        bodies = self._client.hmget(BODY, missing)
        return [(c, unpack_body(b)) for c, b in zip(missing, bodies, strict=True) if isinstance(b, bytes)]


class StagedMessages:
    """Messages acknowledged before their chunk was sent, for one client id, oldest first."""

    def __init__(self, client: redis.Redis, client_id: str) -> None:
        self._client = client
        self.key = STAGED_PREFIX + client_id

    def stage(self, wire: Sequence[Sequence[object]]) -> None:
        self._client.rpush(self.key, *[msgpack.packb(m, use_bin_type=True) for m in wire])

    def left_over(self) -> tuple[int, Wire]:
        """What a listener staged and did not send before it stopped, and the number of its first entry."""
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self.key + TAKEN_SUFFIX)
        pipe.lrange(self.key, 0, -1)
        taken, entries = pipe.execute()
        return int(taken or 0), [cast(list[Any], msgpack.unpackb(m, raw=False)) for m in entries]


def unpack_body(body: bytes) -> Wire:
    # A listener from before compression recorded plain msgpack, whose list never starts so.
    if not body.startswith(ZSTD_MAGIC):
        return cast(Wire, msgpack.unpackb(body, raw=False))
    return cast(Wire, msgpack.unpackb(decompress(body), raw=False))


def task_ids(messages: Iterable[dict[str, Any]]) -> set[str]:
    """The Celery task ids of kombu messages (as stored in Redis: JSON with the headers)."""
    return {str(m.get("headers", {}).get("id")) for m in messages}
