"""The listener's loop: deliveries in, one Celery task per chunk out, MQTT acks after the enqueue.

Each step is its own module, with its policy as data and the clock passed in; this loop only
composes them, in the order a message meets them:

    inbox         paho's network thread hands deliveries over (`listener.inbox`)
    read hold     paho stops reading while the listener holds too much (`listener.read_hold`)
    redelivery    after a resumed session, old deliveries wait for the broker's copy (`listener.redelivery`)
    chunker       deliveries grouped by count, bytes or age (`listener.chunker`)
    staging       when the broker waits for acks, the held messages made safe in Redis and acked (`listener.staging`)
    backpressure  nothing is sent while Redis holds too much (`listener.backpressure`)
    sender        ledger + one Celery task per chunk, retried until Redis takes it (`listener.sender`)
    acks          the chunk's messages acknowledged, in arrival order, only after the send
    sweeper       chunks a worker lost are sent again (`listener.sweeper`)

A crash at any point therefore leaves every message unacknowledged with the broker (which
delivers it again), staged (sent at the next start, before subscribing), or recorded in the
ledger. While the MQTT connection is down nothing is sent or staged: a message can only be
acknowledged on the connection that delivered it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest_tasks.envelope import new_chunk_id, to_wire
from listener import metrics
from listener.backpressure import QueueGate
from listener.chunker import Chunker
from listener.inbox import Inbox
from listener.ledger import Wire
from listener.mqtt import Delivery, Subscriber
from listener.read_hold import HoldPolicy, ReadHold
from listener.redelivery import RedeliveryGate, RedeliveryPolicy
from listener.sender import REDIS_ERRORS, ChunkSender
from listener.staging import StagingPolicy, StagingTrigger
from listener.sweeper import LostChunkSweeper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopPolicy:
    idle_wake_s: float = 0.05  # how often the loop looks at the clock when nothing is due


LOOP = LoopPolicy()
REDELIVERY = RedeliveryPolicy()
STAGING = StagingPolicy()


class Stager(Protocol):
    """Where staged messages wait (`listener.ledger.StagedMessages`)."""

    def stage(self, wire: Sequence[Sequence[object]]) -> None: ...
    def left_over(self) -> tuple[int, Wire]: ...


def seconds_until_due(deadline: float | None, now: float, held: bool, idle_wake_s: float) -> float:
    """How long the loop may sleep: until the oldest message is due, at most `idle_wake_s`."""
    if deadline is None or held:
        return idle_wake_s
    return max(0.0, min(idle_wake_s, deadline - now))


class Listener:
    def __init__(self, subscriber_factory: Callable[[Callable[[Delivery], None]], Subscriber],
                 chunker: Chunker[Delivery], gate: QueueGate, sender: ChunkSender, sweeper: LostChunkSweeper, *,
                 hold: HoldPolicy, stopping: threading.Event, clock: Callable[[], float],
                 redelivery: RedeliveryPolicy = REDELIVERY, policy: LoopPolicy = LOOP,
                 staged: Stager | None = None, staging: StagingPolicy = STAGING) -> None:
        self._chunker = chunker
        self._staged = staged
        self._trigger = StagingTrigger(staging, chunker.policy.max_size)
        self._staged_head = 0  # the number of the staged list's entry that the chunker's first staged item is
        self._stranded = False  # a chunk with staged messages could not be sent: send no later staged ones
        self._left_over_sent = False  # what a previous process staged: nothing is staged before it is sent
        self._left_over_retry_at = float("-inf")
        self._gate = gate
        self._sender = sender
        self._sweeper = sweeper
        self._stopping = stopping
        self._clock = clock
        self._policy = policy
        self._inbox: Inbox[Delivery] = Inbox(chunker.policy.max_size)
        self._redelivery: RedeliveryGate[Delivery] = RedeliveryGate(redelivery)
        self._wake_per_delivery = False  # paho's network thread reads it; only the loop writes it
        self.subscriber = subscriber_factory(self._deliver if staged is not None else self._inbox.put)
        self.subscriber.hold_reads_while(ReadHold(hold, self._buffered, clock))
        self.chunks_sent = 0

    def _deliver(self, delivery: Delivery) -> None:
        """paho's network thread hands a delivery over; near the broker's window it wakes the loop at once."""
        self._inbox.put(delivery)
        if self._wake_per_delivery:
            self._inbox.wake.set()

    def _buffered(self) -> tuple[int, int]:
        """Messages and bytes held between the socket and Redis (paho's network thread asks)."""
        return len(self._inbox) + len(self._chunker), self._inbox.bytes + self._chunker.bytes

    def stop(self) -> None:
        self._stopping.set()
        self._inbox.wake.set()

    def run(self) -> None:
        self._send_left_over()
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
        self._trigger.follow(sub.generation)
        self._send_left_over()
        self._drain()
        self._stage_if_due()
        while not self._held() and (chunk := self._chunker.take_due(self._clock())) is not None:
            self._send_and_ack(chunk, self._chunker.taken_staged)
        self._sweeper.sweep_if_due(self._clock())

    def _flush(self) -> None:
        self._redelivery.release(self._chunker, self._clock())
        self._drain()
        if len(self._chunker):
            log.info("stopping: sending the last %d buffered messages", len(self._chunker))
            self._send_and_ack(self._chunker.take_all(), self._chunker.taken_staged)

    def _send_left_over(self) -> None:
        """Send what a previous process staged and never sent, before anything is staged again.

        While Redis is away the listener runs without staging, and looks again at each step."""
        if self._staged is None or self._left_over_sent or self._clock() < self._left_over_retry_at:
            return
        try:
            head, wire = self._staged.left_over()
        except REDIS_ERRORS as exc:
            self._left_over_retry_at = self._clock() + self._trigger.policy.retry_after_s
            log.warning("cannot read the staged messages a previous listener left (%s); looking again soon", exc)
            return
        self._staged_head, self._left_over_sent = head, True
        if wire:
            log.warning("sending %d messages a previous listener staged and did not send", len(wire))
        size = self._chunker.policy.max_size
        for start in range(0, len(wire), size):
            part = wire[start:start + size]
            if not self._sender.send(new_chunk_id(), part, self._staged_head + len(part)):
                self._stranded = True
                return
            self._staged_head += len(part)
            self._gate.sent(sum(len(m[0]) + len(m[1]) for m in part))

    def _held(self) -> bool:
        """Nothing is sent while MQTT is disconnected or Redis holds too much (`QueueGate`)."""
        return not self.subscriber.connected.is_set() or self._gate.check(self._clock())

    def _wait_s(self) -> float:
        held = self._gate.full or not self.subscriber.connected.is_set()
        now = self._clock()
        wait = seconds_until_due(self._chunker.deadline(), now, held, self._policy.idle_wake_s)
        if self._staged is None or held or not self._trigger.active:
            self._wake_per_delivery = False
            return wait
        unacked = self._unacked()
        self._wake_per_delivery = self._trigger.wake_per_delivery(unacked)
        soon = self._trigger.wait_s(unacked, now)
        return wait if soon is None else min(wait, soon)

    def _unacked(self) -> int:
        """Messages held unacknowledged on the current connection (the broker counts them against its window)."""
        generation = self.subscriber.generation
        return sum(1 for d in self._chunker.unstaged() if d.qos and d.generation == generation)

    def _stage_if_due(self) -> None:
        """Stage every unstaged message held and acknowledge them, when the broker waits for acks."""
        if self._staged is None or not self._trigger.active or not self._left_over_sent:
            return
        now = self._clock()
        if not self._trigger.due(self._unacked(), now) or self._held():
            return
        pending = self._chunker.unstaged()
        try:
            self._staged.stage(to_wire(pending))
        except REDIS_ERRORS as exc:
            self._trigger.failed(now)
            log.warning("cannot stage %d messages (%s): they wait for their chunk", len(pending), exc)
            return
        self._chunker.mark_staged()
        self.subscriber.ack_all(pending)
        self._trigger.staged()
        metrics.STAGED.inc(len(pending))

    def _drain(self) -> None:
        now = self._clock()
        self._redelivery.release_due(self._chunker, now)
        taken = self._inbox.take()
        if taken:
            self._redelivery.replace(taken)
            self._trigger.arrived(now)
            add = self._chunker.add
            for delivery in taken:
                add(delivery, now, delivery.size)
            metrics.RECEIVED.inc(len(taken))
        metrics.BUFFERED.set(len(self._chunker) + len(self._redelivery))
        metrics.BUFFERED_BYTES.set(self._chunker.bytes)

    def _send_and_ack(self, deliveries: list[Delivery], staged: int) -> None:
        """Send a chunk whose first `staged` messages are staged (already acknowledged), then ack the rest."""
        if staged and self._stranded:
            return  # its staged messages wait in Redis for the next start; the others with the broker
        chunk_id = new_chunk_id()
        if not self._sender.send(chunk_id, to_wire(deliveries), self._staged_head + staged if staged else 0):
            self._stranded = self._stranded or staged > 0
            return
        self._staged_head += staged
        acked = self.subscriber.ack_all(deliveries[staged:] if staged else deliveries)
        self.subscriber.resume_reads()
        self.chunks_sent += 1
        self._gate.sent(sum(d.size for d in deliveries))
        metrics.CHUNKS_ENQUEUED.inc()
        metrics.BATCH_SIZE.observe(len(deliveries))
        log.debug("chunk %s: sent messages=%d acked=%d", chunk_id, len(deliveries), acked)
