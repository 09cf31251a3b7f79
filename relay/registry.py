"""The live calls of this process (a shard): admission, lookup and shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .call import Call
from .errors import Overloaded
from .taps import CallObserver, CallView

logger = logging.getLogger(__name__)


class CallRegistry:
    """Owns every live :class:`Call` of this process; closes them all at shutdown."""

    def __init__(
        self,
        max_calls: int = 0,
        *,
        loop_lag_secs: Callable[[], float] | None = None,
        max_loop_lag_secs: float = 0.1,
    ) -> None:
        self._calls: dict[str, Call] = {}
        self._observers: list[CallObserver] = []
        self._max_calls = max_calls
        #: Recent event-loop lag (set once the probe runs): a lagging loop means the
        #: calls already here are close to losing audio, so new ones go elsewhere.
        self.loop_lag_secs = loop_lag_secs
        self._max_lag = max_loop_lag_secs
        self.draining = False

    @property
    def observers(self) -> list[CallObserver]:
        return list(self._observers)

    def add_observer(self, observer: CallObserver) -> None:
        self._observers.append(observer)

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

    @property
    def lagging(self) -> bool:
        return self.loop_lag_secs is not None and self.loop_lag_secs() > self._max_lag

    def add(self, call: Call) -> None:
        self._calls[call.id] = call

    def discard(self, call: Call) -> None:
        self._calls.pop(call.id, None)

    def get(self, call_id: str) -> CallView | None:
        return self._calls.get(call_id)

    def get_call(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def list(self) -> list[CallView]:
        return list(self._calls.values())

    def __len__(self) -> int:
        return len(self._calls)

    async def close_all(self, outcome: str, timeout_secs: float) -> None:
        """Close every call (both legs, tasks awaited), bounded by ``timeout_secs``."""
        self.draining = True
        calls = list(self._calls.values())
        if not calls:
            return
        logger.info("closing %d call(s): %s", len(calls), outcome)
        closing = [asyncio.ensure_future(call.close(outcome)) for call in calls]
        done, pending = await asyncio.wait(closing, timeout=timeout_secs)
        for task in pending:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        if pending:
            logger.warning("%d call(s) did not close within %.1f s", len(pending), timeout_secs)
