"""The event-loop lag probe: how late a periodic timer fires, for the metrics and for
admission control."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from .registry import RelayMetrics


class LoopLagProbe:
    """Measures event-loop lag: how late a periodic timer fires.

    One owner starts it once and awaits :meth:`close` (idempotent)."""

    def __init__(self, metrics: RelayMetrics, interval_secs: float = 0.5) -> None:
        self._metrics = metrics
        self._interval = interval_secs
        self._task: asyncio.Task[None] | None = None
        self._recent: collections.deque[tuple[float, float]] = collections.deque()

    def sustained_lag_secs(self, window_secs: float = 2.0) -> float:
        """The median lag of the last ``window_secs``: admission control reads it. A
        saturated loop lags on every probe; a burst of call set-ups only on a few, and
        must not turn away the burst's own calls."""
        now = time.monotonic()
        lags = sorted(lag for t, lag in self._recent if now - t <= window_secs)
        return lags[len(lags) // 2] if lags else 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="loop-lag-probe")

    async def run(self) -> None:
        """Sleep ``interval`` repeatedly and observe how much later than asked we woke."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - expected)
            self._metrics.event_loop_lag_seconds.observe(lag)
            self._recent.append((time.monotonic(), lag))
            while len(self._recent) > 64:
                self._recent.popleft()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
