"""In-memory stand-ins for a call and the call directory, and synthetic audio.

They implement :mod:`relay.taps`' protocols exactly as a real call uses them, so the
operator components are driven the way the relay drives them."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from relay.taps import CANONICAL_FRAME_SAMPLES, CANONICAL_RATE, CallObserver, Direction, Leg

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


class FakeCall:
    """A CallView with the snapshot keys the relay's calls provide."""

    def __init__(
        self,
        call_id: str | None = None,
        *,
        model: str = "gpt-realtime",
        user_agent: str = "pytest",
        record: bool = False,
    ) -> None:
        self.id = call_id or "rtc_" + secrets.token_hex(8)
        self.state = "active"
        self.model = model
        self.user_agent = user_agent
        self.record = record
        self.created_at = time.time()
        self.ended_at: float | None = None
        self.outcome: str | None = None
        self.transcripts: list[dict[str, Any]] = []

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
            "transcripts": list(self.transcripts),
        }


class FakeDirectory:
    """A CallDirectory that fans a fake call's taps out to its observers."""

    def __init__(self) -> None:
        self.calls: dict[str, FakeCall] = {}
        self.observers: list[CallObserver] = []

    def get(self, call_id: str) -> FakeCall | None:
        return self.calls.get(call_id)

    def list(self) -> list[FakeCall]:
        return list(self.calls.values())

    def add_observer(self, observer: CallObserver) -> None:
        self.observers.append(observer)

    def start(self, call: FakeCall) -> FakeCall:
        self.calls[call.id] = call
        for observer in self.observers:
            observer.call_started(call)
        return call

    def audio(self, call: FakeCall, leg: Leg, pcm: np.ndarray, wallclock: float) -> None:
        for observer in self.observers:
            observer.audio(call, leg, pcm, wallclock)

    def event(
        self, call: FakeCall, direction: Direction, event: dict[str, Any], wallclock: float
    ) -> None:
        if event.get("type") == "conversation.item.input_audio_transcription.completed":
            call.transcripts.append({"role": "user", "text": event["transcript"], "t": wallclock})
        for observer in self.observers:
            observer.event(call, direction, event, wallclock)

    def end(self, call: FakeCall, outcome: str = "hangup") -> None:
        call.state, call.outcome, call.ended_at = "ended", outcome, time.time()
        self.calls.pop(call.id, None)
        for observer in self.observers:
            observer.call_ended(call, outcome)


async def eventually(predicate: Callable[[], object], timeout_secs: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (it watches another thread or process, which
    no asyncio primitive can signal); fail after ``timeout_secs``."""
    for _ in range(int(timeout_secs / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_secs} s")
