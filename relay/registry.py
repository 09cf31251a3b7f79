"""The live calls of this process (a shard): admission, lookup, periodic work, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .call import Call
from .caller.leg import new_call_id
from .config import Settings
from .errors import Overloaded
from .ice.gather import IceSetup
from .media.denoise import make_denoiser
from .taps import CallObserver, CallView, TapBus
from .upstream.openai import OpenAIConnector

logger = logging.getLogger(__name__)

TICK_SECS = 0.5
STATS_EVERY_TICKS = 4  # getStats and counters to the observers every 2 s


class CallRegistry:
    """Owns every live :class:`Call` of this process, the tap bus their observers hang
    on, and the one ticker that drives their periodic work; closes them all at shutdown."""

    def __init__(
        self,
        max_calls: int = 0,
        *,
        loop_lag_secs: Callable[[], float] | None = None,
        max_loop_lag_secs: float = 0.1,
    ) -> None:
        self._calls: dict[str, Call] = {}
        self.taps = TapBus()
        self._max_calls = max_calls
        #: Recent event-loop lag (set once the probe runs): a lagging loop means the
        #: calls already here are close to losing audio, so new ones go elsewhere.
        self.loop_lag_secs = loop_lag_secs
        self._max_lag = max_loop_lag_secs
        #: Recent load of the event-loop thread, 0..1 (set with :meth:`limit_loop_load`).
        self._loop_load: Callable[[], float] | None = None
        self._max_load = 0.0
        self._ticker: asyncio.Task[None] | None = None
        self.draining = False
        #: Unix time at which a drain ends the calls still running (``None``: no drain).
        self.drain_deadline: float | None = None
        self._drain: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._drain_cut_short = False

    @property
    def observers(self) -> list[CallObserver]:
        return self.taps.observers

    def add_observer(self, observer: CallObserver) -> None:
        self.taps.add(observer)

    def admit(self) -> None:
        """Raise :class:`Overloaded` if this process should not take another call."""
        if self.draining:
            raise Overloaded("The relay is shutting down; retry on another instance.")
        if self._max_calls and len(self._calls) >= self._max_calls:
            raise Overloaded(f"The relay is at its limit of {self._max_calls} calls.")
        if self.lagging:
            raise Overloaded("The relay is overloaded (its event loop is lagging); retry shortly.")

    @property
    def full(self) -> bool:
        return bool(self._max_calls) and len(self._calls) >= self._max_calls

    def limit_loop_load(self, load: Callable[[], float], max_load: float) -> None:
        """Also refuse a call that would take the event loop's load over ``max_load``
        (0: never). ``load()`` is how much of the recent time the loop was busy in its
        callbacks or waiting for a CPU (0..1); with one more call it would be that plus
        the average share of a call here. The load rises well before the loop lags: calls would lose
        audio first."""
        self._loop_load = load
        self._max_load = max_load

    @property
    def lagging(self) -> bool:
        """The event loop is too late, or would be with one more call."""
        if self.loop_lag_secs is not None and self.loop_lag_secs() > self._max_lag:
            return True
        return bool(self._max_load) and self.projected_loop_load() > self._max_load

    def projected_loop_load(self) -> float:
        """The loop's load with one more call: its load now, plus that divided among the
        calls here (an overestimate: the idle loop's share is counted as the calls')."""
        if self._loop_load is None:
            return 0.0
        load, calls = self._loop_load(), len(self._calls)
        return load * (calls + 1) / calls if calls else load

    def new_call(
        self,
        settings: Settings,
        connector: OpenAIConnector,
        ice: IceSetup,
        call_id: str | None = None,
    ) -> Call:
        """Admit, build and register a call (its observers are the bus's, guarded)."""
        self.admit()
        call = Call(
            settings=settings,
            connector=connector,
            ice=ice,
            denoiser=make_denoiser(settings.noise_suppression),
            taps=self.taps.for_call(call_id or new_call_id()),
            on_closed=self.discard,
        )
        self._calls[call.id] = call
        return call

    def discard(self, call: Call) -> None:
        self._calls.pop(call.id, None)
        if not self._calls:
            self._idle.set()

    def get(self, call_id: str) -> CallView | None:
        return self._calls.get(call_id)

    def get_call(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def list(self) -> list[CallView]:
        return list(self._calls.values())

    def __len__(self) -> int:
        return len(self._calls)

    # -- the ticker ------------------------------------------------------------------

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_SECS)
            ticks += 1
            now = time.monotonic()
            calls = list(self._calls.values())
            for call in calls:
                try:
                    call.tick(now)
                except Exception:  # one call's bug must not stop the others' watchdog
                    logger.exception("call %s: periodic check failed", call.id)
            if ticks % STATS_EVERY_TICKS == 0 and calls:
                results = await asyncio.gather(
                    *(call.publish_stats() for call in calls), return_exceptions=True
                )
                for call, result in zip(calls, results, strict=True):
                    if isinstance(result, Exception):
                        logger.warning("call %s: stats failed: %r", call.id, result)

    # -- draining and shutdown ------------------------------------------------------

    def start_drain(self, timeout_secs: float, close_timeout_secs: float) -> asyncio.Task[None]:
        """Stop admitting calls (``admit`` refuses, ``/readyz`` says draining) and let
        the running ones end on their own for up to ``timeout_secs``; then close what is
        left as ``shutdown``, bounded by ``close_timeout_secs``. Idempotent: a second
        drain (``POST /admin/drain`` then SIGTERM) is the same drain, same deadline."""
        self.draining = True
        if self._drain is None:
            self.drain_deadline = time.time() + timeout_secs
            self._drain = asyncio.ensure_future(self._drain_calls(timeout_secs, close_timeout_secs))
        return self._drain

    async def _drain_calls(self, timeout_secs: float, close_timeout_secs: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        if self._calls:
            logger.info("draining: %d call(s) may run for up to %.0f s", len(self), timeout_secs)
        while (
            self._calls and not self._drain_cut_short and (remaining := deadline - loop.time()) > 0
        ):
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), remaining)
        if self._calls:
            logger.info("drain bound reached: ending %d call(s)", len(self))
            await self._close_calls("shutdown", close_timeout_secs)
        logger.info("drained: no call left")

    async def close_all(self, outcome: str, timeout_secs: float) -> None:
        """Close every call (both legs, tasks awaited), bounded by ``timeout_secs``,
        then stop the ticker."""
        self.draining = True
        drain = self._drain
        if drain is not None and not drain.done():
            # Shutdown does not wait for the drain's bound: the drain ends its calls now.
            self._drain_cut_short = True
            self._idle.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(drain), timeout_secs)
        await self._close_calls(outcome, timeout_secs)
        await self.stop()

    async def _close_calls(self, outcome: str, timeout_secs: float) -> None:
        calls = list(self._calls.values())
        if calls:
            logger.info("closing %d call(s): %s", len(calls), outcome)
            closing = [asyncio.ensure_future(call.close(outcome)) for call in calls]
            done, pending = await asyncio.wait(closing, timeout=timeout_secs)
            for task in pending:
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
            if pending:
                logger.warning("%d call(s) did not close within %.1f s", len(pending), timeout_secs)

    async def stop(self) -> None:
        """Stop the ticker (idempotent)."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
