"""Where one call's output goes: server events on its ``oai-events`` channel and the
agent's audio on its outgoing track."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .events import Event, EventFactory
from .faults import Faults
from .playout import AgentAudioTrack


@dataclass(frozen=True)
class Outlet:
    #: Builds events in the call's dialect.
    factory: EventFactory
    #: Sends one event (held until ``session.created`` has gone out).
    send: Callable[[Event], None]
    #: The agent's paced audio.
    track: AgentAudioTrack
    #: Failures switched on for this call (:mod:`.faults`).
    faults: Faults = field(default_factory=Faults)

    def send_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.send(event)
