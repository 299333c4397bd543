"""The read hold: whether the listener holds more than it ever should, so paho stops reading.

Receive Maximum keeps a broker from sending more than `max_messages` unacknowledged; when one
sends more anyway (QoS 0 has no such limit), or fewer, larger messages fill `max_bytes`, the
rest waits in the socket and the broker instead of in this process's memory. paho's network
thread asks before each read; the clock is passed in (it only spaces out the log line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from listener import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HoldPolicy:
    max_messages: int  # the most the listener holds: Receive Maximum
    max_bytes: int  # ... and their bytes (payload + topic)
    log_every_s: float = 60.0  # at most one log line this often about held reads


class ReadHold:
    def __init__(self, policy: HoldPolicy, buffered: Callable[[], tuple[int, int]], clock: Callable[[], float]) -> None:
        self.policy = policy
        self._buffered = buffered  # (messages, bytes) the listener holds now
        self._clock = clock
        self._logged_at: float | None = None

    def __call__(self) -> bool:
        """True while reads should wait: more than `max_messages` or `max_bytes` are held."""
        messages, nbytes = self._buffered()
        if messages <= self.policy.max_messages and nbytes <= self.policy.max_bytes:
            return False
        metrics.BUFFERED.set(messages)  # the loop may be busy retrying Redis: say it from here
        metrics.BUFFERED_BYTES.set(nbytes)
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self.policy.log_every_s:
            self._logged_at = now
            log.info("%d messages (%d bytes) wait to be enqueued, more than the listener holds (%d messages "
                     "or %d bytes): reading from the broker pauses until chunks go out (a broker keeping to "
                     "Receive Maximum never sends this many unacknowledged; QoS 0 messages have no such limit)",
                     messages, nbytes, self.policy.max_messages, self.policy.max_bytes)
        return True
