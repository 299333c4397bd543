"""Retry policy: data that validates itself, and the one place that decides retry or give up."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int  # retries after the first attempt
    base_s: float  # the first retry's countdown before jitter
    cap_s: float  # no countdown is longer than this

    def __post_init__(self) -> None:
        if self.max_retries < 0 or not 0 < self.base_s <= self.cap_s < math.inf:
            raise ValueError(f"invalid retry policy {self}")

    def exhausted(self, retries_done: int) -> bool:
        return retries_done >= self.max_retries

    def countdown(self, retries_done: int, rand: float) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random (`rand` in [0, 1))."""
        ceiling = self._ceiling(retries_done)
        return ceiling / 2 + ceiling / 2 * rand

    def budget_s(self) -> float:
        """The longest an outage can last before a chunk is given up (jitter at its shortest)."""
        return sum(self._ceiling(n) / 2 for n in range(self.max_retries))

    def _ceiling(self, retries_done: int) -> float:
        # 2.0**n raises OverflowError past 1023; by then every realistic policy is at its cap.
        return min(self.cap_s, self.base_s * 2.0 ** min(retries_done, 1023))
