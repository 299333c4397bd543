"""The enqueuer: a chunk recorded in the ledger and put in Redis as one Celery task, retried until Redis takes it.

Only the sending side of Celery is used (`send_task` by name): the listener never imports the
worker's task code. A chunk's task id is its chunk id, which is how the ledger finds it in the
queue. While Redis is away the send is tried again after `Backoff` waits, for as long as it
takes: the chunk's messages stay unacknowledged with the broker meanwhile. Only a listener that
is stopping gives up, once the wait has reached its cap. The clocks are passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from ingest_tasks.envelope import QUEUE, TASK_NAME, args_summary
from listener import metrics
from listener.backoff import Backoff
from listener.ledger import Wire

log = logging.getLogger(__name__)

REDIS_ERRORS = (OperationalError, RedisError, OSError)  # what Redis being away looks like, via kombu or redis-py


class TaskSender(Protocol):
    """The part of a Celery app the listener uses (`celery.Celery.send_task`)."""

    def send_task(self, name: str, args: tuple[object, ...], *, queue: str, retry: bool, task_id: str,
                  argsrepr: str) -> object: ...


class Recorder(Protocol):
    def record(self, chunk_id: str, wire: Wire, now: float, staged_upto: int = 0) -> None: ...


class ChunkSender:
    def __init__(self, app: TaskSender, ledger: Recorder, backoff: Backoff, *, wall_clock: Callable[[], float],
                 sleep: Callable[[float], None], stopping: Callable[[], bool]) -> None:
        self._app = app
        self._ledger = ledger
        self.backoff = backoff
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._stopping = stopping

    def send(self, chunk_id: str, wire: Wire, staged_upto: int = 0) -> bool:
        """Record and enqueue until Redis accepts; False only if asked to stop while Redis is away.

        With `staged_upto`, the chunk holds staged messages (`listener.staging`): recording it takes
        the staged list's entries before that number off the list (again at a retry: nothing more)."""
        failures = 0
        while True:
            try:
                self._ledger.record(chunk_id, wire, self._wall_clock(), staged_upto)
                self.enqueue(chunk_id, wire)
                return True
            except REDIS_ERRORS as exc:
                metrics.ENQUEUE_FAILURES.inc()
                failures += 1
                if self._stopping() and self.backoff.at_cap(failures):
                    log.error("chunk %s: Redis still unreachable at shutdown; its %d messages stay "
                              "unacknowledged with the broker", chunk_id, len(wire))
                    return False
                delay = self.backoff.delay(failures)
                log.warning("chunk %s: Redis unreachable (%s); retrying in %.1f s", chunk_id, exc, delay)
                self._sleep(delay)

    def enqueue(self, chunk_id: str, wire: Wire) -> None:
        self._app.send_task(TASK_NAME, args=(chunk_id, wire), queue=QUEUE, retry=False, task_id=chunk_id,
                            argsrepr=args_summary(chunk_id, wire))
