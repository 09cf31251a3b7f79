"""The emulator's HTTP surface: minting, validation, auth, expiry and every way a
request can be malformed. Nothing malformed may leave a peer connection behind."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from emulator_helpers import STANDARD_KEY, Emulator, error_of, loopback_client
from openai.types.beta.realtime.session_create_response import SessionCreateResponse
from openai.types.realtime.client_secret_create_response import ClientSecretCreateResponse

from relay.emulator import KEYS

AUTH = {"Authorization": f"Bearer {STANDARD_KEY}"}


async def post_json(
    emulator: Emulator, path: str, body: Any, headers: dict[str, str] | None = None
):  # type: ignore[no-untyped-def]
    response = await emulator.http.post(
        emulator.url(path), json=body, headers=AUTH if headers is None else headers
    )
    return response.status, await response.json()


async def test_mint_ga_client_secret(emulator: Emulator) -> None:
    data = await emulator.mint(
        {
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Speak like a pirate.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                    "noise_reduction": {"type": "near_field"},
                    "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.2},
            },
            "include": ["item.input_audio_transcription.logprobs"],
            "tracing": {"workflow_name": "emulator-test", "metadata": {"a": "b"}},
            "tools": [
                {"type": "function", "name": "lookup", "description": "Look up", "parameters": {}}
            ],
            "tool_choice": "auto",
            "max_output_tokens": 512,
            "truncation": {"type": "retention_ratio", "retention_ratio": 0.5},
        },
        expires_after={"anchor": "created_at", "seconds": 120},
    )
    ClientSecretCreateResponse.model_validate(data)
    assert data["value"].startswith("ek_") and len(data["value"]) == 35
    assert 110 <= data["expires_at"] - time.time() <= 121
    session = data["session"]
    assert session["instructions"] == "Speak like a pirate."
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }
    assert session["audio"]["output"]["voice"] == "marin"

    defaults = (await emulator.mint())["session"]
    ClientSecretCreateResponse.model_validate(
        {"value": "ek_x", "expires_at": 1, "session": defaults}
    )
    assert defaults["type"] == "realtime" and defaults["output_modalities"] == ["audio"]
    assert defaults["audio"]["input"]["turn_detection"]["threshold"] == 0.5
    assert defaults["audio"]["input"]["transcription"] is None
    for tracing in ("auto", None):
        await emulator.mint({"type": "realtime", "tracing": tracing})
    await emulator.mint(
        {"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    )
    await emulator.mint(
        {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}}},
        }
    )


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"session": {"instructions": "x"}}, "missing_required_parameter", "session.type"),
        ({"session": {"type": "realtime", "voice": "ash"}}, "unknown_parameter", "session.voice"),
        ({"bogus": 1}, "unknown_parameter", "bogus"),
        ({"session": {"type": "chat"}}, "invalid_value", "session.type"),
        (
            {
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                }
            },
            "integer_below_min_value",
            "session.audio.input.format.rate",
        ),
        (
            {
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"turn_detection": {"type": "loud_vad"}}},
                }
            },
            "invalid_value",
            "session.audio.input.turn_detection.type",
        ),
        (
            {
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
                }
            },
            "decimal_above_max_value",
            "session.audio.input.turn_detection.threshold",
        ),
        (
            {
                "session": {
                    "type": "realtime",
                    "tools": [{"type": "function", "name": "f", "description": "d" * 1025}],
                }
            },
            "string_above_max_length",
            "session.tools[0].description",
        ),
        (
            {"session": {"type": "realtime", "instructions": 5}},
            "invalid_type",
            "session.instructions",
        ),
        (
            {"session": {"type": "realtime", "output_modalities": ["text", "audio"]}},
            "invalid_value",
            "session.output_modalities",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 5}},
            "integer_below_min_value",
            "expires_after.seconds",
        ),
    ],
)
async def test_mint_validation(
    emulator: Emulator, body: dict[str, Any], code: str, param: str
) -> None:
    status, data = await post_json(emulator, "/v1/realtime/client_secrets", body)
    error = error_of(data)
    assert (status, error["code"], error["param"], error["type"]) == (
        400,
        code,
        param,
        "invalid_request_error",
    )


async def test_auth(emulator: Emulator) -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz"
    for headers in ({}, {"Authorization": f"Bearer {key}"}, {"Authorization": "Basic abc"}):
        status, data = await post_json(emulator, "/v1/realtime/client_secrets", {}, headers)
        error = error_of(data)
        assert (status, error["code"]) == (401, "invalid_api_key")
        assert key not in error["message"]
    assert (
        "sk-pr***yz"
        in error_of(
            (
                await post_json(
                    emulator, "/v1/realtime/client_secrets", {}, {"Authorization": f"Bearer {key}"}
                )
            )[1]
        )["message"]
    )
    ek = (await emulator.mint())["value"]
    status, data = await post_json(
        emulator, "/v1/realtime/client_secrets", {}, {"Authorization": f"Bearer {ek}"}
    )
    assert status == 401  # ephemeral keys cannot mint


async def test_mint_beta_session(emulator: Emulator) -> None:
    data = await emulator.mint_beta(
        model="gpt-4o-realtime-preview-2024-12-17",
        voice="verse",
        modalities=["audio", "text"],
        input_audio_transcription={"model": "whisper-1"},
        turn_detection={"type": "server_vad", "silence_duration_ms": 400},
    )
    SessionCreateResponse.model_validate(data)
    assert data["client_secret"]["value"].startswith("ek_")
    assert 50 <= data["client_secret"]["expires_at"] - time.time() <= 61  # beta: one minute
    assert data["turn_detection"]["silence_duration_ms"] == 400
    assert data["turn_detection"]["threshold"] == 0.5
    status, body = await post_json(emulator, "/v1/realtime/sessions", {"voice": "nobody"})
    assert (status, error_of(body)["code"], error_of(body)["param"]) == (
        400,
        "invalid_value",
        "voice",
    )


async def test_expired_ephemeral_key(emulator: Emulator) -> None:
    ek = (await emulator.mint())["value"]
    keys = emulator.app[KEYS]
    keys.clock = lambda: time.time() + 601  # past the default 600 s
    client = loopback_client()
    try:
        response = await client.connect(emulator.http, emulator.url("/v1/realtime/calls"), ek)
        error = error_of(await response.json())
        assert (response.status, error["code"]) == (401, "invalid_api_key")
        assert "expired" in error["message"]
    finally:
        await client.close()
    assert emulator.sessions.created == 0


async def test_secret_reuse_can_be_refused(start_emulator) -> None:  # type: ignore[no-untyped-def]
    emulator = await start_emulator(allow_secret_reuse=False)
    ek = (await emulator.mint())["value"]
    async with emulator.call(ek):
        pass
    client = loopback_client()
    try:
        response = await client.connect(emulator.http, emulator.url("/v1/realtime/calls"), ek)
        assert response.status == 401
    finally:
        await client.close()


async def _offer(data_channel: bool = True, audio: bool = True) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            pc.addTransceiver("audio")
        if data_channel:
            pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_malformed_requests_leave_nothing_open(emulator: Emulator) -> None:
    ek = (await emulator.mint())["value"]
    calls = emulator.url("/v1/realtime/calls")
    good = await _offer()
    no_audio = await _offer(audio=False)
    no_ice = "\r\n".join(line for line in good.splitlines() if not line.startswith("a=ice-"))
    no_fingerprint = "\r\n".join(
        line for line in good.splitlines() if not line.startswith("a=fingerprint")
    )
    broken_mline = re.sub(r"m=audio \d+ \S+", "m=audio x UDP", good)
    assert broken_mline != good

    async def post(data: Any, content_type: str | None = "application/sdp", token: str = ek,
                   url: str = calls) -> tuple[int, dict[str, Any]]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        response = await emulator.http.post(url, data=data, headers=headers)
        return response.status, await response.json()

    cases: list[tuple[tuple[int, dict[str, Any]], int, str | None]] = [
        (await post(no_audio), 400, "invalid_offer"),
        (await post(""), 400, "invalid_offer"),
        (await post("hello"), 400, "invalid_offer"),
        (await post("v=0\r\n"), 400, "invalid_offer"),
        (await post(no_ice), 400, "invalid_offer"),
        (await post(no_fingerprint), 400, "invalid_offer"),
        (await post(broken_mline), 400, "invalid_offer"),
        (await post(b"\xff\xfe\x00garbage"), 400, "invalid_offer"),
        (await post("x" * (70 * 1024)), 413, "request_too_large"),
        (await post(io.BytesIO(b"x" * (2 * 1024 * 1024))), 413, "request_too_large"),
        (await post(good, "application/json"), 415, "unsupported_content_type"),
        (await post("--nope\r\n\r\n", "multipart/form-data; boundary=zzz"), 400, None),
        (await post(good, "multipart/form-data"), 400, "invalid_multipart"),
        (await post(good, token="ek_" + "0" * 32), 401, "invalid_api_key"),
        (
            await post(
                "{", "application/json", STANDARD_KEY, emulator.url("/v1/realtime/client_secrets")
            ),
            400,
            "invalid_json",
        ),
        (
            await post(good, url=emulator.url("/v1/realtime?model=gpt-4o-nope")),
            401,
            "invalid_api_key",
        ),
    ]
    form = aiohttp.FormData()
    form.add_field("session", '{"type": "realtime"}', content_type="application/json")
    response = await emulator.http.post(calls, data=form, headers=AUTH)
    cases.append(((response.status, await response.json()), 400, "missing_required_parameter"))
    form = aiohttp.FormData()
    form.add_field("sdp", good, content_type="application/sdp")
    form.add_field("session", "{broken", content_type="application/json")
    response = await emulator.http.post(calls, data=form, headers=AUTH)
    cases.append(((response.status, await response.json()), 400, "invalid_json"))
    form = aiohttp.FormData()
    form.add_field("sdp", good, content_type="application/sdp")
    form.add_field(
        "session", '{"type": "realtime", "voice": "ash"}', content_type="application/json"
    )
    response = await emulator.http.post(calls, data=form, headers=AUTH)
    cases.append(((response.status, await response.json()), 400, "unknown_parameter"))
    for (status, body), expected_status, expected_code in cases:
        error = error_of(body)
        assert status == expected_status, (status, body)
        if expected_code is not None:
            assert error["code"] == expected_code, body
    assert error_of(cases[0][0][1])["message"] == (
        "Invalid SDP offer. Please try again with a WHIP-compliant offer."
    )

    for method, path, status in [
        ("GET", "/v1/realtime/calls", 405),
        ("POST", "/v1/nothing/here", 404),
        ("POST", "/v1/realtime/calls/rtc_unknown/hangup", 404),
    ]:
        response = await emulator.http.request(method, emulator.url(path), headers=AUTH)
        assert response.status == status
        error_of(await response.json())

    # Offers that reached aiortc and failed were closed; none is live.
    assert not emulator.sessions.active
    for call in emulator.sessions.calls():
        assert call.closed.is_set() and call.pc.connectionState == "closed"
    healthz = await emulator.http.get(emulator.url("/healthz"))
    assert (await healthz.json()) == {"status": "ok", "calls": 0}
