"""Where one session's output goes: server events on its transport (the ``oai-events``
channel, or the WebSocket) and the agent's audio (the paced WebRTC track, or
``response.output_audio.delta`` events on a WebSocket)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .events import Event, EventFactory
from .faults import Faults
from .playout import ClearedAudio


class AudioOut(Protocol):
    """The agent's audio as a response produces it (48 kHz mono int16).

    Over WebRTC (:class:`~.playout.AgentAudioTrack`) it is played out in real time and
    reports ``on_started`` / ``on_stopped``; over a WebSocket
    (:class:`~.websocket.DeltaAudio`) it is sent as generated, and nothing is known
    about playback (no ``output_audio_buffer.*``, nothing cleared by the server)."""

    on_started: Callable[[str], None] | None
    on_stopped: Callable[[str], None] | None

    def begin(self, response_id: str, item_id: str = "") -> None: ...

    def enqueue(self, response_id: str, samples: np.ndarray) -> None: ...

    def end(self, response_id: str) -> None: ...

    def clear(self) -> list[ClearedAudio]: ...


@dataclass(frozen=True)
class Outlet:
    #: Builds events in the call's dialect.
    factory: EventFactory
    #: Sends one event (held until ``session.created`` has gone out).
    send: Callable[[Event], None]
    #: The agent's audio.
    track: AudioOut
    #: Failures switched on for this call (:mod:`.faults`).
    faults: Faults = field(default_factory=Faults)

    def send_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.send(event)
