"""The observer behind live event streams and listen-in.

For each live call the :class:`MonitorHub` keeps the last few events (so a subscriber
that joins late gets context) and hands every event, level and audio frame to that
call's subscribers through their drop-oldest queues. The call's side costs O(1) per
subscriber and never waits; dropped items are counted
(``realtime_relay_monitor_dropped_total``).

Messages of an events subscription (JSON objects, encoded by its WebSocket's sender):

- ``{"type": "relay.snapshot", "call": <the call's snapshot>, "events": [...]}`` first;
- ``{"type": "relay.event", "t", "direction", "event"}`` per data-channel event;
- ``{"type": "relay.levels", "t", "caller_dbfs", "agent_dbfs"}`` ten times a second;
- ``{"type": "relay.stats", "t", "rtt_secs": {leg: s}, "links": [{"leg", "direction",
  "packets_received", "packets_lost", "jitter_secs"}]}`` at each media-stats sample
  (every few seconds; counters cumulative);
- ``{"type": "relay.call_ended", "outcome", "call": {..., "state": "ended",
  "transcripts": [{"role", "text", "item_id", "t"}]}}`` last.

Listen-in: ``caller`` and ``agent`` get that speaker's frames; ``both`` gets the two
mixed to mono for ``pcm16`` (paired frame by frame, holding one speaker's frames at most
``MIX_HOLD_FRAMES`` x 20 ms while the other is silent), or each on its own track for
``twilio``, as Twilio does.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from relay.media.pcm import level_dbfs, mix
from relay.ops.metrics import RelayMetrics
from relay.taps import CallEnd, CallInfo, MediaStats, Observer, Speaker, TappedEvent

from .subscriptions import (
    EventSubscription,
    ListenFormat,
    ListenSubscription,
    ListenTrack,
    Subscription,
    SubscriptionKind,
)

MIX_HOLD_FRAMES: Final = 3

#: The live snapshot of a call by id (``CallView.snapshot()``), ``None`` if not live.
SnapshotOf = Callable[[str], dict[str, Any] | None]


def ended_call(call: CallInfo, end: CallEnd) -> dict[str, Any]:
    """What a snapshot of ``call`` would say once it ended (without live-only figures:
    legs, audio and event counters)."""
    return {
        "id": call.call_id,
        "state": "ended",
        "outcome": end.outcome,
        "model": call.model,
        "dialect": call.dialect,
        "user_agent": call.user_agent,
        "record": call.record,
        "upstream_call_id": call.upstream_call_id,
        "created_at": call.created_at,
        "ended_at": end.ended_at,
        "setup_seconds": call.setup_seconds,
        "transcripts": [entry.as_dict() for entry in end.transcripts],
    }


@dataclass(frozen=True)
class MonitorLimits:
    """How much the hub keeps and sends per call and subscriber."""

    #: Messages queued for one events subscriber before the oldest are dropped.
    event_queue_size: int = 1000
    #: 20 ms frames queued for one listener before the oldest are dropped.
    audio_queue_frames: int = 50
    #: Events of a call kept for a subscriber that joins late (its snapshot).
    history_events: int = 200
    #: Seconds between two ``relay.levels`` messages.
    level_interval_secs: float = 0.1


@dataclass
class _Levels:
    """Loudest frame per speaker since the last ``relay.levels`` message."""

    caller: float | None = None
    agent: float | None = None
    last_sent: float = 0.0

    def note(self, speaker: Speaker, dbfs: float) -> None:
        current = getattr(self, speaker)
        setattr(self, speaker, dbfs if current is None else max(current, dbfs))


@dataclass
class _Mixer:
    """Pairs caller and agent frames in arrival order for the ``both`` mix."""

    pending: dict[str, collections.deque[tuple[np.ndarray, float]]] = field(
        default_factory=lambda: {"caller": collections.deque(), "agent": collections.deque()}
    )

    def push(
        self, speaker: Speaker, pcm: np.ndarray, wallclock: float
    ) -> list[tuple[np.ndarray, float]]:
        self.pending[speaker].append((pcm, wallclock))
        caller, agent = self.pending["caller"], self.pending["agent"]
        out: list[tuple[np.ndarray, float]] = []
        while caller and agent:
            (a, ta), (b, tb) = caller.popleft(), agent.popleft()
            out.append((mix(a, b), min(ta, tb)))
        # One speaker alone (the other silent or not decoded): do not hold it for long.
        for queue in (caller, agent):
            while len(queue) > MIX_HOLD_FRAMES:
                out.append(queue.popleft())
        return out


@dataclass
class _CallState:
    history: collections.deque[dict[str, Any]]
    events: list[EventSubscription] = field(default_factory=list)
    listeners: list[ListenSubscription] = field(default_factory=list)
    levels: _Levels = field(default_factory=_Levels)
    mixer: _Mixer = field(default_factory=_Mixer)

    @property
    def mixing(self) -> bool:
        return any(s.mixed for s in self.listeners)

    def subscriptions(self) -> list[Subscription]:
        return [*self.events, *self.listeners]


class MonitorHub(Observer):
    """The call observer behind live event streams and listen-in.

    Owner: the app. It holds no task or file; :meth:`close` (at shutdown, before
    WebSocket handlers are cancelled) ends every subscription so handlers return."""

    name = "monitor"

    def __init__(
        self,
        snapshot_of: SnapshotOf,
        metrics: RelayMetrics | None = None,
        limits: MonitorLimits | None = None,
    ) -> None:
        self._snapshot_of = snapshot_of
        self._metrics = metrics
        self._limits = limits or MonitorLimits()
        self._calls: dict[str, _CallState] = {}

    # -- observer --------------------------------------------------------------------

    def wants_agent_audio(self, call_id: str) -> bool:
        state = self._calls.get(call_id)
        if state is None:
            return False
        return bool(state.events) or any(s.track != "caller" for s in state.listeners)

    def call_started(self, call: CallInfo) -> None:
        if call.call_id not in self._calls:
            self._calls[call.call_id] = _CallState(
                collections.deque(maxlen=self._limits.history_events)
            )

    def audio(self, call_id: str, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        state = self._calls.get(call_id)
        if state is None or not (state.events or state.listeners):
            return
        if state.events:
            self._note_level(state, speaker, pcm, wallclock)
        if not state.listeners:
            return
        pcm = pcm.reshape(-1).copy()  # the array is only valid during the call
        for sub in state.listeners:
            if sub.takes(speaker):
                sub.put((speaker, pcm, wallclock))
        if state.mixing:
            for mixed, t in state.mixer.push(speaker, pcm, wallclock):
                for sub in state.listeners:
                    if sub.mixed:
                        sub.put(("mix", mixed, t))

    def event(self, call_id: str, event: TappedEvent) -> None:
        state = self._calls.get(call_id)
        if state is None:
            return
        message = {
            "type": "relay.event",
            "t": event.wallclock,
            "direction": event.direction,
            "event": event.data,  # read-only; encoded by each subscriber's sender
        }
        state.history.append(message)
        for sub in state.events:
            sub.put(message)

    def media_stats(self, stats: MediaStats) -> None:
        state = self._calls.get(stats.call_id)
        if state is None or not state.events:
            return
        message = {
            "type": "relay.stats",
            "t": time.time(),
            "rtt_secs": dict(stats.rtt_secs),
            "links": [
                {
                    "leg": link.leg,
                    "direction": link.direction,
                    "packets_received": link.packets_received,
                    "packets_lost": link.packets_lost,
                    "jitter_secs": link.jitter_secs,
                }
                for link in stats.links
            ],
        }
        for sub in state.events:
            sub.put(message)

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        state = self._calls.pop(call.call_id, None)
        if state is None:
            return
        ended = {"type": "relay.call_ended", "outcome": end.outcome, "call": ended_call(call, end)}
        for event_sub in state.events:
            event_sub.put(ended)
        for sub in state.subscriptions():
            self._close(sub)

    # -- subscriptions -----------------------------------------------------------------

    def subscribe_events(self, call_id: str) -> EventSubscription | None:
        """A live event stream of ``call_id``, starting with its snapshot; ``None``
        if the call is not live (not started, or already ended)."""
        state = self._calls.get(call_id)
        snapshot = self._snapshot_of(call_id) if state is not None else None
        if state is None or snapshot is None:
            return None
        sub = EventSubscription(call_id, self._limits.event_queue_size, self._dropped("events"))
        sub.put({"type": "relay.snapshot", "call": snapshot, "events": list(state.history)})
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
            call_id, track, fmt, self._limits.audio_queue_frames, self._dropped("listen")
        )
        state.listeners.append(sub)
        self._count("listen", +1)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
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
            for sub in state.subscriptions():
                self._close(sub)
            state.events.clear()
            state.listeners.clear()

    # -- internals ---------------------------------------------------------------------

    def _close(self, sub: Subscription) -> None:
        if not sub.closed:
            sub.close()
            self._count(sub.kind, -1)

    def _count(self, kind: SubscriptionKind, delta: int) -> None:
        if self._metrics is not None:
            self._metrics.monitor_subscribers.labels(kind).inc(delta)

    def _dropped(self, kind: SubscriptionKind) -> Callable[[], None]:
        metrics = self._metrics
        if metrics is None:
            return lambda: None
        child = metrics.monitor_dropped_total.labels(kind)
        return child.inc

    def _note_level(
        self, state: _CallState, speaker: Speaker, pcm: np.ndarray, wallclock: float
    ) -> None:
        levels = state.levels
        levels.note(speaker, level_dbfs(pcm))
        if wallclock - levels.last_sent < self._limits.level_interval_secs:
            return
        message = {
            "type": "relay.levels",
            "t": wallclock,
            "caller_dbfs": levels.caller,
            "agent_dbfs": levels.agent,
        }
        state.levels = _Levels(last_sent=wallclock)
        for sub in state.events:
            sub.put(message)
