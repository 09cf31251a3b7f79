"""Every emulated call of one app: live ones, and recently ended ones for tests."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .session import EmulatedCall

#: Calls remembered (live or ended) for inspection by tests.
KEEP_CALLS = 256


class CallRegistry:
    """``app[SESSIONS]``: the emulator's calls.

    * ``active``: live calls by call id (``rtc_...``);
    * ``calls()``: every call so far, oldest first (the last ``KEEP_CALLS``), including
      ended ones, whose ``received`` audio and event logs stay readable;
    * ``await wait_for_call(n)``: the n-th call ever created (1-based), once it exists.
    """

    def __init__(self) -> None:
        self.active: dict[str, EmulatedCall] = {}
        self._history: deque[EmulatedCall] = deque(maxlen=KEEP_CALLS)
        self.created = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self.active)

    def add(self, call: EmulatedCall) -> None:
        self.active[call.id] = call
        self._history.append(call)
        self.created += 1
        self._notify()

    def discard(self, call: EmulatedCall) -> None:
        """Forget a live call (it has closed)."""
        if self.active.get(call.id) is call:
            del self.active[call.id]
            self._notify()

    def get(self, call_id: str) -> EmulatedCall | None:
        """A live or recently ended call."""
        call = self.active.get(call_id)
        if call is not None:
            return call
        return next((c for c in self._history if c.id == call_id), None)

    def calls(self) -> list[EmulatedCall]:
        return list(self._history)

    def latest(self) -> EmulatedCall | None:
        return self._history[-1] if self._history else None

    async def wait_for_call(self, count: int = 1, timeout_secs: float = 10.0) -> EmulatedCall:
        """The ``count``-th call created by this app (1 = the first)."""
        await self._until(
            lambda: self.created >= count,
            timeout_secs,
            lambda: f"emulator: {self.created} calls, waited for {count}",
        )
        index = count - 1 - (self.created - len(self._history))
        if index < 0:
            raise LookupError(f"call #{count} is no longer remembered")
        return self._history[index]

    async def wait_idle(self, timeout_secs: float = 10.0) -> None:
        """Until no call is live (e.g. after a hang-up, before asserting)."""
        await self._until(
            lambda: not self.active,
            timeout_secs,
            lambda: f"emulator: {len(self.active)} calls still live",
        )

    async def _until(
        self, condition: Callable[[], bool], timeout_secs: float, failure: Callable[[], str]
    ) -> None:
        """Re-test ``condition`` on every change to the registry, up to the deadline."""
        try:
            async with asyncio.timeout(timeout_secs):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(failure()) from None

    async def close_all(self) -> None:
        calls = list(self.active.values())
        await asyncio.gather(*(call.close("emulator shutdown") for call in calls))

    def _notify(self) -> None:
        self._changed.set()
