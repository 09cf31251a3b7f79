"""Live monitoring: per-call event streams and listen-in audio for operators.

The :class:`MonitorHub` is a CallObserver. For each live call it keeps the last few
events (so a subscriber that joins late gets context) and hands every event, level and
audio frame to that call's subscribers through a :class:`Subscription`: a bounded
queue that drops its oldest item when the subscriber (a WebSocket in
``relay.http.ops_routes``) falls behind. The call's side costs O(1) per subscriber and
never waits; dropped items are counted (``realtime_relay_monitor_dropped_total``).

Listen-in formats (``format``, ``track``):

- ``pcm16``: binary messages of 24 kHz mono PCM16 little-endian, one 20 ms frame each.
  ``caller`` and ``agent`` are that leg; ``both`` is the two legs mixed to mono (summed
  and clipped), paired frame by frame, holding a leg's frames at most
  ``MIX_HOLD_FRAMES`` x 20 ms while the other leg is silent.
- ``twilio``: Twilio Media Streams' JSON dialect (``connected``, ``start``, ``media``,
  ``stop``), mu-law 8 kHz mono, 20 ms (160 bytes) per ``media`` message. The caller is
  track ``inbound`` and the agent ``outbound``; ``both`` sends each as its own track,
  as Twilio does, not mixed.

Encoding (resampling, mu-law, base64, JSON) runs in the subscriber's own sender task,
not on the call's path.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

import numpy as np

from relay.ops.metrics import RelayMetrics
from relay.taps import CANONICAL_RATE, CallView, Direction, Leg

T = TypeVar("T")

ListenTrack = Literal["caller", "agent", "both"]
ListenFormat = Literal["pcm16", "twilio"]
LISTEN_TRACKS: Final[tuple[ListenTrack, ...]] = ("caller", "agent", "both")
LISTEN_FORMATS: Final[tuple[ListenFormat, ...]] = ("pcm16", "twilio")
#: A listen-in item: which audio ("caller", "agent" or "mix"), samples, wall clock.
AudioItem = tuple[str, np.ndarray, float]

MIX_HOLD_FRAMES: Final = 3
SILENCE_DBFS: Final = -100.0
TWILIO_RATE: Final = 8000
TWILIO_TRACK: Final[dict[str, str]] = {"caller": "inbound", "agent": "outbound"}


class Subscription(Generic[T]):
    """A bounded queue from the hub to one subscriber; the producer never waits.

    When full, the oldest item is dropped and counted. ``get`` returns ``None`` once
    the subscription is closed and drained."""

    def __init__(self, kind: str, max_items: int, on_drop: Callable[[], None]) -> None:
        self.kind = kind
        self._items: collections.deque[T] = collections.deque()
        self._max = max_items
        self._on_drop = on_drop
        self._ready = asyncio.Event()
        self._unreported_drops = 0
        self.dropped = 0
        self.closed = False

    def push(self, item: T) -> None:
        if self.closed:
            return
        if len(self._items) >= self._max:
            self._items.popleft()
            self.dropped += 1
            self._unreported_drops += 1
            self._on_drop()
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        """No more items; ``get`` drains what is queued, then returns ``None``."""
        self.closed = True
        self._ready.set()

    async def get(self) -> T | None:
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def take_drops(self) -> int:
        """Items dropped since the last call (so the subscriber can be told)."""
        count, self._unreported_drops = self._unreported_drops, 0
        return count

    def __len__(self) -> int:
        return len(self._items)


class EventSubscription(Subscription[dict[str, Any]]):
    """JSON messages for ``/api/calls/{id}/events``: a snapshot first, then live."""

    def __init__(self, call_id: str, max_items: int, on_drop: Callable[[], None]) -> None:
        super().__init__("events", max_items, on_drop)
        self.call_id = call_id


class ListenSubscription(Subscription[AudioItem]):
    """Audio frames for ``/api/calls/{id}/listen``."""

    def __init__(
        self,
        call_id: str,
        track: ListenTrack,
        fmt: ListenFormat,
        max_items: int,
        on_drop: Callable[[], None],
    ) -> None:
        super().__init__("listen", max_items, on_drop)
        self.call_id = call_id
        self.track: ListenTrack = track
        self.format: ListenFormat = fmt

    @property
    def mixed(self) -> bool:
        return self.track == "both" and self.format == "pcm16"

    def takes(self, leg: Leg) -> bool:
        """Whether this subscriber gets ``leg``'s own frames (not the mix)."""
        return self.track == leg or (self.track == "both" and self.format == "twilio")


