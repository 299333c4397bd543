"""Grouping messages into chunks: by size, or by the age of the oldest. Pure; `now` is passed in.

The policy is a frozen value; the state (what is waiting) is a separate mutable object, so tests
are tables of timestamps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ChunkPolicy:
    max_size: int  # messages
    max_age_s: float  # how long the oldest message may wait

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_age_s <= 0:
            raise ValueError(f"invalid chunk policy {self}")


class Chunker(Generic[T]):
    """Messages waiting to be sent, in arrival order."""

    def __init__(self, policy: ChunkPolicy) -> None:
        self.policy = policy
        self._items: list[T] = []
        self._arrived: list[float] = []  # arrival time of each waiting item

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        self._items.append(item)
        self._arrived.append(now)

    def deadline(self) -> float | None:
        """When the waiting messages become due by age; None when nothing waits."""
        return self._arrived[0] + self.policy.max_age_s if self._arrived else None

    def take_due(self, now: float) -> list[T] | None:
        """The next chunk if one is due (full, or its oldest is old enough), else None."""
        if len(self._items) >= self.policy.max_size:
            return self._take(self.policy.max_size)
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self.take_all()
        return None

    def take_out(self, chosen: Callable[[T], bool]) -> list[T]:
        """Remove the waiting items `chosen` selects; the others keep their place and arrival time."""
        taken = [item for item in self._items if chosen(item)]
        kept = [(item, at) for item, at in zip(self._items, self._arrived, strict=True) if not chosen(item)]
        self._items = [item for item, _ in kept]
        self._arrived = [at for _, at in kept]
        return taken

    def take_all(self) -> list[T]:
        return self._take(len(self._items))

    def _take(self, count: int) -> list[T]:
        chunk = self._items[:count]
        del self._items[:count], self._arrived[:count]
        return chunk
