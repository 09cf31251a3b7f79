"""What a relayed call tells the rest of the relay: typed values on a guarded tap bus.

A :class:`~relay.call.Call` publishes through its :class:`CallTaps` (made by the
:class:`TapBus`) and never calls an observer directly. Each observer method runs inside
a guard: the first exception it raises is logged once (with its traceback), counted
(``on_error(observer name)``, the ``realtime_relay_observer_errors_total`` metric), and
that observer is detached from that call. So a bug in the recorder, the monitor or a
webhook can never end, stall or slow a call.

Observers run on the event loop, in the media path: they must return at once (no
blocking, no awaiting); anything slow (disk, network) goes through a bounded queue the
observer owns, with an explicit drop policy. They receive frozen values, never the call.

Audio is the relay's canonical format: 24 kHz mono PCM16 (numpy int16), 20 ms (480
samples) per frame, stamped with the wall-clock time (``time.time()``) of its first
sample. The array is only valid during the call: copy it to keep it.

Vocabulary (used in snapshots, taps, metrics, recordings and the README):

* **leg**: a network hop. ``caller`` is browser <-> relay, ``upstream`` is relay <-> OpenAI.
* **speaker**: whose audio. ``caller`` is the person, ``agent`` is the model.
* **direction** of an event: ``client`` (browser to OpenAI) or ``server`` (OpenAI to
  browser); of media on a leg: ``in`` (received by the relay) or ``out`` (sent by it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

logger = logging.getLogger(__name__)

Direction = Literal["client", "server"]
Leg = Literal["caller", "upstream"]
Speaker = Literal["caller", "agent"]
Role = Literal["user", "agent"]
LEGS: tuple[Leg, ...] = ("caller", "upstream")
SPEAKERS: tuple[Speaker, ...] = ("caller", "agent")

CANONICAL_RATE = 24000
CANONICAL_FRAME_SAMPLES = 480


@dataclass(frozen=True)
class CallInfo:
    """What is known of a call once it is set up (and, with ``ended_at``, once over)."""

    call_id: str
    model: str
    dialect: str
    user_agent: str
    record: bool
    created_at: float
    setup_seconds: float | None = None
    upstream_call_id: str | None = None
    #: What carries the caller's leg (relay.caller.leg.CallerLeg.transport).
    transport: str = "none"
    #: The app's signed-in user, from the client secret's policy (``relay.user_id``).
    user_id: str | None = None


@dataclass(frozen=True)
class TranscriptEntry:
    """One completed turn of the conversation (built in one place: relay.events)."""

    role: Role
    text: str
    item_id: str | None
    t: float

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "item_id": self.item_id, "t": self.t}


@dataclass(frozen=True)
class TappedEvent:
    """A data-channel event as forwarded. ``data`` is the parsed JSON object (treat it
    as read-only) and ``text`` its JSON text; both are safe to encode as UTF-8."""

    direction: Direction
    type: str
    data: Mapping[str, Any]
    text: str
    wallclock: float


@dataclass(frozen=True)
class SetupResult:
    """How a call's set-up went: ``failure`` is ``None`` on success, else an error code."""

    call_id: str
    total_secs: float
    upstream_secs: float | None
    failure: str | None = None
    upstream_failed: bool = False


@dataclass(frozen=True)
class LinkStats:
    """Receive-side figures of one leg and direction, from getStats (cumulative)."""

    leg: Leg
    direction: Literal["in", "out"]
    ssrc: str
    packets_received: int
    packets_lost: int
    jitter_secs: float | None


