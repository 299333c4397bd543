"""The listener's loop: deliveries in, one Celery task per chunk out, MQTT acks after the enqueue.

Each step is its own module, with its policy as data and the clock passed in; this loop only
composes them, in the order a message meets them:

    inbox         paho's network thread hands deliveries over (`listener.inbox`)
    read hold     paho stops reading while the listener holds too much (`listener.read_hold`)
    redelivery    after a resumed session, old deliveries wait for the broker's copy (`listener.redelivery`)
    chunker       deliveries grouped by count, bytes or age (`listener.chunker`)
    backpressure  nothing is sent while Redis holds too much (`listener.backpressure`)
    sender        ledger + one Celery task per chunk, retried until Redis takes it (`listener.sender`)
    acks          the chunk's messages acknowledged, in arrival order, only after the send
    sweeper       chunks a worker lost are sent again (`listener.sweeper`)

A crash at any point therefore leaves every unacknowledged message with the broker, which
delivers it again. While the MQTT connection is down nothing is sent: a message can only be
acknowledged on the connection that delivered it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ingest_tasks.envelope import new_chunk_id, to_wire
from listener import metrics
from listener.backpressure import QueueGate
from listener.chunker import Chunker
from listener.inbox import Inbox
from listener.mqtt import Delivery, Subscriber
from listener.read_hold import HoldPolicy, ReadHold
from listener.redelivery import RedeliveryGate, RedeliveryPolicy
from listener.sender import ChunkSender
from listener.sweeper import LostChunkSweeper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopPolicy:
    idle_wake_s: float = 0.05  # how often the loop looks at the clock when nothing is due


LOOP = LoopPolicy()
REDELIVERY = RedeliveryPolicy()


def seconds_until_due(deadline: float | None, now: float, held: bool, idle_wake_s: float) -> float:
    """How long the loop may sleep: until the oldest message is due, at most `idle_wake_s`."""
    if deadline is None or held:
        return idle_wake_s
    return max(0.0, min(idle_wake_s, deadline - now))


class Listener:
    def __init__(self, subscriber_factory: Callable[[Callable[[Delivery], None]], Subscriber],
                 chunker: Chunker[Delivery], gate: QueueGate, sender: ChunkSender, sweeper: LostChunkSweeper, *,
                 hold: HoldPolicy, stopping: threading.Event, clock: Callable[[], float],
                 redelivery: RedeliveryPolicy = REDELIVERY, policy: LoopPolicy = LOOP) -> None:
        self._chunker = chunker
        self._gate = gate
        self._sender = sender
        self._sweeper = sweeper
        self._stopping = stopping
        self._clock = clock
        self._policy = policy
        self._inbox: Inbox[Delivery] = Inbox(chunker.policy.max_size)
        self._redelivery: RedeliveryGate[Delivery] = RedeliveryGate(redelivery)
        self.subscriber = subscriber_factory(self._inbox.put)
        self.subscriber.hold_reads_while(ReadHold(hold, self._buffered, clock))
        self.chunks_sent = 0

    def _buffered(self) -> tuple[int, int]:
        """Messages and bytes held between the socket and Redis (paho's network thread asks)."""
        return len(self._inbox) + len(self._chunker), self._inbox.bytes + self._chunker.bytes

    def stop(self) -> None:
        self._stopping.set()
        self._inbox.wake.set()

    def run(self) -> None:
        self.subscriber.start()
        try:
            while not self._stopping.is_set():
                self._inbox.wake.wait(self._wait_s())
                self._inbox.wake.clear()
                self._step()
            self._flush()
        finally:
            self.subscriber.stop()
        log.info("listener stopped after %d chunks", self.chunks_sent)

    def _step(self) -> None:
        sub = self.subscriber
        if self._redelivery.follow(sub.generation, sub.session_present, self._chunker, self._clock()):
            sub.resume_reads()
        self._drain()
        while not self._held() and (chunk := self._chunker.take_due(self._clock())) is not None:
            self._send_and_ack(chunk)
        self._sweeper.sweep_if_due(self._clock())

    def _flush(self) -> None:
        self._redelivery.release(self._chunker, self._clock())
        self._drain()
        if len(self._chunker):
            log.info("stopping: sending the last %d buffered messages", len(self._chunker))
            self._send_and_ack(self._chunker.take_all())

    def _held(self) -> bool:
        """Nothing is sent while MQTT is disconnected or Redis holds too much (`QueueGate`)."""
        return not self.subscriber.connected.is_set() or self._gate.check(self._clock())

    def _wait_s(self) -> float:
        held = self._gate.full or not self.subscriber.connected.is_set()
        return seconds_until_due(self._chunker.deadline(), self._clock(), held, self._policy.idle_wake_s)

    def _drain(self) -> None:
        now = self._clock()
        self._redelivery.release_due(self._chunker, now)
        taken = self._inbox.take()
        if taken:
            self._redelivery.replace(taken)
            add = self._chunker.add
            for delivery in taken:
                add(delivery, now, delivery.size)
            metrics.RECEIVED.inc(len(taken))
        metrics.BUFFERED.set(len(self._chunker) + len(self._redelivery))
        metrics.BUFFERED_BYTES.set(self._chunker.bytes)

    def _send_and_ack(self, deliveries: list[Delivery]) -> None:
        chunk_id = new_chunk_id()
        if not self._sender.send(chunk_id, to_wire(deliveries)):
            return
        acked = self.subscriber.ack_all(deliveries)
        self.subscriber.resume_reads()
        self.chunks_sent += 1
        self._gate.sent(sum(d.size for d in deliveries))
        metrics.CHUNKS_ENQUEUED.inc()
        metrics.BATCH_SIZE.observe(len(deliveries))
        log.debug("chunk %s: sent messages=%d acked=%d", chunk_id, len(deliveries), acked)
