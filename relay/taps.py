"""What a relayed call tells the rest of the relay: the tap interface.

A :class:`~relay.call.Call` calls every registered :class:`CallObserver` on the event
loop, in the media path. Observers must therefore be cheap (microseconds) and must
never block or await: anything slow (disk, network) goes through a bounded queue
owned by the observer, with an explicit drop policy, so a slow consumer never slows a
call. Audio is the relay's canonical format: 24 kHz mono PCM16 (numpy int16), 20 ms
(480 samples) per frame, stamped with the wall-clock time (``time.time()``) of its
first sample.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np

Direction = Literal["client", "server"]
"""``client``: browser -> OpenAI (client events); ``server``: OpenAI -> browser."""

Leg = Literal["caller", "agent"]

CANONICAL_RATE = 24000
CANONICAL_FRAME_SAMPLES = 480


class CallView(Protocol):
    """The read-only face of a call that observers and operator routes see."""

    @property
    def id(self) -> str: ...

    @property
    def state(self) -> str: ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state: id, state, times, model, legs, transport, stats,
        transcripts so far."""
        ...


class CallObserver(Protocol):
    """Receives a call's audio and events. Every method must return at once."""

    #: Whether this observer needs decoded agent audio for ``call_id`` (decoding the
    #: agent's Opus costs CPU, so the relay only does it when someone listens).
    def wants_agent_audio(self, call_id: str) -> bool: ...

    def call_started(self, call: CallView) -> None: ...

    def audio(self, call: CallView, leg: Leg, pcm: np.ndarray, wallclock: float) -> None: ...

    def event(
        self, call: CallView, direction: Direction, event: dict[str, Any], wallclock: float
    ) -> None: ...

    def call_ended(self, call: CallView, outcome: str) -> None: ...


class CallDirectory(Protocol):
    """The live calls of this process, as operator routes see them."""

    def get(self, call_id: str) -> CallView | None: ...

    def list(self) -> list[CallView]: ...

    def add_observer(self, observer: CallObserver) -> None:
        """Register an observer for every call started from now on."""
        ...