# -- audio helpers --------------------------------------------------------------------------


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (``SILENCE_DBFS`` for digital silence)."""
    if pcm.size == 0:
        return SILENCE_DBFS
    samples = pcm.astype(np.float32)
    mean_square = float(np.dot(samples, samples)) / pcm.size
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / (32768.0 * 32768.0)))


def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum two int16 frames (the shorter padded with silence), clipped to int16."""
    out = np.zeros(max(len(a), len(b)), dtype=np.int32)
    out[: len(a)] += a
    out[: len(b)] += b
    return np.clip(out, -32768, 32767).astype(np.int16)


_MULAW_BIAS: Final = 0x84
#: Segment ends of G.711's 14-bit mu-law (the reference ``g711.c`` tables).
_MULAW_SEGMENT_ENDS: Final = np.array(
    [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32
)


def mulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 mu-law bytes of int16 samples, bit-exact with the reference ``g711.c``
    (and with the deprecated ``audioop.lin2ulaw``)."""
    value = pcm.astype(np.int32) >> 2  # 14-bit, as G.711 defines it
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, value, side="left").astype(np.int32)
    code = (np.minimum(segment, 7) << 4) | ((value >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    encoded: bytes = ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()
    return encoded


def mulaw_decode(data: bytes) -> np.ndarray:
    """int16 samples of G.711 mu-law bytes."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    decoded: np.ndarray = np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)
    return decoded


def _lowpass_taps(count: int = 63, cutoff_hz: float = 3600.0) -> np.ndarray:
    """A windowed-sinc low-pass for 24 kHz, below the 4 kHz Nyquist of 8 kHz."""
    n = np.arange(count) - (count - 1) / 2
    taps = np.sinc(2 * cutoff_hz / CANONICAL_RATE * n) * np.hamming(count)
    normalised: np.ndarray = (taps / taps.sum()).astype(np.float32)
    return normalised


_TAPS: Final = _lowpass_taps()


class Downsampler24kTo8k:
    """Streaming 24 kHz -> 8 kHz: low-pass FIR, keep every third sample.

    The filter's history is carried across frames so frame edges do not click."""

    def __init__(self) -> None:
        self._history = np.zeros(len(_TAPS) - 1, dtype=np.float32)
        self._phase = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._history, pcm.astype(np.float32)])
        filtered = np.convolve(x, _TAPS, mode="valid")
        out = filtered[self._phase :: 3]
        self._phase = (self._phase - len(pcm)) % 3
        self._history = x[len(x) - len(self._history) :]
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)


