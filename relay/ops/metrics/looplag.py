"""The event-loop probe: how late a periodic timer fires (lag), and how loaded the
event-loop thread is, for the metrics and for admission control.

Every call's media (the relay's and, when it runs in-process, the built-in emulator's)
is scheduled on the one event-loop thread. Its **load** over a slot of time is the
larger of two fractions of that slot: the time the loop spent in its callbacks rather
than waiting in its selector (whatever held them up: CPU work, the GIL held by another
thread, a blocking call), and the time its thread was running or ready to run and
waiting for a CPU (Linux's ``schedstat``: other processes, or the relay's own threads,
holding the cores). A load near 1 means the loop is always behind: the paced audio of
the calls in progress arrives late, then is dropped.

Measured on a 2-core machine shared with other work (calls ramped onto one relay with
its built-in emulator, agent audio counted at the callers; the README's "Scaling and
admission" has the table): the load rose with every call (0.16, 0.41, 0.57, 0.80, 0.87
for 1 to 5 calls) and the audio went from 100 % at 3 calls to 44 % at 6, while the
median of a 100 ms lag probe stayed at 1-7 ms until 5 calls and 48 ms at 6 (the old
threshold, 100 ms, never tripped) and the CPU time of the loop thread levelled off at
~0.4 of a core (it starved for a CPU rather than using one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from pathlib import Path
from typing import Any, cast

from .registry import RelayMetrics

#: How far back admission control looks: long enough that a lone burst of call set-ups
#: (a few hundred ms of work) does not count, short enough to react within seconds.
WINDOW_SECS = 2.0
#: Samples kept (at the probe's rate); more than a window's worth at 20 ms.
KEEP_SAMPLES = 256


class ThreadClock:
    """Seconds the thread that created it was running or, where Linux says
    (``schedstat``), ready to run and waiting for a CPU. Read it from that thread."""

    def __init__(self) -> None:
        native_id = threading.get_native_id()
        self._schedstat: Path | None = Path(f"/proc/self/task/{native_id}/schedstat")
        try:
            self._read_schedstat()
        except (OSError, ValueError):  # not Linux, or a kernel without schedstat
            self._schedstat = None

    def _read_schedstat(self) -> float:
        assert self._schedstat is not None
        running_ns, waiting_ns, _slices = self._schedstat.read_text().split()
        return (int(running_ns) + int(waiting_ns)) / 1e9

    def busy_secs(self) -> float:
        if self._schedstat is not None:
            with contextlib.suppress(OSError, ValueError):
                return self._read_schedstat()
        return time.thread_time()


class IdleClock:
    """Seconds an asyncio event loop spent waiting in its selector for something to do:
    the rest of the time it was in its callbacks, whatever held them up (CPU work, the
    GIL held by another thread, a blocking call). Wraps the ``select`` of that loop's
    own selector (asyncio's selector loops; elsewhere :attr:`works` is false). Several
    clocks on one loop (several apps in one process) chain their wrappers; each one
    unwinds its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.idle_secs = 0.0
        self._selector: Any = cast(Any, getattr(loop, "_selector", None))
        self.works = callable(getattr(self._selector, "select", None))
        if not self.works:
            return
        #: What ``select`` was on the instance before us (None: the class's own).
        self._previous = vars(self._selector).get("select")
        select = self._selector.select

        def timed_select(timeout: float | None = None) -> Any:
            started = time.perf_counter()
            try:
                return select(timeout)
            finally:
                if self.works:
                    self.idle_secs += time.perf_counter() - started

        timed_select.idle_clock = self  # type: ignore[attr-defined]
        self._timed = timed_select
        self._selector.select = timed_select

    def remove(self) -> None:
        """Stop counting; unwrap if nobody wrapped after us (else our wrapper stays, a
        plain pass-through, until the one above unwinds past it)."""
        if not self.works:
            return
        self.works = False
        if vars(self._selector).get("select") is not self._timed:
            return
        previous = self._previous
        while (clock := getattr(previous, "idle_clock", None)) is not None and not clock.works:
            previous = clock._previous  # a removed clock's wrapper: skip it
        if previous is None:
            del self._selector.select
        else:
            self._selector.select = previous


class LoopLagProbe:
    """Measures the event loop: how late a periodic timer fires (lag), and the loop
    thread's load between two firings.

    One owner starts it once and awaits :meth:`close` (idempotent)."""

    def __init__(self, metrics: RelayMetrics, interval_secs: float = 0.5) -> None:
        self._metrics = metrics
        self._interval = interval_secs
        self._task: asyncio.Task[None] | None = None
        #: (monotonic time, lag seconds, load of the slot since the previous sample)
        self._recent: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=KEEP_SAMPLES
        )

    def _window(self, window_secs: float) -> list[tuple[float, float, float]]:
        now = time.monotonic()
        return [sample for sample in self._recent if now - sample[0] <= window_secs]

    def sustained_lag_secs(self, window_secs: float = WINDOW_SECS) -> float:
        """The median lag of the last ``window_secs``. A saturated loop lags on every
        probe; a burst of call set-ups only on a few, and must not turn away the burst's
        own calls."""
        return _median([lag for _, lag, _ in self._window(window_secs)])

    def sustained_load(self, window_secs: float = WINDOW_SECS) -> float:
        """The median load of the loop thread over the slots of the last
        ``window_secs`` (0..1, see the module docstring): what admission control
        compares with ``RELAY_MAX_LOOP_LOAD``. The median, for the same reason as
        :meth:`sustained_lag_secs`."""
        return _median([load for _, _, load in self._window(window_secs)])

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="loop-lag-probe")

    async def run(self) -> None:
        """Sleep ``interval`` repeatedly and observe how much later than asked we woke,
        and the loop thread's load since the previous wake-up."""
        loop = asyncio.get_running_loop()
        idle = IdleClock(loop)
        clock = ThreadClock()  # created on the loop thread: it measures that thread
        try:
            busy, idle_secs, then = clock.busy_secs(), idle.idle_secs, time.monotonic()
            while True:
                expected = loop.time() + self._interval
                await asyncio.sleep(self._interval)
                lag = max(0.0, loop.time() - expected)
                now, busy_now, idle_now = time.monotonic(), clock.busy_secs(), idle.idle_secs
                slot = now - then
                if slot > 0:
                    # In its callbacks (whatever held them up), or wanting a CPU.
                    in_callbacks = 1.0 - (idle_now - idle_secs) / slot if idle.works else 0.0
                    running_or_waiting = (busy_now - busy) / slot
                    load = min(1.0, max(0.0, in_callbacks, running_or_waiting))
                    self._recent.append((now, lag, load))
                busy, idle_secs, then = busy_now, idle_now, now
                self._metrics.event_loop_lag_seconds.observe(lag)
                self._metrics.event_loop_load_ratio.set(self.sustained_load())
        finally:
            idle.remove()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _median(values: list[float]) -> float:
    values.sort()
    return values[len(values) // 2] if values else 0.0
