"""The ledger's layout in Redis, shared with the listener, and the worker's one use of it.

The listener records every chunk it sends (`listener.ledger`, which says why the ledger exists
and how lost chunks are found); a worker forgets a chunk here once its outcome is committed
(its rows, or its dead letters). These key names are part of the wire between the two, like
`ingest_tasks.envelope`: this module imports nothing from the listener.
"""

from __future__ import annotations

import redis

SENT = "ingest:ledger:sent"  # sorted set: chunk id -> unix time it was (last) sent
BODY = "ingest:ledger:body"  # hash: chunk id -> its messages (compressed msgpack), to send it again
RESENT = "ingest:ledger:resent"  # hash: chunk id -> times sent again


class Ledger:
    """The worker's side: a stored chunk comes off the ledger."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def forget(self, chunk_id: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(SENT, chunk_id)
        pipe.hdel(BODY, chunk_id)
        pipe.hdel(RESENT, chunk_id)
        pipe.execute()
