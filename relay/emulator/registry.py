"""Every emulated call of one app: live ones, and recently ended ones for tests."""

from __future__ import annotations

import asyncio
import time
from collections import deque

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
        deadline = time.monotonic() + timeout_secs
        while self.created < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"emulator: {self.created} calls, waited for {count}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue
        index = count - 1 - (self.created - len(self._history))
        if index < 0:
            raise LookupError(f"call #{count} is no longer remembered")
        return self._history[index]

    async def wait_idle(self, timeout_secs: float = 10.0) -> None:
        """Until no call is live (e.g. after a hang-up, before asserting)."""
        deadline = time.monotonic() + timeout_secs
        while self.active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"emulator: {len(self.active)} calls still live")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    async def close_all(self) -> None:
        calls = list(self.active.values())
        await asyncio.gather(*(call.close("emulator shutdown") for call in calls))

    def _notify(self) -> None:
        self._changed.set()
