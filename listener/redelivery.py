"""The redelivery gate: after a reconnect that resumed the session, old deliveries wait for the broker's copy.

A message can only be acknowledged on the connection that delivered it, and a broker that kept
the session delivers every unacknowledged message again. So when the session is resumed, the
messages of earlier connections still waiting to be sent are taken out of the chunker and held
here; each copy the broker sends again replaces its old one (which is dropped), and those it has
not sent again within `wait_s` go back to the chunker, to be sent unacknowledged. When the
session was not resumed nothing will be resent: the old deliveries stay where they are. Pure;
`now` is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from listener.chunker import Chunker

log = logging.getLogger(__name__)


class Redeliverable(Protocol):
    @property
    def mid(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def generation(self) -> int: ...  # which connection delivered it
    @property
    def size(self) -> int: ...


D = TypeVar("D", bound=Redeliverable)
RedeliveryKey = tuple[int, str, bytes]


@dataclass(frozen=True)
class RedeliveryPolicy:
    wait_s: float = 5.0  # how long old deliveries wait for the broker's copy


def redelivery_key(d: Redeliverable) -> RedeliveryKey:
    # A broker resends an unacknowledged message of a resumed session with its packet id.
    return (d.mid, d.topic, d.payload)


class RedeliveryGate(Generic[D]):
    def __init__(self, policy: RedeliveryPolicy) -> None:
        self.policy = policy
        self._generation = 0  # the MQTT connection last seen
        self._awaiting: dict[RedeliveryKey, D] = {}
        self._until = 0.0

    def __len__(self) -> int:
        return len(self._awaiting)

    def follow(self, generation: int, session_present: bool, chunker: Chunker[D], now: float) -> bool:
        """Note the current connection; True when it is a new one that resumed the session."""
        if generation == self._generation:
            return False
        self._generation = generation
        if not session_present:
            return False
        old = chunker.take_out(lambda d: d.generation != generation)
        self._awaiting.update((redelivery_key(d), d) for d in old)
        self._until = now + self.policy.wait_s
        if old:
            log.info("mqtt session resumed: %d buffered messages wait for the broker's copy", len(old))
        return True

    def replace(self, deliveries: Iterable[D]) -> None:
        """New deliveries arrived: those that are the broker's copy of a held one replace it."""
        if self._awaiting:
            for d in deliveries:
                self._awaiting.pop(redelivery_key(d), None)

    def release_due(self, chunker: Chunker[D], now: float) -> None:
        """Past the wait, what the broker did not send again goes back to the chunker."""
        if self._awaiting and now >= self._until:
            self.release(chunker, now)

    def release(self, chunker: Chunker[D], now: float) -> None:
        if not self._awaiting:
            return
        log.warning("%d messages were not resent after the reconnect; sending them unacknowledged",
                    len(self._awaiting))
        for d in self._awaiting.values():
            chunker.add(d, now, d.size)
        self._awaiting.clear()
