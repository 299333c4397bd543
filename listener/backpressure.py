"""Backpressure on what Redis holds: the chunks in its queue, and its memory in use.

While either is at its limit the listener sends and acknowledges nothing: unacknowledged
messages stay with the broker, and Receive Maximum (and the listener's read hold) stop it from
sending more, so Redis stays below its own limits while the workers catch up. Redis is read
every `poll_s`; between two reads every chunk sent counts, as one more chunk and as its
messages' bytes, so a second at full speed does not overshoot. (Those bytes are what the
listener sent, not what Redis keeps for them, which is compressed and also copied to the ledger:
an estimate until the next read corrects it.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from listener import metrics

log = logging.getLogger(__name__)

QUEUE_POLL_S = 1.0  # how often the queue depth and Redis's memory in use are read


@dataclass(frozen=True)
class QueueLoad:
    """What Redis holds, as read at one moment."""

    chunks: int  # in the ingest queue
    memory_bytes: int  # Redis's `used_memory`


@dataclass(frozen=True)
class QueueLimits:
    max_chunks: int  # INGEST_MAX_QUEUE_CHUNKS
    max_bytes: int  # INGEST_MAX_QUEUE_BYTES
    poll_s: float = QUEUE_POLL_S


class QueueGate:
    """Whether Redis holds too much to send another chunk; the clock is passed in."""

    def __init__(self, read_load: Callable[[], QueueLoad], limits: QueueLimits) -> None:
        self._read_load = read_load
        self._limits = limits
        self._read_at: float | None = None
        self._seen = QueueLoad(0, 0)
        self._sent_chunks = 0  # sent since the last read: the queue holds them too
        self._sent_bytes = 0
        self.chunks_full = False
        self.memory_full = False

    @property
    def full(self) -> bool:
        return self.chunks_full or self.memory_full

    def sent(self, nbytes: int) -> None:
        self._sent_chunks += 1
        self._sent_bytes += nbytes

    def check(self, now: float) -> bool:
        """True while either limit is reached; each change is logged once."""
        if self._read_at is None or now - self._read_at >= self._limits.poll_s:
            self._read_at = now
            self._read()
        chunks = self._seen.chunks + self._sent_chunks
        memory = self._seen.memory_bytes + self._sent_bytes
        self._note_chunks(chunks >= self._limits.max_chunks, chunks)
        self._note_memory(memory >= self._limits.max_bytes, memory)
        return self.full

    def _read(self) -> None:
        try:
            load = self._read_load()
        except (RedisError, OSError) as exc:
            log.warning("cannot read the queue depth and memory from Redis: %s", exc)
            return
        metrics.QUEUE_SIZE.set(load.chunks)
        metrics.REDIS_MEMORY.set(load.memory_bytes)
        self._seen, self._sent_chunks, self._sent_bytes = load, 0, 0

    def _note_chunks(self, full: bool, chunks: int) -> None:
        if full != self.chunks_full:
            log.warning("queue depth %d %s the limit of %d chunks: %s", chunks,
                        "reached" if full else "is under", self._limits.max_chunks,
                        "holding back" if full else "resuming")
        self.chunks_full = full

    def _note_memory(self, full: bool, memory: int) -> None:
        if full != self.memory_full:
            log.warning("Redis memory in use %d bytes %s INGEST_MAX_QUEUE_BYTES %d: %s", memory,
                        "reached" if full else "is under", self._limits.max_bytes,
                        "holding back" if full else "resuming")
        self.memory_full = full
