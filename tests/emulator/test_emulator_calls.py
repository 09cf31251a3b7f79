"""Calls into the emulator over real WebRTC: every way OpenAI accepts an offer."""

from __future__ import annotations

import asyncio
import re

import openai
from aiortc import RTCSessionDescription
from emulator_helpers import (
    STANDARD_KEY,
    Emulator,
    error_of,
    in_order,
    loopback_client,
    validate_events,
)

LOCATION = re.compile(r"^/v1/realtime/calls/(rtc_[0-9a-f]{32})$")


async def test_ga_ephemeral_call_and_hangup(emulator: Emulator) -> None:
    ek = (await emulator.mint({"type": "realtime", "instructions": "From the key."}))["value"]
    client = loopback_client()
    try:
        response = await client.connect(
            emulator.http, emulator.url("/v1/realtime/calls?model=gpt-realtime"), ek
        )
        answer = await response.text()
        assert response.status == 201
        assert response.headers["Content-Type"] == "application/sdp"
        match = LOCATION.match(response.headers["Location"])
        assert match, response.headers["Location"]
        call_id = match.group(1)
        lines = answer.splitlines()
        assert "a=ice-lite" in lines[: lines.index(next(x for x in lines if x.startswith("m=")))]
        assert any(
            re.match(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 \d+ typ host", x) for x in lines
        )
        assert "a=fmtp:96 minptime=10;useinbandfec=1" in lines  # mirrors aiortc's PT 96
        assert "a=setup:active" in lines

        created = await client.wait_for("session.created", timeout=10)
        assert client.events[0] is created
        assert created["session"]["instructions"] == "From the key."
        call = emulator.sessions.get(call_id)
        assert call is not None and call.pc.connectionState == "connected"

        # The caller's audio is consumed and recorded (silence here).
        await asyncio.sleep(0.5)
        assert call.received.frames > 10 and call.received.loud_frames() == 0

        hangup = await emulator.http.post(
            emulator.url(f"/v1/realtime/calls/{call_id}/hangup"),
            headers={"Authorization": f"Bearer {STANDARD_KEY}"},
        )
        assert hangup.status == 200
        assert call.closed.is_set() and call.pc.connectionState == "closed"
        assert call_id not in emulator.sessions.active
        again = await emulator.http.post(
            emulator.url(f"/v1/realtime/calls/{call_id}/hangup"),
            headers={"Authorization": f"Bearer {STANDARD_KEY}"},
        )
        assert again.status == 404 and error_of(await again.json())["code"] == "call_not_found"
    finally:
        await client.close()
    validate_events(client.events, "ga")


async def test_multipart_call_with_standard_key(emulator: Emulator) -> None:
    client = loopback_client()
    try:
        session = {
            "type": "realtime",
            "instructions": "From the form.",
            "output_modalities": ["text"],
        }
        response = await emulator.call_multipart(client, STANDARD_KEY, session)
        assert response.status == 201, await response.text()
        assert LOCATION.match(response.headers["Location"])
        created = await client.wait_for("session.created", timeout=10)
        assert created["session"]["instructions"] == "From the form."
        assert created["session"]["output_modalities"] == ["text"]
    finally:
        await client.close()
    validate_events(client.events, "ga")


async def test_official_sdk_calls_create(emulator: Emulator) -> None:
    sdk = openai.AsyncOpenAI(api_key=STANDARD_KEY, base_url=emulator.url("/v1"), max_retries=0)
    try:
        for session in ({"type": "realtime", "instructions": "From the SDK."}, None):
            client = loopback_client()
            try:
                offer = await client.offer()
                if session is None:  # the SDK then sends raw application/sdp
                    answer = await sdk.realtime.calls.create(sdp=offer)
                else:
                    answer = await sdk.realtime.calls.create(sdp=offer, session=session)  # type: ignore[arg-type]
                await client.pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
                created = await client.wait_for("session.created", timeout=10)
                expected = "From the SDK." if session else created["session"]["instructions"]
                assert created["session"]["instructions"] == expected
            finally:
                await client.close()
            validate_events(client.events, "ga")
        secret = await sdk.realtime.client_secrets.create(
            session={"type": "realtime", "model": "gpt-realtime"}
        )
        assert secret.value.startswith("ek_")
    finally:
        await sdk.close()


async def test_offer_without_candidates_connects(emulator: Emulator) -> None:
    """Browsers may POST before gathering: the emulator learns peer-reflexive
    addresses from the client's checks."""
    ek = (await emulator.mint())["value"]
    client = loopback_client()
    try:
        offer = await client.offer()
        stripped = (
            "\r\n".join(
                line
                for line in offer.splitlines()
                if not line.startswith(("a=candidate", "a=end-of-candidates"))
            )
            + "\r\n"
        )
        response = await emulator.http.post(
            emulator.url("/v1/realtime/calls"),
            data=stripped,
            headers={"Authorization": f"Bearer {ek}", "Content-Type": "application/sdp"},
        )
        assert response.status == 201
        await client.pc.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
        await client.wait_for("session.created", timeout=10)
    finally:
        await client.close()


async def test_beta_dialect(emulator: Emulator) -> None:
    minted = await emulator.mint_beta(
        model="gpt-4o-realtime-preview-2025-06-03", input_audio_transcription={"model": "whisper-1"}
    )
    path = "/v1/realtime?model=gpt-4o-realtime-preview-2024-12-17"
    async with emulator.call(minted["client_secret"]["value"], dialect="beta", path=path) as client:
        created = (await client.wait_for("session.created"))["session"]
        assert created["model"] == "gpt-4o-realtime-preview-2024-12-17"
        assert created["modalities"] == ["audio", "text"] and "audio" not in created
        assert created["expires_at"] - emulator.sessions.calls()[0].created_at <= 1801  # 30 min
        # Events sent right after open are processed in order.
        client.send(
            {"type": "session.update", "session": {"instructions": "Beta!", "voice": "ash"}}
        )
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Yo"}],
                },
            }
        )
        client.send({"type": "response.create"})
        done = await client.wait_for("response.done", timeout=10)
        assert in_order(
            client.types(),
            [
                "session.created",
                "session.updated",
                "conversation.item.created",
                "response.created",
                "rate_limits.updated",
                "response.output_item.added",
                "conversation.item.created",
                "response.content_part.added",
                "response.audio_transcript.delta",
                "response.audio.done",
                "response.audio_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.done",
            ],
        ), client.types()
        assert "conversation.item.added" not in client.types()
        assert done["response"]["output"][0]["content"][0]["type"] == "audio"
        assert done["response"]["voice"] == "ash"
        await client.wait_for("output_audio_buffer.stopped", timeout=10)
    # A GA key is refused at the beta endpoint, and vice versa.
    ga_key = (await emulator.mint())["value"]
    client = loopback_client()
    try:
        response = await client.connect(emulator.http, emulator.url(path), ga_key)
        assert response.status == 401
    finally:
        await client.close()
