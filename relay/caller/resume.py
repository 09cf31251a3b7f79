"""Caller reconnect: a call whose browser connection fails waits for the browser to
come back instead of ending.

When the caller leg is *lost* (ICE failed, the caller stopped answering connectivity
checks, a WebSocket dropped without a close frame) the call keeps OpenAI's session,
its recording and its observers for ``caller_grace_secs``. Events for the browser wait
in the event bridge's bounded backlog (drop-oldest) and are flushed, in order, into the
next leg. The browser attaches that new leg (a new WebRTC offer/answer, or a new
WebSocket: aiortc has no ICE restart) with the call's **resume token**: 256 random bits
given only to the caller at set-up (the ``X-Relay-Resume-Token`` response header, or
the WebSocket's ``relay.call`` event), compared in constant time, never logged, never in
a snapshot or a tapped event. A hang-up or a deliberate close (DTLS close, a WebSocket
close frame) still ends the call at once; so does a grace of 0.

Observers see ``relay.caller.disconnected`` and ``relay.caller.resumed`` events
(direction ``client``); a call whose caller does not come back ends as ``caller_lost``."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from ..errors import NotFound
from ..events import EventBridge
from ..ice.gather import IceSetup
from ..liveness import Liveness
from ..media.uplink import CallerAudio
from ..taps import CallTaps, TappedEvent
from .leg import CallerLeg
from .webrtc import WebRtcCallerLeg

#: The response header (``POST /v1/realtime/calls``) that carries the resume token to
#: the caller, and the request header of ``POST /v1/realtime/calls/{id}/resume``.
RESUME_HEADER = "X-Relay-Resume-Token"
#: A WebSocket's resume token, as a subprotocol (browsers cannot set headers on one).
RESUME_PROTOCOL = "relay-resume."
#: Ways a caller leg ends that are a failed connection, not a goodbye.
LOST_OUTCOMES = frozenset({"caller_failed", "caller_media_timeout", "caller_dropped"})
#: The outcome of a call whose caller did not come back within the grace.
GRACE_EXPIRED = "caller_lost"
DISCONNECTED_EVENT = "relay.caller.disconnected"
RESUMED_EVENT = "relay.caller.resumed"


class CallerGrace:
    """The resume token of one call and the grace period of its lost caller."""

    def __init__(self, grace_secs: float, on_expired: Callable[[], None]) -> None:
        self.grace_secs = grace_secs
        self._token = secrets.token_urlsafe(32)
        self._on_expired = on_expired
        self._timer: asyncio.TimerHandle | None = None
        #: When the caller was lost (monotonic), while the call waits for it.
        self.lost_at: float | None = None
        self.reason = ""
        self.resumes = 0
        #: Seconds from the relay noticing the loss to the last resume.
        self.last_gap_secs: float | None = None

    @property
    def token(self) -> str:
        """The token, for the one response that gives it to the caller."""
        return self._token

    def __repr__(self) -> str:  # never the token
        return f"CallerGrace(waiting={self.waiting}, resumes={self.resumes})"

    @property
    def waiting(self) -> bool:
        return self.lost_at is not None

    def may_wait(self, outcome: str) -> bool:
        """Whether a leg that ended with ``outcome`` is waited for."""
        return self.grace_secs > 0 and outcome in LOST_OUTCOMES

    def matches(self, token: str) -> bool:
        """Constant time, whatever ``token`` is."""
        given = token.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(given, self._token.encode())

    def lost(self, reason: str) -> TappedEvent:
        """The caller is gone: start the grace; the event tells the observers."""
        self.lost_at = time.monotonic()
        self.reason = reason
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.grace_secs, self._on_expired)
        return _event(DISCONNECTED_EVENT, reason=reason, grace_secs=self.grace_secs)

    def resumed(self, transport: str) -> TappedEvent:
        """A new leg carries the call: the grace ends; the event tells the observers."""
        gap = time.monotonic() - self.lost_at if self.lost_at is not None else 0.0
        self.cancel()
        self.lost_at = None
        self.resumes += 1
        self.last_gap_secs = gap
        return _event(RESUMED_EVENT, transport=transport, gap_ms=round(gap * 1000))

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def snapshot(self) -> dict[str, Any]:
        """For ``/api/calls`` (no token)."""
        return {
            "waiting": self.waiting,
            "reason": self.reason if self.waiting else None,
            "grace_secs": self.grace_secs,
            "resumes": self.resumes,
            "last_gap_ms": None if self.last_gap_secs is None else round(self.last_gap_secs * 1000),
        }


class CallerReconnect:
    """The part of :class:`relay.call.Call` that swaps its caller leg: a lost leg is
    retired and waited for, :meth:`resume` attaches the next. Legs are numbered so that
    a retired leg's late ``on_ended`` is ignored."""

    # What the call has (relay.call.Call sets them up).
    id: str
    state: str
    caller: CallerLeg
    bridge: EventBridge
    caller_audio: CallerAudio
    taps: CallTaps
    grace: CallerGrace
    _ice: IceSetup
    _leg_number: int
    _retired: list[CallerLeg]
    _resuming: asyncio.Lock
    liveness: Liveness
    _log: logging.LoggerAdapter[logging.Logger]

    def _end_soon(self, outcome: str) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        raise NotImplementedError

    def _leg_ended(self, number: int) -> Callable[[str], None]:
        return partial(self._caller_ended, number)

    def _caller_ended(self, number: int, outcome: str) -> None:
        """Caller leg ``number`` ended: a lost one is waited for, else the call ends."""
        if number != self._leg_number or self.grace.waiting:
            return  # a replaced leg, or one already given up
        if self.state == "active" and self.grace.may_wait(outcome):
            self._caller_lost(outcome)
        else:
            self._end_soon(outcome)

    def _caller_lost(self, reason: str) -> None:
        """Retire the caller's leg and wait for the next; its events wait in the bridge."""
        old = self.caller
        old.stop()
        self._retired.append(old)
        self._spawn(old.close())
        self.bridge.caller.channel = None
        self.taps.event(self.grace.lost(reason))
        self._log.warning("call %s: caller lost (%s), waiting for it", self.id, reason)

    async def resume(
        self, offer_sdp: str, leg: Callable[[Callable[[str], None]], CallerLeg] | None = None
    ) -> str:
        """Attach the caller's next leg (the resume token was checked): WebRTC answered
        with SDP by default, or the leg ``leg`` builds. The previous leg, if the relay had
        not noticed it was lost, is replaced."""
        async with self._resuming:
            if self.state != "active":
                raise NotFound("No call found with that id.", code="call_not_found")
            if not self.grace.waiting:
                self._caller_lost("caller_replaced")
            self._leg_number += 1
            ended = self._leg_ended(self._leg_number)
            new = leg(ended) if leg else WebRtcCallerLeg(self._ice.caller_plan(), on_ended=ended)
            try:
                await new.accept(offer_sdp, self.bridge, self.caller_audio)
                answer = await new.answer()
                if self.state != "active":
                    raise NotFound("The call ended while it resumed.", code="call_not_found")
            except BaseException:
                await new.close()
                raise
            self.caller = new
            self.liveness.heard("caller", time.monotonic())  # a new leg: its quiet starts now
            self.taps.event(self.grace.resumed(new.transport))
            self._log.info("call %s: caller resumed", self.id)
            return answer


def _event(kind: str, **fields: Any) -> TappedEvent:
    data = {"type": kind, **fields}
    return TappedEvent("client", kind, data, json.dumps(data), time.time())
