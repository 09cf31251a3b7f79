"""In-memory stand-ins for a call and the call directory, and synthetic audio.

The fake directory publishes through a real :class:`relay.taps.TapBus`, with the typed
values a real call publishes (``CallInfo``, ``TappedEvent``, ``TranscriptEntry``,
``MediaStats``, ``CallEnd``), so the operator components are driven the way the relay
drives them. Unlike the relay, it fails the test at once if an observer raises (the bus
would only log it and detach the observer)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from relay.events import transcript_entry
from relay.taps import (
    CANONICAL_FRAME_SAMPLES,
    CANONICAL_RATE,
    CallEnd,
    CallInfo,
    CallObserver,
    CallTaps,
    Direction,
    MediaStats,
    SetupResult,
    Speaker,
    TapBus,
    TappedEvent,
    TranscriptEntry,
)

FRAME_SECS = CANONICAL_FRAME_SAMPLES / CANONICAL_RATE


def tone(freq_hz: float, frames: int = 1, amplitude: float = 0.3, start: int = 0) -> np.ndarray:
    """``frames`` x 20 ms of a sine at 24 kHz, int16, continuing from sample ``start``."""
    n = np.arange(start, start + frames * CANONICAL_FRAME_SAMPLES)
    return (amplitude * 32767 * np.sin(2 * np.pi * freq_hz * n / CANONICAL_RATE)).astype(np.int16)


def frames_of(samples: np.ndarray) -> list[np.ndarray]:
    return [
        samples[i : i + CANONICAL_FRAME_SAMPLES]
        for i in range(0, len(samples), CANONICAL_FRAME_SAMPLES)
    ]


def tapped(direction: Direction, event: dict[str, Any], wallclock: float) -> TappedEvent:
    """``event`` as the call publishes it: read-only data and its JSON text."""
    text = json.dumps(event)
    return TappedEvent(
        direction, str(event["type"]), types.MappingProxyType(event), text, wallclock
    )


class FakeCall:
    """A CallView with the snapshot keys the relay's calls provide."""

    def __init__(
        self,
        call_id: str | None = None,
        *,
        model: str = "gpt-realtime",
        user_agent: str = "pytest",
        record: bool = False,
        transport: str = "udp",
    ) -> None:
        self.id = call_id or "rtc_" + secrets.token_hex(8)
        self.state = "active"
        self.model = model
        self.user_agent = user_agent
        self.record = record
        self.transport = transport
        self.created_at = time.time()
        self.ended_at: float | None = None
        self.outcome: str | None = None
        self.transcripts: list[TranscriptEntry] = []

    def info(self) -> CallInfo:
        return CallInfo(
            call_id=self.id,
            model=self.model,
            dialect="ga",
            user_agent=self.user_agent,
            record=self.record,
            created_at=self.created_at,
            setup_seconds=0.5,
            transport=self.transport,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "outcome": self.outcome,
            "model": self.model,
            "user_agent": self.user_agent,
            "record": self.record,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "legs": {"caller": {"connection_state": "connected"}},
            "transcripts": [entry.as_dict() for entry in self.transcripts],
        }


class FakeDirectory:
    """A CallDirectory whose fake calls publish through a real tap bus."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.calls: dict[str, FakeCall] = {}
        self.failed: list[str] = []  # names of observers that raised
        self.bus = TapBus(on_error=self.failed.append)
        self._taps: dict[str, CallTaps] = {}
        self._clock = clock

    @property
    def observers(self) -> list[CallObserver]:
        return self.bus.observers

    def get(self, call_id: str) -> FakeCall | None:
        return self.calls.get(call_id)

    def list(self) -> list[FakeCall]:
        return list(self.calls.values())

    def snapshot_of(self, call_id: str) -> dict[str, Any] | None:
        call = self.calls.get(call_id)
        return call.snapshot() if call is not None else None

    def add_observer(self, observer: CallObserver) -> None:
        self.bus.add(observer)

    def start(self, call: FakeCall) -> FakeCall:
        self.calls[call.id] = call
        taps = self._taps[call.id] = self.bus.for_call(call.id)
        taps.setup_finished(SetupResult(call.id, 0.5, 0.3))
        taps.call_started(call.info())
        self._check()
        return call

    def audio(self, call: FakeCall, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        taps = self._taps.get(call.id)
        if taps is not None:  # as a real call, an ended one publishes nothing
            taps.audio(speaker, pcm, wallclock)
            self._check()

    def event(
        self, call: FakeCall, direction: Direction, event: dict[str, Any], wallclock: float
    ) -> None:
        published = tapped(direction, event, wallclock)
        self._taps[call.id].event(published)
        entry = transcript_entry(published)  # what the call does, in relay.events
        if entry is not None:
            call.transcripts.append(entry)
            self._taps[call.id].transcript(entry)
        self._check()

    def media_stats(self, stats: MediaStats) -> None:
        self._taps[stats.call_id].media_stats(stats)
        self._check()

    def end(self, call: FakeCall, outcome: str = "hangup") -> None:
        call.state, call.outcome, call.ended_at = "ended", outcome, self._clock()
        self.calls.pop(call.id, None)
        end = CallEnd(outcome, call.ended_at, tuple(call.transcripts))
        self._taps.pop(call.id).call_ended(call.info(), end)
        self._check()

    def _check(self) -> None:
        """Fail the test if an observer raised (the bus logged its traceback)."""
        assert not self.failed, f"observer(s) {self.failed} raised: see the log"


async def eventually(predicate: Callable[[], object], timeout_secs: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (it watches another thread or process, which
    no asyncio primitive can signal); fail after ``timeout_secs``."""
    for _ in range(int(timeout_secs / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_secs} s")
