"""A broken observer cannot hurt a call: real aiortc peers, real Opus, real HTTP."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from relay_fixtures import RelayUnderTest
from support import PacedAudioSource, realtime_client

from relay.http.state import METRICS
from relay.taps import CallInfo, Observer, Speaker, TappedEvent


class Exploding(Observer):
    """Raises on every frame and every event (and counts how often it was asked)."""

    name = "exploding"

    def __init__(self) -> None:
        self.audio_calls = 0
        self.event_calls = 0
        self.ended: list[str] = []

    def wants_agent_audio(self, call_id: str) -> bool:
        return True  # so agent audio is decoded and reaches audio() too

    def audio(self, call_id: str, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        self.audio_calls += 1
        raise RuntimeError("observer bug in audio")

    def event(self, call_id: str, event: TappedEvent) -> None:
        self.event_calls += 1
        raise RuntimeError("observer bug in event")

    def call_ended(self, call: CallInfo, end: object) -> None:
        self.ended.append(call.call_id)
        raise RuntimeError("observer bug at the end")


def _observer_errors(relay: RelayUnderTest) -> float:
    value = relay.app[METRICS].registry.get_sample_value(
        "realtime_relay_observer_errors_total", {"observer": "exploding"}
    )
    return value or 0.0


@pytest.mark.slow
async def test_a_raising_observer_never_ends_or_stalls_a_call(
    relay: RelayUnderTest, speech_48k: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    exploding = Exploding()
    relay.registry.add_observer(exploding)
    caplog.set_level(logging.ERROR, logger="relay.taps")
    turn = np.concatenate([speech_48k, np.zeros(48000 * 3 // 2, dtype=np.int16)])
    async with realtime_client(PacedAudioSource(turn, loop=True)) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201, await response.text()
        call_id = response.headers["Location"].rsplit("/", 1)[-1]
        call = relay.registry.get_call(call_id)
        await client.wait_for("session.created", timeout=10)
        caller_before = call.caller_audio.frames_in
        agent_before = client.sink.loud_frames()
        await asyncio.sleep(10)
        # Audio went both ways the whole time: 10 s is 500 frames of 20 ms.
        assert call.caller_audio.frames_in - caller_before > 400
        assert call.uplink.frames_sent > 400
        assert client.sink.loud_frames() - agent_before > 25, "the agent went quiet"
        assert call.state == "active"
        hangup = await relay.http.post(relay.url(f"/v1/realtime/calls/{call_id}/hangup"))
        assert hangup.status == 200
        await call.wait_closed()
    assert call.outcome == "hangup"
    # Detached at its first failure (an event or a frame, whichever came first).
    assert exploding.audio_calls + exploding.event_calls == 1
    assert exploding.ended == [call_id]  # still told the call ended, to release its state
    assert _observer_errors(relay) == 1.0
    failures = [r for r in caplog.records if "observer exploding failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is not None  # with its traceback


async def test_an_observer_raising_on_events_only_is_detached_once(
    relay: RelayUnderTest,
) -> None:
    class BadEvents(Observer):
        name = "exploding"
        seen = 0

        def event(self, call_id: str, event: TappedEvent) -> None:
            BadEvents.seen += 1
            raise ValueError("bad")

    relay.registry.add_observer(BadEvents())
    async with realtime_client(PacedAudioSource()) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        await client.wait_for("session.created", timeout=10)
        client.send({"type": "session.update", "session": {"type": "realtime"}})
        await client.wait_for("session.updated")  # events keep flowing both ways
    assert BadEvents.seen == 1
    assert _observer_errors(relay) == 1.0
