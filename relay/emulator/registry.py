"""Every emulated session of one app (WebRTC calls and WebSocket sessions): live ones,
and recently ended ones for tests."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .core import EmulatedSession

#: Ended calls remembered for inspection by tests (live calls always are). Each keeps
#: its closed peer connection and up to 30 s of received audio, so the bound is what
#: keeps a long-running emulator (the relay's embedded one) flat.
KEEP_ENDED_CALLS = 16


class CallRegistry:
    """``app[SESSIONS]``: the emulator's calls.

    * ``active``: live sessions by id (a WebRTC call's ``rtc_...``, a WebSocket
      session's ``sess_...``); each says its ``transport``;
    * ``calls()``: every live call and the last ``KEEP_ENDED_CALLS`` ended ones, oldest
      first; an ended call's ``received`` audio and event logs stay readable;
    * ``await wait_for_call(n)``: the n-th call ever created (1-based), once it exists.
    """

    def __init__(self, keep_ended: int = KEEP_ENDED_CALLS) -> None:
        self.active: dict[str, EmulatedSession] = {}
        #: Remembered calls by creation number (1-based), oldest first.
        self._remembered: dict[int, EmulatedSession] = {}
        self._numbers: dict[str, int] = {}  # live call id -> its creation number
        self._ended: deque[int] = deque()
        self._keep_ended = keep_ended
        self.created = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self.active)

    def add(self, call: EmulatedSession) -> None:
        self.created += 1
        self.active[call.id] = call
        self._remembered[self.created] = call
        self._numbers[call.id] = self.created
        self._notify()

    def discard(self, call: EmulatedSession) -> None:
        """Forget a live call (it has closed); it stays among the recently ended."""
        if self.active.get(call.id) is call:
            del self.active[call.id]
            number = self._numbers.pop(call.id, None)
            if number is not None:
                self._ended.append(number)
            while len(self._ended) > self._keep_ended:
                self._remembered.pop(self._ended.popleft(), None)
            self._notify()

    def get(self, call_id: str) -> EmulatedSession | None:
        """A live or recently ended call."""
        call = self.active.get(call_id)
        if call is not None:
            return call
        return next((c for c in self._remembered.values() if c.id == call_id), None)

    def calls(self) -> list[EmulatedSession]:
        return list(self._remembered.values())

    def latest(self) -> EmulatedSession | None:
        return next(reversed(self._remembered.values()), None)

    async def wait_for_call(self, count: int = 1, timeout_secs: float = 10.0) -> EmulatedSession:
        """The ``count``-th call created by this app (1 = the first)."""
        await self._until(
            lambda: self.created >= count,
            timeout_secs,
            lambda: f"emulator: {self.created} calls, waited for {count}",
        )
        call = self._remembered.get(count)
        if call is None:
            raise LookupError(f"call #{count} is no longer remembered")
        return call

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
