"""RedeliveryGate: after a reconnect that resumed the session, messages of the old connection wait
for the broker's copy (which replaces them) for wait_s, then go out anyway. The clock is passed in."""

from __future__ import annotations

from listener.chunker import Chunker, ChunkPolicy
from listener.mqtt import Delivery
from listener.redelivery import RedeliveryGate, RedeliveryPolicy

POLICY = RedeliveryPolicy(wait_s=5.0)


def delivery(mid: int, generation: int, payload: bytes = b"{}") -> Delivery:
    return Delivery("traksense/t/s/d/telem", payload, 0.0, mid, 1, generation, 21 + len(payload))


def chunker_with(*deliveries: Delivery) -> Chunker[Delivery]:
    chunker: Chunker[Delivery] = Chunker(ChunkPolicy(100, 1.0, 1_000_000))
    for d in deliveries:
        chunker.add(d, 0.0, d.size)
    return chunker


def test_a_resumed_session_holds_the_old_connections_messages_until_the_broker_resends_them() -> None:
    gate: RedeliveryGate[Delivery] = RedeliveryGate(POLICY)
    old, new = delivery(1, generation=1), delivery(9, generation=2)
    chunker = chunker_with(old, new)
    assert gate.follow(generation=1, session_present=False, chunker=chunker, now=0.0) is False  # first connect
    assert gate.follow(generation=2, session_present=True, chunker=chunker, now=10.0) is True
    assert chunker.take_all() == [new] and len(gate) == 1

    copy = delivery(1, generation=2)  # the broker's copy of `old`, on the new connection
    gate.replace([copy])
    assert len(gate) == 0
    gate.release_due(chunker, now=99.0)
    assert len(chunker) == 0  # `old` was dropped: only the copy (acknowledgeable) is sent


def test_what_the_broker_does_not_resend_within_the_wait_goes_out_anyway() -> None:
    gate: RedeliveryGate[Delivery] = RedeliveryGate(POLICY)
    chunker = chunker_with(delivery(1, generation=1), delivery(2, generation=1))
    gate.follow(generation=2, session_present=True, chunker=chunker, now=10.0)
    gate.replace([delivery(3, generation=2)])  # a new message, not a copy
    gate.release_due(chunker, now=14.9)
    assert len(chunker) == 0 and len(gate) == 2
    gate.release_due(chunker, now=15.0)
    assert [d.mid for d in chunker.take_all()] == [1, 2] and len(gate) == 0


def test_a_session_not_resumed_leaves_the_old_messages_to_be_sent() -> None:
    gate: RedeliveryGate[Delivery] = RedeliveryGate(POLICY)
    chunker = chunker_with(delivery(1, generation=1))
    assert gate.follow(generation=2, session_present=False, chunker=chunker, now=10.0) is False
    assert len(chunker) == 1 and len(gate) == 0


def test_the_same_connection_seen_again_changes_nothing() -> None:
    gate: RedeliveryGate[Delivery] = RedeliveryGate(POLICY)
    chunker = chunker_with(delivery(1, generation=1))
    gate.follow(generation=2, session_present=True, chunker=chunker, now=10.0)
    assert gate.follow(generation=2, session_present=True, chunker=chunker, now=11.0) is False
    assert len(gate) == 1


def test_at_shutdown_every_held_message_is_released() -> None:
    gate: RedeliveryGate[Delivery] = RedeliveryGate(POLICY)
    chunker = chunker_with(delivery(1, generation=1))
    gate.follow(generation=2, session_present=True, chunker=chunker, now=10.0)
    gate.release(chunker, now=10.5)
    assert [d.mid for d in chunker.take_all()] == [1]
