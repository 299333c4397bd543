"""The listener's loop: deliveries in, one Celery task per chunk out, MQTT acks after the enqueue.

The paho network thread only appends deliveries to an inbox. This loop moves them into the
chunker, sends each due chunk to Redis (retrying with backoff for as long as Redis is away) and
only then acknowledges the chunk's messages, in arrival order. A crash at any point therefore
leaves every unacknowledged message with the broker, which delivers it again.

While the MQTT connection is down nothing is sent: a message can only be acknowledged on the
connection that delivered it, and a broker that kept the session delivers it again. So after a
reconnect with the session present, messages of the old connection still waiting here are held
back until the broker redelivers them (the new copy, which can be acknowledged, replaces the
old); those it does not redeliver within `REDELIVERY_WAIT_S` are sent anyway, unacknowledged.

Every chunk is also recorded in the ledger (`ingest_tasks.ledger`) before it is enqueued; every
`LEDGER_SWEEP_S` the loop sends again the chunks a worker lost between Redis and itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from ingest_tasks import metrics
from ingest_tasks.envelope import QUEUE, TASK_NAME, args_summary, new_chunk_id, to_wire
from ingest_tasks.ledger import BODY, MAX_RESENDS, Ledger
from listener.backpressure import QueueGate
from listener.chunker import Chunker
from listener.mqtt import Delivery, Subscriber

log = logging.getLogger(__name__)

SEND_BACKOFF_MIN_S = 0.1
SEND_BACKOFF_MAX_S = 5.0
IDLE_WAKE_S = 0.05  # how often the loop looks at the clock when nothing is due
REDELIVERY_WAIT_S = 5.0  # after a reconnect, how long old deliveries wait for the broker's copy
LEDGER_SWEEP_S = 5.0  # how often the ledger is searched for chunks lost on their way to a worker
HOLD_LOG_EVERY_S = 60.0  # at most one log line a minute about held reads

RedeliveryKey = tuple[int, str, bytes]


def redelivery_key(d: Delivery) -> RedeliveryKey:
    # A broker resends an unacknowledged message of a resumed session with its packet id.
    return (d.mid, d.topic, d.payload)


class Listener:
    def __init__(self, app: Celery, subscriber_factory: Callable[[Callable[[Delivery], None]], Subscriber],
                 chunker: Chunker[Delivery], gate: QueueGate, *,
                 ledger: Ledger, resend_after_s: float, max_buffered: int, max_buffered_bytes: int) -> None:
        self._app = app
        self._ledger = ledger
        self._resend_after_s = resend_after_s
        self._swept_at = time.monotonic()
        self._chunker = chunker
        self._gate = gate
        self._generation = 0  # the MQTT connection the loop last saw
        self._awaiting: dict[RedeliveryKey, Delivery] = {}  # old deliveries the broker should resend
        self._awaiting_until = 0.0
        self._inbox: deque[Delivery] = deque()
        # The inbox's bytes as two counters, each written by one thread only (no lock, no lost update).
        self._bytes_received = 0  # paho's network thread
        self._bytes_drained = 0  # this loop
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._max_buffered = max_buffered
        self._max_buffered_bytes = max_buffered_bytes
        self._hold_logged_at = -HOLD_LOG_EVERY_S
        self.subscriber = subscriber_factory(self._receive)
        self.subscriber.hold_reads_while(self._buffer_full)
        self.chunks_sent = 0

    def _receive(self, delivery: Delivery) -> None:
        self._inbox.append(delivery)  # deque.append is atomic: no lock on the hot path
        self._bytes_received += delivery.size
        if len(self._inbox) >= self._chunker.policy.max_size:
            self._wake.set()

    def _buffer_full(self) -> bool:
        """Whether the listener holds more messages or bytes than it ever should (paho's network thread asks).

        Receive Maximum keeps a broker from sending more, unacknowledged; when one sends more
        anyway (or fewer, larger messages fill the byte bound), the rest waits in the socket and
        the broker instead of in this process's memory.
        """
        buffered = len(self._inbox) + len(self._chunker)
        nbytes = self._bytes_received - self._bytes_drained + self._chunker.bytes
        # As many as Receive Maximum allows: no hold, PINGRESPs read.
        if buffered <= self._max_buffered and nbytes <= self._max_buffered_bytes:
            return False
        metrics.BUFFERED.set(buffered)  # the loop may be busy retrying Redis: say it from here
        metrics.BUFFERED_BYTES.set(nbytes)
        now = time.monotonic()
        if now - self._hold_logged_at >= HOLD_LOG_EVERY_S:
            self._hold_logged_at = now
            log.info("%d messages (%d bytes) wait to be enqueued, more than the listener holds (%d messages "
                     "or %d bytes): reading from the broker pauses until chunks go out (a broker keeping to "
                     "Receive Maximum never sends this many unacknowledged; QoS 0 messages have no such limit)",
                     buffered, nbytes, self._max_buffered, self._max_buffered_bytes)
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        self.subscriber.start()
        try:
            while not self._stopping.is_set():
                self._wake.wait(self._seconds_until_due())
                self._wake.clear()
                self._follow_reconnect()
                self._drain_inbox()
                while not self._held() and (chunk := self._chunker.take_due(time.monotonic())) is not None:
                    self._send_and_ack(chunk)
                self._maybe_resend_lost()
            self._release_awaiting()
            self._drain_inbox()
            if len(self._chunker):
                log.info("stopping: sending the last %d buffered messages", len(self._chunker))
                self._send_and_ack(self._chunker.take_all())
        finally:
            self.subscriber.stop()
        log.info("listener stopped after %d chunks", self.chunks_sent)

    def _held(self) -> bool:
        """Nothing is sent while MQTT is disconnected or Redis holds too much (`QueueGate`)."""
        return not self.subscriber.connected.is_set() or self._gate.check(time.monotonic())

    def _seconds_until_due(self) -> float:
        deadline = self._chunker.deadline()
        if deadline is None or self._gate.full or not self.subscriber.connected.is_set():
            return IDLE_WAKE_S
        return max(0.0, min(IDLE_WAKE_S, deadline - time.monotonic()))

    def _drain_inbox(self) -> None:
        now = time.monotonic()
        if self._awaiting and now >= self._awaiting_until:
            self._release_awaiting()
        n = nbytes = 0
        while self._inbox:
            delivery = self._inbox.popleft()
            if self._awaiting:
                self._awaiting.pop(redelivery_key(delivery), None)  # the broker's copy replaces ours
            self._chunker.add(delivery, now, delivery.size)
            n += 1
            nbytes += delivery.size
        if n:
            self._bytes_drained += nbytes
            metrics.RECEIVED.inc(n)
        metrics.BUFFERED.set(len(self._chunker) + len(self._awaiting))
        metrics.BUFFERED_BYTES.set(self._chunker.bytes)

    def _follow_reconnect(self) -> None:
        """After a reconnect that resumed the session, hold back what the old connection delivered."""
        generation = self.subscriber.generation
        if generation == self._generation:
            return
        self._generation = generation
        if not self.subscriber.session_present:
            return  # nothing will be resent: the old deliveries go out unacknowledged
        old = self._chunker.take_out(lambda d: d.generation != generation)
        self.subscriber.resume_reads()
        self._awaiting.update((redelivery_key(d), d) for d in old)
        self._awaiting_until = time.monotonic() + REDELIVERY_WAIT_S
        if old:
            log.info("mqtt session resumed: %d buffered messages wait for the broker's copy", len(old))

    def _release_awaiting(self) -> None:
        if not self._awaiting:
            return
        log.warning("%d messages were not resent after the reconnect; sending them unacknowledged",
                    len(self._awaiting))
        now = time.monotonic()
        for delivery in self._awaiting.values():
            self._chunker.add(delivery, now, delivery.size)
        self._awaiting.clear()

    def _send_and_ack(self, deliveries: list[Delivery]) -> None:
        chunk_id = new_chunk_id()
        wire = to_wire(deliveries)
        if not self._send(chunk_id, wire):
            return
        acked = self.subscriber.ack_all(deliveries)
        self.subscriber.resume_reads()
        self.chunks_sent += 1
        self._gate.sent(sum(d.size for d in deliveries))
        metrics.CHUNKS_ENQUEUED.inc()
        metrics.BATCH_SIZE.observe(len(deliveries))
        log.debug("chunk %s: sent messages=%d acked=%d", chunk_id, len(deliveries), acked)

    def _maybe_resend_lost(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < LEDGER_SWEEP_S:
            return
        self._swept_at = now
        try:
            lost = self._ledger.lost(time.time() - self._resend_after_s, QUEUE)
            for chunk_id, wire in lost:
                log.warning("chunk %s: lost between Redis and a worker (%d messages); sending it again",
                            chunk_id, len(wire))
                self._enqueue(chunk_id, wire)
                metrics.CHUNKS_RESENT.inc()
                if self._ledger.sent_again(chunk_id, time.time()) >= MAX_RESENDS:
                    log.error("chunk %s: sent again %d times and never stored; see the worker's log for the error. "
                              "It is not sent again and stays in Redis (%s)", chunk_id, MAX_RESENDS, BODY)
        except (OperationalError, RedisError, OSError) as exc:
            log.warning("cannot search the ledger for lost chunks: %s", exc)

    def _enqueue(self, chunk_id: str, wire: list[list[object]]) -> None:
        # The task id is the chunk id: the ledger finds a chunk in the queue by it.
        self._app.send_task(TASK_NAME, args=(chunk_id, wire), queue=QUEUE, retry=False, task_id=chunk_id,
                            argsrepr=args_summary(chunk_id, wire))

    def _send(self, chunk_id: str, wire: list[list[object]]) -> bool:
        """Record and enqueue until Redis accepts; False only if asked to stop while Redis is away."""
        backoff = SEND_BACKOFF_MIN_S
        while True:
            try:
                self._ledger.record(chunk_id, wire, time.time())
                self._enqueue(chunk_id, wire)
                return True
            except (OperationalError, RedisError, OSError) as exc:
                metrics.ENQUEUE_FAILURES.inc()
                if self._stopping.is_set() and backoff >= SEND_BACKOFF_MAX_S:
                    log.error("chunk %s: Redis still unreachable at shutdown; its %d messages stay "
                              "unacknowledged with the broker", chunk_id, len(wire))
                    return False
                log.warning("chunk %s: Redis unreachable (%s); retrying in %.1f s", chunk_id, exc, backoff)
                time.sleep(backoff)
                backoff = min(SEND_BACKOFF_MAX_S, backoff * 2)