@dataclass(frozen=True)
class MediaStats:
    """A call's media since its start (counters are cumulative), sampled every few
    seconds; ``processing_secs`` and ``response_latency_secs`` hold only the samples
    taken since the previous report."""

    call_id: str
    frames: Mapping[tuple[Leg, Literal["in", "out"]], int]
    dropped: Mapping[tuple[Leg, Literal["in", "out"]], int]
    processing_secs: Mapping[Speaker, Sequence[float]] = field(default_factory=dict)
    response_latency_secs: Sequence[float] = ()
    links: Sequence[LinkStats] = ()
    rtt_secs: Mapping[Leg, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CallEnd:
    outcome: str
    ended_at: float
    transcripts: tuple[TranscriptEntry, ...]


class CallView(Protocol):
    """The read-only face of a live call that operator routes see."""

    @property
    def id(self) -> str: ...

    @property
    def state(self) -> str: ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state: id, state, times, model, legs, stats, transcripts."""
        ...


class CallObserver(Protocol):
    """Receives what calls publish. Every method must return at once."""

    #: Label of this observer in logs and in ``observer_errors_total``.
    name: str

    def wants_agent_audio(self, call_id: str) -> bool:
        """Whether decoded agent audio is needed for ``call_id`` (decoding costs CPU)."""
        ...

    def setup_finished(self, result: SetupResult) -> None: ...

    def call_started(self, call: CallInfo) -> None: ...

    def audio(self, call_id: str, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None: ...

    def event(self, call_id: str, event: TappedEvent) -> None: ...

    def transcript(self, call_id: str, entry: TranscriptEntry) -> None: ...

    def media_stats(self, stats: MediaStats) -> None: ...

    def call_ended(self, call: CallInfo, end: CallEnd) -> None: ...


class Observer:
    """A base for observers: every method does nothing; override what you need."""

    name = "observer"

    def wants_agent_audio(self, call_id: str) -> bool:
        return False

    def setup_finished(self, result: SetupResult) -> None:
        return

    def call_started(self, call: CallInfo) -> None:
        return

    def audio(self, call_id: str, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        return

    def event(self, call_id: str, event: TappedEvent) -> None:
        return

    def transcript(self, call_id: str, entry: TranscriptEntry) -> None:
        return

    def media_stats(self, stats: MediaStats) -> None:
        return

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        return


class CallDirectory(Protocol):
    """The live calls of this process, as operator routes see them."""

    def get(self, call_id: str) -> CallView | None: ...

    def list(self) -> list[CallView]: ...

    def add_observer(self, observer: CallObserver) -> None:
        """Register an observer for every call started from now on."""
        ...


class TapBus:
    """The observers of every call, and what happens when one fails."""

    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        self._observers: list[CallObserver] = []
        #: Told the observer's name on each failure (the metrics counter, once wired).
        self.on_error = on_error
        self.errors = 0

    def add(self, observer: CallObserver) -> None:
        self._observers.append(observer)

    @property
    def observers(self) -> list[CallObserver]:
        return list(self._observers)

    def for_call(self, call_id: str) -> CallTaps:
        """The taps of one call: the observers registered now, each guarded."""
        return CallTaps(call_id, list(self._observers), self._failed)

    def _failed(self, call_id: str, observer: CallObserver, what: str) -> None:
        self.errors += 1
        name = _name_of(observer)
        logger.exception(
            "call %s: observer %s failed in %s; detached from this call", call_id, name, what
        )
        if self.on_error is not None:
            try:
                self.on_error(name)
            except Exception:  # the counter itself must not break the guard
                logger.exception("counting an observer error failed")


class CallTaps:
    """One call's guarded observers.

    An observer that raises is detached from this call's stream (audio, events, stats);
    it is still told the call ended, so it can release what it holds for the call."""

    def __init__(
        self,
        call_id: str,
        observers: list[CallObserver],
        on_failure: Callable[[str, CallObserver, str], None],
    ) -> None:
        self.call_id = call_id
        self._live = observers
        self._detached: list[CallObserver] = []
        self._on_failure = on_failure

    def _each(self, what: str, deliver: Callable[[CallObserver], object]) -> None:
        for observer in list(self._live):
            try:
                deliver(observer)
            except Exception:
                self._live.remove(observer)
                self._detached.append(observer)
                self._on_failure(self.call_id, observer, what)

    def wants_agent_audio(self) -> bool:
        wanted: list[bool] = []
        self._each("wants_agent_audio", lambda o: wanted.append(o.wants_agent_audio(self.call_id)))
        return any(wanted)

    def setup_finished(self, result: SetupResult) -> None:
        self._each("setup_finished", lambda o: o.setup_finished(result))

    def call_started(self, call: CallInfo) -> None:
        self._each("call_started", lambda o: o.call_started(call))

    def audio(self, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        self._each("audio", lambda o: o.audio(self.call_id, speaker, pcm, wallclock))

    def event(self, event: TappedEvent) -> None:
        self._each("event", lambda o: o.event(self.call_id, event))

    def transcript(self, entry: TranscriptEntry) -> None:
        self._each("transcript", lambda o: o.transcript(self.call_id, entry))

    def media_stats(self, stats: MediaStats) -> None:
        self._each("media_stats", lambda o: o.media_stats(stats))

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        self._each("call_ended", lambda o: o.call_ended(call, end))
        detached, self._detached = self._detached, []
        for observer in detached:  # already logged and counted once: stay quiet
            try:
                observer.call_ended(call, end)
            except Exception:
                logger.debug("detached observer %s failed again", _name_of(observer), exc_info=True)


def _name_of(observer: CallObserver) -> str:
    """An observer's label; a guard must not fail on an observer without one."""
    name = getattr(observer, "name", None)
    return name if isinstance(name, str) else type(observer).__name__
