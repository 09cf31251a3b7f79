"""What a call needs from the browser's side, and what the HTTP layer hands a call.

A **caller leg** carries the browser's audio and events: WebRTC by default
(:class:`~relay.caller.webrtc.WebRtcCallerLeg`) or a WebSocket
(:class:`~relay.caller.websocket.WebSocketCallerLeg`); the call does not know which."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..events import EventBridge
from ..media.uplink import CallerAudio

PlaybackChange = Literal["barge_in", "cleared", "started"]
PLAYBACK_CHANGES: dict[str, PlaybackChange] = {
    "output_audio_buffer.cleared": "cleared",
    "output_audio_buffer.started": "started",
}


def new_call_id() -> str:
    return "rtc_" + secrets.token_hex(16)


class CallerLeg(Protocol):
    """The browser's side of a call, whatever carries it (WebRTC, a WebSocket).

    The call hands it the event bridge and the caller pipeline (:meth:`accept`), runs
    :meth:`answer` while OpenAI's leg comes up, gives it every agent Opus packet
    (:meth:`play`), tells it when the agent's turn changes (:meth:`playback`), asks
    whether a quiet caller is still there (:meth:`answers`), and closes it. A leg that
    ends on its own (the browser went away) calls the ``on_ended`` it was built with."""

    @property
    def transport(self) -> str:
        """What carries it: ``udp``, ``tcp``, ``turn-udp``, ``turn-tcp``, ``turn-tls``
        (WebRTC, :func:`relay.caller.webrtc.transport_of`; ``none`` before ICE selected a
        path) or ``websocket``."""
        ...

    async def accept(self, offer_sdp: str, bridge: EventBridge, audio: CallerAudio) -> None:
        """Take the caller's side: its events into ``bridge``, its audio into ``audio``."""
        ...

    async def answer(self) -> str:
        """Ready to carry the call; WebRTC: the SDP answer (otherwise empty)."""
        ...

    def play(self, payload: bytes, rtp_timestamp: int) -> None:
        """One in-order agent Opus packet for the caller (on the event loop)."""
        ...

    def playback(self, change: PlaybackChange) -> None:
        """The agent's turn changed: ``barge_in`` (the caller started speaking: drop
        queued agent audio), ``cleared`` (OpenAI cleared its output: drop it, and what
        arrives before the next response), ``started`` (a response's audio starts)."""
        ...

    @property
    def frames_out(self) -> int: ...
    @property
    def dropped_out(self) -> int: ...
    @property
    def dropped_in(self) -> int: ...

    async def stats(self) -> Mapping[str, Any]:
        """A getStats report (empty where there is none)."""
        ...

    async def answers(self, timeout_secs: float) -> bool:
        """Whether the caller is still there although its audio stopped."""
        ...

    def snapshot(self) -> dict[str, Any]: ...

    def stop(self) -> None:
        """Stop sending to the caller now (synchronous; :meth:`close` follows)."""
        ...

    async def close(self) -> None:
        """Release everything (idempotent)."""
        ...


@dataclass
class CallRequest:
    """What the HTTP layer hands over: a checked offer (WebRTC) or the caller leg
    itself (``caller``: a WebSocket), and the session config."""

    offer_sdp: str
    session: dict[str, Any]
    user_agent: str = ""
    record: bool = False
    #: Builds another caller leg than WebRTC from the call's ``on_ended``.
    caller: Callable[[Callable[[str], None]], CallerLeg] | None = None
    #: Whether the caller sends audio (the media watchdog then watches it).
    sends_audio: bool | None = None


@dataclass
class CallTimings:
    created_at: float = field(default_factory=time.time)
    setup_started: float = field(default_factory=time.monotonic)
    upstream_seconds: float | None = None
    setup_seconds: float | None = None
    ended_at: float | None = None
