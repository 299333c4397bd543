"""Deliveries handed over by paho's network thread, waiting for the listener's loop to take them.

The network thread only appends (`put`); the loop takes everything at once (`take`). No lock on
the hot path: `deque.append` and `popleft` are atomic, and the inbox's bytes are two counters,
each written by one thread only, so no update is lost. The loop is woken as soon as a full
chunk's worth waits; otherwise it looks on its own schedule.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    @property
    def size(self) -> int: ...  # bytes of payload and topic


D = TypeVar("D", bound=Sized)


class Inbox(Generic[D]):
    def __init__(self, wake_at: int) -> None:
        self._items: deque[D] = deque()
        self._wake_at = wake_at  # messages that make a full chunk
        self._bytes_put = 0  # paho's network thread
        self._bytes_taken = 0  # the loop
        self.wake = threading.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes_put - self._bytes_taken

    def put(self, item: D) -> None:
        self._items.append(item)
        self._bytes_put += item.size
        if len(self._items) >= self._wake_at:
            self.wake.set()

    def take(self) -> list[D]:
        """Everything waiting, oldest first."""
        items = self._items
        taken = [items.popleft() for _ in range(len(items))]
        self._bytes_taken += sum(item.size for item in taken)
        return taken