class TwilioStream:
    """Builds the messages of one Twilio Media Streams dialect listen-in stream."""

    def __init__(self, call_id: str, tracks: list[str], clock: Callable[[], float] = time.time):
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self._call_id = call_id
        self._tracks = tracks
        self._sequence = 0
        self._chunks: dict[str, int] = collections.Counter()
        self._downsamplers: dict[str, Downsampler24kTo8k] = {}
        self._started_at = clock()

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    @staticmethod
    def connected() -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": self._next_sequence(),
            "start": {
                "accountSid": "",
                "streamSid": self.stream_sid,
                "callSid": self._call_id,
                "tracks": self._tracks,
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }

    def media(self, leg: str, pcm: np.ndarray, wallclock: float) -> dict[str, Any]:
        """One ``media`` message: ``leg``'s 24 kHz frame as 8 kHz mu-law, base64."""
        track = TWILIO_TRACK[leg]
        downsampler = self._downsamplers.setdefault(track, Downsampler24kTo8k())
        payload = mulaw_encode(downsampler.process(pcm))
        self._chunks[track] += 1
        timestamp = max(0, round((wallclock - self._started_at) * 1000))
        return {
            "event": "media",
            "sequenceNumber": self._next_sequence(),
            "media": {
                "track": track,
                "chunk": str(self._chunks[track]),
                "timestamp": str(timestamp),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "streamSid": self.stream_sid,
        }

    def stop(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": self._next_sequence(),
            "stop": {"accountSid": "", "callSid": self._call_id},
            "streamSid": self.stream_sid,
        }


# -- per-call state -------------------------------------------------------------------------


@dataclass
class _Levels:
    """Loudest frame per leg since the last ``relay.levels`` message."""

    caller: float | None = None
    agent: float | None = None
    last_sent: float = 0.0

    def note(self, leg: Leg, dbfs: float) -> None:
        current = getattr(self, leg)
        setattr(self, leg, dbfs if current is None else max(current, dbfs))


@dataclass
class _Mixer:
    """Pairs caller and agent frames in arrival order for the ``both`` mix."""

    pending: dict[str, collections.deque[tuple[np.ndarray, float]]] = field(
        default_factory=lambda: {"caller": collections.deque(), "agent": collections.deque()}
    )

    def push(self, leg: Leg, pcm: np.ndarray, wallclock: float) -> list[tuple[np.ndarray, float]]:
        self.pending[leg].append((pcm, wallclock))
        caller, agent = self.pending["caller"], self.pending["agent"]
        out: list[tuple[np.ndarray, float]] = []
        while caller and agent:
            (a, ta), (b, tb) = caller.popleft(), agent.popleft()
            out.append((mix(a, b), min(ta, tb)))
        # One leg alone (the other silent or not decoded): do not hold it for long.
        for queue in (caller, agent):
            while len(queue) > MIX_HOLD_FRAMES:
                out.append(queue.popleft())
        return out


@dataclass
class _CallState:
    call: CallView
    history: collections.deque[dict[str, Any]]
    events: list[EventSubscription] = field(default_factory=list)
    listeners: list[ListenSubscription] = field(default_factory=list)
    levels: _Levels = field(default_factory=_Levels)
    mixer: _Mixer = field(default_factory=_Mixer)

    @property
    def mixing(self) -> bool:
        return any(s.mixed for s in self.listeners)


class MonitorHub:
    """The CallObserver behind live event streams and listen-in.

    Owner: the app. It holds no task or file; :meth:`close` (at shutdown, before
    WebSocket handlers are cancelled) ends every subscription so handlers return."""

    def __init__(
        self,
        metrics: RelayMetrics | None = None,
        *,
        event_queue_size: int = 1000,
        audio_queue_frames: int = 50,
        history_events: int = 200,
        level_interval_secs: float = 0.1,
    ) -> None:
        self._metrics = metrics
        self._event_queue_size = event_queue_size
        self._audio_queue_frames = audio_queue_frames
        self._history_events = history_events
        self._level_interval = level_interval_secs
        self._calls: dict[str, _CallState] = {}

    # -- CallObserver ------------------------------------------------------------------

    def wants_agent_audio(self, call_id: str) -> bool:
        state = self._calls.get(call_id)
        if state is None:
            return False
        return bool(state.events) or any(s.track != "caller" for s in state.listeners)

    def call_started(self, call: CallView) -> None:
        if call.id not in self._calls:
            history: collections.deque[dict[str, Any]] = collections.deque(
                maxlen=self._history_events
            )
            self._calls[call.id] = _CallState(call, history)

    def audio(self, call: CallView, leg: Leg, pcm: np.ndarray, wallclock: float) -> None:
        state = self._calls.get(call.id)
        if state is None or not (state.events or state.listeners):
            return
        if state.events:
            self._note_level(state, leg, pcm, wallclock)
        if not state.listeners:
            return
        pcm = pcm.reshape(-1).copy()  # the call may reuse its buffer
        for sub in state.listeners:
            if sub.takes(leg):
                sub.push((leg, pcm, wallclock))
        if state.mixing:
            for mixed, t in state.mixer.push(leg, pcm, wallclock):
                for sub in state.listeners:
                    if sub.mixed:
                        sub.push(("mix", mixed, t))

    def event(
        self, call: CallView, direction: Direction, event: dict[str, Any], wallclock: float
    ) -> None:
        state = self._calls.get(call.id)
        if state is None:
            return
        message = {"type": "relay.event", "t": wallclock, "direction": direction, "event": event}
        state.history.append(message)
        for sub in state.events:
            sub.push(message)

    def call_ended(self, call: CallView, outcome: str) -> None:
        state = self._calls.pop(call.id, None)
        if state is None:
            return
        ended = {"type": "relay.call_ended", "outcome": outcome, "call": call.snapshot()}
        for event_sub in state.events:
            event_sub.push(ended)
        subs: list[EventSubscription | ListenSubscription] = [*state.events, *state.listeners]
        for sub in subs:
            self._close(sub)

    # -- subscriptions -------------------------------------------------------------------

    def is_live(self, call_id: str) -> bool:
        return call_id in self._calls

    def subscribe_events(self, call_id: str) -> EventSubscription | None:
        """A live event stream of ``call_id``, starting with its snapshot; ``None``
        if the hub does not know that call (not started, or already ended)."""
        state = self._calls.get(call_id)
        if state is None:
            return None
        sub = EventSubscription(call_id, self._event_queue_size, self._dropped("events"))
        sub.push(
            {
                "type": "relay.snapshot",
                "call": state.call.snapshot(),
                "events": list(state.history),
            }
        )
        state.events.append(sub)
        self._count("events", +1)
        return sub

    def subscribe_listen(
        self, call_id: str, track: ListenTrack, fmt: ListenFormat
    ) -> ListenSubscription | None:
        """Listen-in audio of ``call_id``; ``None`` if the hub does not know the call."""
        state = self._calls.get(call_id)
        if state is None:
            return None
        sub = ListenSubscription(
            call_id, track, fmt, self._audio_queue_frames, self._dropped("listen")
        )
        state.listeners.append(sub)
        self._count("listen", +1)
        return sub

    def unsubscribe(self, sub: EventSubscription | ListenSubscription) -> None:
        """Forget ``sub`` (idempotent): the subscriber's handler calls it when done."""
        state = self._calls.get(sub.call_id)
        if state is not None:
            if isinstance(sub, EventSubscription) and sub in state.events:
                state.events.remove(sub)
            elif isinstance(sub, ListenSubscription) and sub in state.listeners:
                state.listeners.remove(sub)
                if not state.mixing:
                    state.mixer = _Mixer()
        self._close(sub)

    def close(self) -> None:
        """End every subscription (shutdown). Live calls stay known until they end."""
        for state in self._calls.values():
            subs: list[EventSubscription | ListenSubscription] = [*state.events, *state.listeners]
            for sub in subs:
                self._close(sub)
            state.events.clear()
            state.listeners.clear()

    # -- internals -------------------------------------------------------------------------

    def _close(self, sub: EventSubscription | ListenSubscription) -> None:
        if not sub.closed:
            sub.close()
            self._count(sub.kind, -1)

    def _count(self, kind: str, delta: int) -> None:
        if self._metrics is not None:
            self._metrics.monitor_subscribers.labels(kind).inc(delta)

    def _dropped(self, kind: str) -> Callable[[], None]:
        metrics = self._metrics
        if metrics is None:
            return lambda: None
        child = metrics.monitor_dropped_total.labels(kind)
        return child.inc

    def _note_level(self, state: _CallState, leg: Leg, pcm: np.ndarray, wallclock: float) -> None:
        levels = state.levels
        levels.note(leg, level_dbfs(pcm))
        if wallclock - levels.last_sent < self._level_interval:
            return
        message = {
            "type": "relay.levels",
            "t": wallclock,
            "caller_dbfs": levels.caller,
            "agent_dbfs": levels.agent,
        }
        state.levels = _Levels(last_sent=wallclock)
        for sub in state.events:
            sub.push(message)
