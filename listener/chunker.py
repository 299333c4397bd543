"""Grouping messages into chunks: by count, by bytes, or by the age of the oldest. Pure; `now` is passed in.

The policy is a frozen value; the state (what is waiting, and its bytes) is a separate mutable
object, so tests are tables of (size, bytes, time). Each item's bytes are given by the caller
(the listener counts payload + topic); the chunker never looks inside an item.

The oldest `staged` items are already safe elsewhere (`listener.staging`): always a prefix, since
items are only ever staged all at once, and a chunk is a prefix too; `take_out` never takes them.
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
    max_bytes: int  # of a chunk's messages together; one larger message goes alone

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_age_s <= 0 or self.max_bytes < 1:
            raise ValueError(f"invalid chunk policy {self}")


class Chunker(Generic[T]):
    """Messages waiting to be sent, in arrival order, with their bytes."""

    def __init__(self, policy: ChunkPolicy) -> None:
        self.policy = policy
        self._items: list[T] = []
        self._arrived: list[float] = []  # arrival time of each waiting item
        self._sizes: list[int] = []  # bytes of each waiting item
        self.bytes = 0  # of all waiting items
        self.staged = 0  # the oldest this many items are staged
        self.taken_staged = 0  # how many of the last chunk taken were staged

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float, nbytes: int) -> None:
        self._items.append(item)
        self._arrived.append(now)
        self._sizes.append(nbytes)
        self.bytes += nbytes

    def deadline(self) -> float | None:
        """When the waiting messages become due by age; None when nothing waits."""
        return self._arrived[0] + self.policy.max_age_s if self._arrived else None

    def take_due(self, now: float) -> list[T] | None:
        """The next chunk if one is due (full by count or bytes, or its oldest is old enough), else None.

        A chunk full by bytes holds the most messages that stay within `max_bytes` (at least one):
        so a chunk is never larger than `max_bytes` or its one largest message.
        """
        if len(self._items) >= self.policy.max_size or self.bytes >= self.policy.max_bytes:
            return self._take(self._fitting())
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self.take_all()
        return None

    def take_out(self, chosen: Callable[[T], bool]) -> list[T]:
        """Remove the unstaged items `chosen` selects; the others keep their place and arrival time."""
        s = self.staged
        rows = list(zip(self._items[s:], self._arrived[s:], self._sizes[s:], strict=True))
        taken = [item for item, _, _ in rows if chosen(item)]
        kept = [row for row in rows if not chosen(row[0])]
        self._items[s:] = [item for item, _, _ in kept]
        self._arrived[s:] = [at for _, at, _ in kept]
        self._sizes[s:] = [size for _, _, size in kept]
        self.bytes = sum(self._sizes)
        return taken

    def unstaged(self) -> list[T]:
        """The waiting items not staged yet, oldest first."""
        return self._items[self.staged:]

    def mark_staged(self) -> None:
        """Every waiting item is staged now."""
        self.staged = len(self._items)

    def take_all(self) -> list[T]:
        return self._take(len(self._items))

    def _fitting(self) -> int:
        """How many of the oldest messages make one chunk within both limits (at least one)."""
        total = 0
        for count, size in enumerate(self._sizes[:self.policy.max_size]):
            total += size
            if total > self.policy.max_bytes:
                return max(1, count)
        return min(len(self._items), self.policy.max_size)

    def _take(self, count: int) -> list[T]:
        chunk = self._items[:count]
        self.taken_staged = min(self.staged, count)
        self.staged -= self.taken_staged
        self.bytes -= sum(self._sizes[:count])
        del self._items[:count], self._arrived[:count], self._sizes[:count]
        return chunk
