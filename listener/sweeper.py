"""The lost-chunk sweeper: every `every_s`, chunks a worker lost between Redis and itself are sent again.

Which chunks are lost, and how often one is sent again, is the ledger's business
(`listener.ledger`); this step decides when to look. A search that fails (Redis away) is tried
again after the listener's `Backoff`, then the sweep goes back to its period. `now` (monotonic,
for the schedule) is passed in; the ledger's times come from `wall_clock`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ingest_tasks.envelope import QUEUE
from ingest_tasks.ledger import BODY
from listener import metrics
from listener.backoff import Backoff
from listener.ledger import MAX_RESENDS, Wire
from listener.sender import REDIS_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPolicy:
    resend_after_s: float  # INGEST_RESEND_AFTER_S: a chunk this old and nowhere in Redis is lost
    every_s: float = 5.0  # how often the ledger is searched


class LostChunks(Protocol):
    def lost(self, sent_before: float, queue: str) -> list[tuple[str, Wire]]: ...
    def sent_again(self, chunk_id: str, now: float) -> int: ...


class LostChunkSweeper:
    def __init__(self, ledger: LostChunks, enqueue: Callable[[str, Wire], None], policy: SweepPolicy,
                 backoff: Backoff, *, wall_clock: Callable[[], float], now: float) -> None:
        self._ledger = ledger
        self._enqueue = enqueue
        self.policy = policy
        self.backoff = backoff
        self._wall_clock = wall_clock
        self._next_at = now + policy.every_s
        self._failures = 0

    def sweep_if_due(self, now: float) -> int:
        """Send the lost chunks again if a sweep is due; how many were sent."""
        if now < self._next_at:
            return 0
        try:
            resent = self._sweep()
        except REDIS_ERRORS as exc:
            self._failures += 1
            self._next_at = now + self.backoff.delay(self._failures)
            log.warning("cannot search the ledger for lost chunks: %s", exc)
            return 0
        self._failures = 0
        self._next_at = now + self.policy.every_s
        return resent

    def _sweep(self) -> int:
        lost = self._ledger.lost(self._wall_clock() - self.policy.resend_after_s, QUEUE)
        for chunk_id, wire in lost:
            log.warning("chunk %s: lost between Redis and a worker (%d messages); sending it again",
                        chunk_id, len(wire))
            self._enqueue(chunk_id, wire)
            metrics.CHUNKS_RESENT.inc()
            if self._ledger.sent_again(chunk_id, self._wall_clock()) >= MAX_RESENDS:
                log.error("chunk %s: sent again %d times and never stored; see the worker's log for the error. "
                          "It is not sent again and stays in Redis (%s)", chunk_id, MAX_RESENDS, BODY)
        return len(lost)
