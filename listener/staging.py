"""When to stage: make the held unacknowledged messages safe in Redis and acknowledge them before their chunk goes out.

Some brokers send a session only a few unacknowledged QoS 1 messages, whatever Receive Maximum
says: ejabberd's mod_mqtt one, RabbitMQ's MQTT plugin `mqtt.prefetch` (10 by default). The
listener acknowledges a message once it is safe in Redis, and a chunk goes out when full or old
enough; so on such a broker every chunk would wait for its deadline holding a handful of
messages, and the broker's queue would overflow. When the broker has evidently stopped sending
because it waits for our acknowledgements, the listener stages instead: it appends every held
unstaged message to a Redis list in one command (`listener.ledger.StagedMessages`) and
acknowledges them at once. They stay in the chunker, which goes on building full chunks.

The evidence: this connection's window, the most unacknowledged messages it ever had us hold at
once, is reached, and no delivery came for `quiet_s`. A broker with a larger window (Mosquitto)
may look the same at a low rate; so every `probe_every` stagings (and first on every connection)
the trigger waits `probe_quiet_s` instead, and a broker that sends more meanwhile shows a larger
window. A probe that found a larger window is followed by another, so a broker that sends on
while we hold its messages (Mosquitto at any rate) soon shows a window of a full chunk, while one
that does not (ejabberd) costs two probes a connection. Once the window holds a full chunk
(`max_window`) nothing is staged again on that connection: chunks fill by themselves. Pure: the
clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

NEVER = float("-inf")


@dataclass(frozen=True)
class StagingPolicy:
    # No delivery for this long at the window: the broker waits for our acks. Each staging waits it
    # once (ejabberd: once a message), so it is as short as the loop's wait can be: 0.1 ms cost a
    # third of the rate there (1,474 against 2,430 messages/s, 4,000/s offered for 5 s on the test ejabberd).
    quiet_s: float = 0.00001
    probe_quiet_s: float = 0.005  # a probe waits this long, so that a broker with a larger window shows it
    probe_every: int = 1000  # stagings between two probes
    near: int = 32  # this close to the window, every delivery wakes the loop (a broker sends the rest at once)
    retry_after_s: float = 1.0  # after a failed staging (Redis away), the chunk's own send waits for Redis

    def __post_init__(self) -> None:
        if not 0 < self.quiet_s <= self.probe_quiet_s or self.probe_every < 1 or self.near < 1:
            raise ValueError(f"invalid staging policy {self}")


class StagingTrigger:
    """The broker's window on the current connection, and whether to stage now."""

    def __init__(self, policy: StagingPolicy, max_window: int) -> None:
        self.policy = policy
        self.max_window = max_window  # INGEST_BATCH_SIZE: a window this large fills chunks by itself
        self.generation = -1
        self.window = 0
        self.stagings = 0  # on this connection
        self._arrived_at = NEVER  # the last delivery
        self._not_before = NEVER
        self._window_at_staging = 0  # the window when the last staging was done
        self._probe_again = False  # the last staging was a probe that found a larger window

    @property
    def active(self) -> bool:
        return self.window < self.max_window

    def follow(self, generation: int) -> None:
        """A new connection has a window of its own, learnt again from nothing."""
        if generation != self.generation:
            self.generation, self.window, self.stagings = generation, 0, 0
            self._window_at_staging, self._probe_again = 0, False

    def arrived(self, now: float) -> None:
        self._arrived_at = now

    def due(self, unacked: int, now: float) -> bool:
        """Whether to stage the `unacked` messages held now (of this connection, not staged)."""
        self.window = max(self.window, unacked)
        if not unacked or not self.active or unacked < self.window or now < self._not_before:
            return False
        return now - self._arrived_at >= self._quiet_s()

    def staged(self) -> None:
        self._probe_again = self._probing() and self.window > self._window_at_staging
        self._window_at_staging = self.window
        self.stagings += 1

    def failed(self, now: float) -> None:
        self._not_before = now + self.policy.retry_after_s

    def wait_s(self, unacked: int, now: float) -> float | None:
        """How soon the loop should look again for the trigger's sake; None when it need not."""
        if not self.active or now < self._not_before or not unacked or unacked < self.window:
            return None
        return max(0.0, self._arrived_at + self._quiet_s() - now)

    def wake_per_delivery(self, unacked: int) -> bool:
        """Whether each delivery should wake the loop: the window is close, and its end is to be seen at once."""
        return self.active and self.window - unacked <= self.policy.near

    def _probing(self) -> bool:
        return self._probe_again or self.stagings % self.policy.probe_every == 0

    def _quiet_s(self) -> float:
        return self.policy.probe_quiet_s if self._probing() else self.policy.quiet_s
