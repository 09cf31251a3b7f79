"""The emulator's own WebSocket transport, driven by the official ``openai`` SDK:
``client.realtime.connect(model=...)`` talks audio and text to a session of its own,
and ``connect(call_id=...)`` attaches to a live WebRTC call as a sideband."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from emulator_helpers import STANDARD_KEY, Emulator, validate_events

pytestmark = pytest.mark.timeout(60)

RATE = 24000
AUTH = {"Authorization": f"Bearer {STANDARD_KEY}"}


def _tone(secs: float, amplitude: int = 8000) -> bytes:
    t = np.arange(int(secs * RATE)) / RATE
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype("<i2").tobytes()


def _client(emulator: Emulator, key: str = STANDARD_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=emulator.url("/v1"))


async def _until(connection: Any, type_: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(20):
        async for event in connection:
            data = event.model_dump(mode="json", exclude_unset=True)
            seen.append(data)
            if event.type == type_:
                return data
    raise AssertionError(f"the connection closed before {type_}")


async def test_sdk_text_turn_over_websocket(emulator: Emulator) -> None:
    seen: list[dict[str, Any]] = []
    async with _client(emulator).realtime.connect(model="gpt-realtime") as connection:
        created = await _until(connection, "session.created", seen)
        assert seen[0]["type"] == "session.created"
        assert created["session"]["model"] == "gpt-realtime"
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello there"}],
            }
        )
        await connection.response.create()
        done = await _until(connection, "response.done", seen)
    assert done["response"]["status"] == "completed"
    types = [e["type"] for e in seen]
    deltas = [e for e in seen if e["type"] == "response.output_audio.delta"]
    assert deltas, types
    pcm = b"".join(base64.b64decode(e["delta"]) for e in deltas)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert samples.size > RATE // 4  # at least 250 ms of 24 kHz speech
    assert np.abs(samples).max() > 1000
    assert not any(t.startswith("output_audio_buffer.") for t in types)
    validate_events(seen, "ga")


async def test_appended_audio_is_heard_and_answered(emulator: Emulator) -> None:
    seen: list[dict[str, Any]] = []
    async with _client(emulator).realtime.connect(model="gpt-realtime") as connection:
        await _until(connection, "session.created", seen)
        silence = _tone(0.2, amplitude=0)
        for chunk in [silence, _tone(0.8), silence * 5]:  # speech, then 1 s of silence
            for start in range(0, len(chunk), 960):  # 20 ms chunks
                await connection.input_audio_buffer.append(
                    audio=base64.b64encode(chunk[start : start + 960]).decode()
                )
        started = await _until(connection, "input_audio_buffer.speech_started", seen)
        stopped = await _until(connection, "input_audio_buffer.speech_stopped", seen)
        await _until(connection, "response.output_audio.delta", seen)
        await _until(connection, "response.done", seen)
    assert 0 <= started["audio_start_ms"] <= 300
    assert 800 <= stopped["audio_end_ms"] <= 1300
    session = emulator.sessions.latest()
    assert session is not None and session.transport == "websocket"
    assert session.received.loud_frames() >= 35  # the 0.8 s tone, 20 ms frames


async def test_barge_in_cancels_without_server_truncation(emulator: Emulator) -> None:
    """Over WebSocket the client truncates: the server cancels the response and
    clears nothing itself; the client's truncate is answered."""
    seen: list[dict[str, Any]] = []
    async with _client(emulator).realtime.connect(model="gpt-realtime") as connection:
        await _until(connection, "session.created", seen)
        await connection.response.create(
            response={"instructions": "Say: " + "a long sentence to interrupt " * 8}
        )
        delta = await _until(connection, "response.output_audio.delta", seen)
        for start in range(0, 48000, 960):  # 1 s of speech
            chunk = _tone(1.0)[start : start + 960]
            await connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        await _until(connection, "input_audio_buffer.speech_started", seen)
        done = await _until(connection, "response.done", seen)
        assert done["response"]["status"] == "cancelled"
        await connection.conversation.item.truncate(
            item_id=delta["item_id"], content_index=0, audio_end_ms=100
        )
        truncated = await _until(connection, "conversation.item.truncated", seen)
    assert truncated["audio_end_ms"] == 100
    types = [e["type"] for e in seen]
    assert types.count("conversation.item.truncated") == 1
    assert not any(t.startswith("output_audio_buffer.") for t in types)


