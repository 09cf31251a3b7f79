"""The one bounded queue of the relay: drop-oldest, and the producer never waits.

Used wherever a live stream on the event loop meets a consumer that may fall behind
(outgoing media tracks, monitor subscriptions): for live audio and live
events, late is worse than lost, so when the queue is full the oldest item goes and is
counted. ``get`` returns ``None`` once the queue is closed and drained."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded FIFO that drops its oldest item when full; never blocks the producer."""

    def __init__(self, max_items: int, on_drop: Callable[[], None] | None = None) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._max = max_items
        self._on_drop = on_drop
        self._ready = asyncio.Event()
        self._unreported_drops = 0
        self.dropped = 0
        self.closed = False

    def put(self, item: T) -> None:
        if self.closed:
            return
        if len(self._items) >= self._max:
            self._items.popleft()
            self.dropped += 1
            self._unreported_drops += 1
            if self._on_drop is not None:
                self._on_drop()
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        """No more items; ``get`` drains what is queued, then returns ``None``."""
        self.closed = True
        self._ready.set()

    async def get(self) -> T | None:
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def take_drops(self) -> int:
        """Items dropped since the last call (so a subscriber can be told)."""
        count, self._unreported_drops = self._unreported_drops, 0
        return count

    def __len__(self) -> int:
        return len(self._items)
