"""The WebSocket upstream (``RELAY_UPSTREAM_TRANSPORT=websocket``) passes the call tests
of the WebRTC one: a real aiortc caller with real Opus and real speech, the relay
talking to the emulator over OpenAI's WebSocket transport. The browser's side is the
same WebRTC event protocol: the relay makes the ``output_audio_buffer.*`` events and
truncates on barge-in to what it actually played."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client, rms_dbfs
from test_relay_calls import (
    TURN_EVENTS_IN_ORDER,
    call_relay,
    in_order,
    speak_a_transcribed_turn,
)

from relay.call import Call
from relay.config import EmulatorSettings
from relay.embedded import EMULATOR
from relay.emulator import SESSIONS, EmulatedSession

pytestmark = pytest.mark.timeout(90)

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
LONG_ANSWER = "Say: " + "this is a long answer that the caller will interrupt " * 6


@pytest.fixture
async def relay(start_relay: RelayFactory) -> RelayUnderTest:
    return await start_relay(upstream_transport="websocket")


async def _emulated(relay: RelayUnderTest) -> EmulatedSession:
    session: EmulatedSession = await relay.app[EMULATOR][SESSIONS].wait_for_call(timeout_secs=5)
    assert session.transport == "websocket"
    return session


async def _eventually(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def test_spoken_turn_over_websocket_upstream(
    relay: RelayUnderTest, speech_48k: np.ndarray
) -> None:
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        created = await client.wait_for("session.created", timeout=10)
        assert client.types()[0] == "session.created"
        emulated = await _emulated(relay)
        assert created["session"]["id"] == emulated.session_id
        await speak_a_transcribed_turn(client, speech_48k)
        await client.wait_for("output_audio_buffer.stopped", timeout=30)
        types = client.types()
        assert in_order(types, TURN_EVENTS_IN_ORDER), types
        assert types.count("session.created") == 1
        assert "response.output_audio.delta" not in types
        for event in client.events:
            SERVER_EVENT.validate_python(event)
        assert client.sink.loud_frames() > 25, "the agent's audio did not reach the caller"
        assert rms_dbfs(client.sink.samples()) > -50
        # the caller's speech reached OpenAI as appended PCM, and was heard as a turn
        assert emulated.received.loud_frames() > 50
        appended = [
            e for e in emulated.client_events if e.get("type") == "input_audio_buffer.append"
        ]
        assert len(appended) > 100
        call: Call = relay.registry.get_call(call_id)
        snapshot = call.snapshot()
        assert snapshot["legs"]["upstream"]["transport"] == "websocket"
        assert snapshot["audio"]["upstream_frames_out"] > 100
        assert call.agent_audio.last_response_secs is not None
        assert 0.04 < call.agent_audio.last_response_secs < 5
        assert any(t["role"] == "user" for t in snapshot["transcripts"])
        assert any(t["role"] == "agent" for t in snapshot["transcripts"])


async def _long_answer_playing(client: RealtimeClient) -> dict[str, Any]:
    await client.wait_for("session.created", timeout=10)
    client.send({"type": "response.create", "response": {"instructions": LONG_ANSWER}})
    return await client.wait_for("output_audio_buffer.started", timeout=15)


async def test_barge_in_truncates_to_what_was_played(
    relay: RelayUnderTest, speech_48k: np.ndarray
) -> None:
    async with realtime_client(PacedAudioSource()) as client:
        await call_relay(relay, client)
        started = await _long_answer_playing(client)
        started_at = time.monotonic()
        await asyncio.sleep(1.0)
        client.source.play(speech_48k)
        await client.wait_for("input_audio_buffer.speech_started", timeout=10)
        cleared = await client.wait_for("output_audio_buffer.cleared", timeout=5)
        played_secs = time.monotonic() - started_at
        truncated = await client.wait_for("conversation.item.truncated", timeout=5)
        emulated = await _emulated(relay)
    assert cleared["response_id"] == started["response_id"]
    # what the caller heard: about the 1 s before it spoke (less what the events took
    # to arrive on a loaded machine), never more than the time since the audio
    # started, and far less than the answer (many seconds of speech)
    assert 500 <= truncated["audio_end_ms"] <= played_secs * 1000 + 100
    types = client.types()
    assert "output_audio_buffer.stopped" not in types[types.index("output_audio_buffer.started") :]
    truncates = [e for e in emulated.client_events if e.get("type") == "conversation.item.truncate"]
    assert [t["audio_end_ms"] for t in truncates] == [truncated["audio_end_ms"]]


async def test_browser_clear_is_answered_by_the_relay(relay: RelayUnderTest) -> None:
    """``output_audio_buffer.clear`` (a WebRTC-only event) stops the agent's audio and is
    answered with ``cleared``, as over WebRTC; it is not sent to OpenAI's WebSocket,
    which has no such event."""
    async with realtime_client(PacedAudioSource()) as client:
        await call_relay(relay, client)
        await _long_answer_playing(client)
        await asyncio.sleep(0.6)
        client.send({"type": "output_audio_buffer.clear"})
        await client.wait_for("output_audio_buffer.cleared", timeout=5)
        await asyncio.sleep(0.3)  # what was on its way
        heard = client.sink.loud_frames()
        await asyncio.sleep(1.0)
        after = client.sink.loud_frames()
        emulated = await _emulated(relay)
    assert after - heard <= 5  # not the rest of the answer (still being generated)
    sent = [e.get("type") for e in emulated.client_events]
    assert "output_audio_buffer.clear" not in sent
    assert "error" not in client.types()


async def test_hangup_closes_the_upstream_socket(relay: RelayUnderTest) -> None:
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        call: Call = relay.registry.get_call(call_id)
        await client.wait_for("session.created", timeout=10)
        emulated = await _emulated(relay)
        response = await relay.http.post(relay.url(f"/v1/realtime/calls/{call_id}/hangup"))
        assert response.status == 200
        assert call.state == "ended"
        assert call.snapshot()["legs"]["upstream"]["connection_state"] == "closed"
        assert not call._tasks
        await asyncio.wait_for(emulated.closed.wait(), 5)
        with pytest.raises(AttributeError):
            _ = call.upstream_pc


async def test_upstream_session_end_reaches_the_browser(start_relay: RelayFactory) -> None:
    emulator = EmulatorSettings(ice_addresses=("127.0.0.1",), max_session_secs=2.0)
    relay = await start_relay(upstream_transport="websocket", emulator=emulator)
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        await client.wait_for("session.created", timeout=10)
        expired = await client.wait_for("error", timeout=10)
        assert expired["error"]["code"] == "session_expired"
        ended = await client.wait_for("error", timeout=5, after=client.types().index("error") + 1)
        assert ended["error"]["code"] == "upstream_session_ended"
        await _eventually(lambda: relay.registry.get(call_id) is None, 5)


async def test_websocket_on_both_legs(relay: RelayUnderTest, speech_48k: np.ndarray) -> None:
    """A caller on the relay's WebSocket and the relay on OpenAI's: the whole call over
    HTTPS-only networks on both sides; a spoken turn, its transcript and the agent's
    audio, and a barge-in that truncates."""
    from test_ws_caller import WS_PATH, speak_a_turn, to_24k_frames, ws_call

    async with ws_call(relay.http, relay.url(WS_PATH)) as caller:
        await caller.wait_for("session.created", timeout=10)
        await speak_a_turn(caller, speech_48k)
        await caller.wait_for("output_audio_buffer.started", timeout=20)
        await caller.wait_for("output_audio_buffer.stopped", timeout=30)
        assert len(caller.loud_frames()) > 25, "the agent's audio did not reach the caller"
        before = len(caller.events)
        caller.send({"type": "response.create", "response": {"instructions": LONG_ANSWER}})
        await caller.wait_for("output_audio_buffer.started", timeout=20, after=before)
        await asyncio.sleep(1.0)
        caller.play(to_24k_frames(speech_48k))  # barge in
        await caller.wait_for("output_audio_buffer.cleared", timeout=10, after=before)
        truncated = await caller.wait_for("conversation.item.truncated", timeout=10, after=before)
    assert truncated["audio_end_ms"] >= 500
    assert "response.output_audio.delta" not in caller.types()


def test_websocket_upstream_needs_the_ga_dialect() -> None:
    from relay.config import Settings, check

    problems = check(Settings(upstream_transport="websocket", openai_dialect="beta"))
    assert any("RELAY_UPSTREAM_TRANSPORT" in p for p in problems)
    assert not check(Settings(upstream_transport="websocket"))


def test_playout_reports_what_it_played() -> None:
    """The paced player, driven frame by frame: ``started`` with the first frame of a
    response, ``stopped`` after its last, and a clear returns exactly what was sent."""
    from relay.upstream.playout import AgentPlayout

    packets: list[tuple[bytes, int]] = []
    events: list[tuple[str, str]] = []
    playout = AgentPlayout(
        lambda p, ts: packets.append((p, ts)), lambda k, r: events.append((k, r))
    )
    tone = (np.sin(np.arange(24000) / 24000 * 2 * np.pi * 440) * 8000).astype(np.int16)
    playout.play_one()  # idle: silence, no event
    assert events == []
    playout.add("resp_1", "item_1", tone[:12000])  # 500 ms
    playout.add("resp_1", "item_1", tone[12000:])  # and 500 ms more
    playout.end("resp_1")
    for _ in range(49):
        playout.play_one()
    assert events == [("started", "resp_1")]
    playout.play_one()  # the 50th frame: the last of the response
    assert events == [("started", "resp_1"), ("stopped", "resp_1")]
    playout.add("resp_2", "item_2", tone)
    for _ in range(12):
        playout.play_one()
    (cut,) = playout.clear()
    assert (cut.response_id, cut.item_id, cut.played_ms) == ("resp_2", "item_2", 240)
    assert events[-1] == ("cleared", "resp_2")
    playout.add("resp_2", "item_2", tone)  # late audio of a cleared response: dropped
    assert not playout.playing
    timestamps = [ts for _, ts in packets]
    assert timestamps == [i * 960 for i in range(len(packets))]  # 48 kHz RTP clock, no gaps
