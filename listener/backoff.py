"""The listener's one backoff policy: how long to wait before trying Redis again. Pure.

Every retry loop of the listener uses it (sending a chunk, searching the ledger for lost ones):
the wait doubles from `first_s` after each failure in a row, up to `cap_s`. There is no retry
budget and no jitter, unlike the worker's `ingest_tasks.retry.RetryPolicy`: the listener never
gives a chunk up (while Redis is away its messages simply stay unacknowledged with the broker),
and it is one process, not a pool whose retries should spread out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first_s: float  # the wait after the first failure
    cap_s: float  # no wait is longer than this

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.cap_s < math.inf:
            raise ValueError(f"invalid backoff {self}")

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row (1 for the first)."""
        # 2.0**n raises OverflowError past 1023; long before that the wait is at its cap.
        return min(self.cap_s, self.first_s * 2.0 ** min(max(failures, 1) - 1, 1023))

    def at_cap(self, failures: int) -> bool:
        return self.delay(failures) >= self.cap_s


REDIS_RETRY = Backoff(first_s=0.1, cap_s=5.0)  # every retry of Redis by the listener