async def test_ephemeral_key_session_over_websocket(emulator: Emulator) -> None:
    minted = await emulator.mint({"type": "realtime", "instructions": "Be brief."})
    seen: list[dict[str, Any]] = []
    async with _client(emulator, minted["value"]).realtime.connect(model="gpt-realtime") as conn:
        created = await _until(conn, "session.created", seen)
    assert created["session"]["instructions"] == "Be brief."


@pytest.mark.parametrize(
    ("headers", "query", "close_code", "code"),
    [
        ({"Authorization": "Bearer sk-wrong"}, "model=gpt-realtime", 3000, "invalid_api_key"),
        ({}, "model=gpt-realtime", 3000, None),
        (AUTH, "", 4000, "missing_model"),
        (
            {"Authorization": f"Bearer {STANDARD_KEY}"},
            "call_id=rtc_nope",
            4000,
            "call_id_not_found",
        ),
    ],
)
async def test_refusals_upgrade_then_error_and_close(
    emulator: Emulator, headers: dict[str, str], query: str, close_code: int, code: str | None
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(emulator.url(f"/v1/realtime?{query}"), headers=headers) as ws,
    ):
        message = await ws.receive(timeout=5)
        error = json.loads(message.data)
        closing = await ws.receive(timeout=5)
    assert error["type"] == "error"
    assert error["error"]["code"] == code
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == close_code


async def test_subprotocol_auth(emulator: Emulator) -> None:
    protocols = ("realtime", f"openai-insecure-api-key.{STANDARD_KEY}")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(emulator.url("/v1/realtime?model=gpt-realtime"), protocols=protocols) as ws,
    ):
        first = json.loads((await ws.receive(timeout=5)).data)
        await ws.send_bytes(b"\x00\x01")
        refused = json.loads((await ws.receive(timeout=5)).data)
    assert ws.protocol == "realtime"
    assert first["type"] == "session.created"
    assert refused["error"]["code"] == "invalid_event"


async def test_session_cap_closes_with_1001(start_emulator: Any) -> None:
    emulator = await start_emulator(max_session_secs=1.0)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            emulator.url("/v1/realtime?model=gpt-realtime"),
            headers={"Authorization": f"Bearer {STANDARD_KEY}"},
        ) as ws,
    ):
        events = []
        async with asyncio.timeout(5):
            async for message in ws:
                events.append(json.loads(message.data))
    assert events[-1]["error"]["code"] == "session_expired"
    assert ws.close_code == 1001


async def test_sideband_sees_a_live_call_and_acts_in_it(emulator: Emulator) -> None:
    seen: list[dict[str, Any]] = []
    async with emulator.call() as browser:
        call = emulator.sessions.latest()
        assert call is not None and call.transport == "webrtc"
        async with _client(emulator).realtime.connect(call_id=call.id) as sideband:
            await sideband.response.create(response={"instructions": "Say: from the backend"})
            done = await _until(sideband, "response.done", seen)
            # the browser hears the same response, on its track
            await browser.wait_for("output_audio_buffer.started", timeout=10)
            await emulator.http.post(
                emulator.url(f"/v1/realtime/calls/{call.id}/hangup"),
                headers={"Authorization": f"Bearer {STANDARD_KEY}"},
            )
            async with asyncio.timeout(10):  # the call ended: the sideband closes
                async for event in sideband:
                    seen.append(event.model_dump(mode="json"))
    assert done["response"]["status"] == "completed"
    assert "response.output_audio.delta" not in [e["type"] for e in seen]
    assert not call.listeners
