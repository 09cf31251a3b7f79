"""Caller reconnect (relay.caller.resume): a caller whose connection fails keeps its call
for ``RELAY_CALLER_GRACE_SECS`` and resumes it with a new leg and the resume token it
got at set-up; what OpenAI said meanwhile reaches it after, in order. A hang-up or a
deliberate close still ends the call at once."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from aiortc import RTCSessionDescription
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client
from test_ws_caller import WsCaller, to_24k_frames

from relay import aiortc_patches
from relay.caller.resume import RESUME_HEADER
from relay.config import Secret
from relay.embedded import EMULATOR
from relay.emulator.app import SESSIONS
from relay.taps import Observer, TappedEvent

pytestmark = pytest.mark.timeout(90)

API_KEY = "sk-relay-reconnect-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
GRACE_SECS = 10.0
#: How soon the relay notices a vanished caller: its audio stops for the media timeout,
#: then a connectivity check goes unanswered.
MEDIA_TIMEOUT_SECS = 1.0


class EventLog(Observer):
    """Every tapped event, as the relay's observers (monitor, sideband) get them."""

    def __init__(self) -> None:
        self.events: list[TappedEvent] = []

    def event(self, call_id: str, event: TappedEvent) -> None:
        self.events.append(event)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def server_ids_after(self, kind: str) -> list[str]:
        start = self.types().index(kind)
        return [
            str(e.data["event_id"])
            for e in self.events[start:]
            if e.direction == "server" and "event_id" in e.data
        ]


async def eventually(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def reconnect_relay(start_relay: RelayFactory, **overrides: Any) -> RelayUnderTest:
    settings: dict[str, Any] = {
        "open_mode": False,
        "relay_api_key": Secret(API_KEY),
        "caller_grace_secs": GRACE_SECS,
        "media_timeout_secs": MEDIA_TIMEOUT_SECS,
    }
    return await start_relay(**{**settings, **overrides})


async def start_call(relay: RelayUnderTest, client: RealtimeClient) -> tuple[str, str]:
    """A call with a freshly minted client secret: (call id, resume token)."""
    minted = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"), json={"session": {}}, headers=AUTH
    )
    assert minted.status == 200
    response = await client.connect(relay.http, relay.calls_url, (await minted.json())["value"])
    assert response.status == 201, await response.text()
    assert client.location is not None
    await client.wait_for("session.created", timeout=10)
    return client.location.rsplit("/", 1)[-1], response.headers[RESUME_HEADER]


def vanish(client: RealtimeClient) -> None:
    """The client's network goes: no more audio, no answer to connectivity checks, no
    goodbye (nothing is closed)."""
    for transceiver in client.pc.getTransceivers():
        transceiver.sender.replaceTrack(None)
    for connection in aiortc_patches.ice_connections(client.pc):
        connection.request_received = lambda *args: None  # type: ignore[method-assign]


async def resume(
    relay: RelayUnderTest, client: RealtimeClient, call_id: str, token: str | None
) -> aiohttp.ClientResponse:
    """The client's new leg: its offer to the resume route, the answer applied on 201."""
    sdp = await client.offer()
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers[RESUME_HEADER] = token
    url = relay.url(f"/v1/realtime/calls/{call_id}/resume")
    response = await relay.http.post(url, data=sdp, headers=headers)
    if response.status == 201:
        answer = await response.text()
        await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return response


def user_says(send: Any, text: str) -> None:
    content = [{"type": "input_text", "text": text}]
    item = {"type": "message", "role": "user", "content": content}
    send({"type": "conversation.item.create", "item": item})
    send({"type": "response.create"})


async def test_a_lost_caller_resumes_the_same_call(
    start_relay: RelayFactory, speech_48k: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller vanishes; the backend keeps talking over the sideband; the caller's new
    leg (with the token) gets, in order, every event of the gap, then audio both ways on
    the same call and the same upstream session."""
    caplog.set_level(logging.DEBUG)
    relay = await reconnect_relay(start_relay)
    log = EventLog()
    relay.registry.add_observer(log)
    emulator = relay.app[EMULATOR][SESSIONS]
    backend = openai.AsyncOpenAI(api_key=API_KEY, base_url=relay.url("/v1"))
    first = RealtimeClient(PacedAudioSource())
    try:
        call_id, token = await start_call(relay, first)
        call = relay.registry.get_call(call_id)
        upstream_call_id = call.upstream.call_id
        async with backend.realtime.connect(call_id=call_id) as sideband:
            vanish(first)
            lost_at = time.monotonic()
            await eventually(lambda: call.grace.waiting, MEDIA_TIMEOUT_SECS + 4, "the loss")
            assert call.state == "active"
            # The backend talks while the caller is gone: the answer's events are kept.
            user_says(lambda e: asyncio.ensure_future(sideband.send(e)), "Say something.")
            await eventually(lambda: "response.done" in log.types(), 15, "the answer")
            async with realtime_client(PacedAudioSource()) as second:
                response = await resume(relay, second, call_id, token)
                assert response.status == 201, await response.text()
                assert response.headers["Location"] == f"/v1/realtime/calls/{call_id}"
                await second.wait_for("response.done", timeout=10)
                gap_ids = log.server_ids_after("relay.caller.disconnected")
                got = [e["event_id"] for e in second.events]
                assert got == gap_ids[: len(got)], "the gap's events, all and in order"
                assert "response.created" in second.types()
                assert time.monotonic() - lost_at < GRACE_SECS
                await _audio_both_ways(call, second, speech_48k)
                assert relay.registry.get_call(call_id) is call and call.state == "active"
        assert call.upstream.call_id == upstream_call_id
        assert emulator.created == 1, "a second upstream session was opened"
        assert "relay.caller.resumed" in log.types()
        snapshot = call.snapshot()
        assert snapshot["reconnect"]["resumes"] == 1
        # The token went to the caller only: not in snapshots, observers or logs.
        assert token not in json.dumps(snapshot)
        assert not any(token in e.text for e in log.events)
        assert token not in caplog.text
    finally:
        await first.close()
        await backend.close()


async def _audio_both_ways(call: Any, client: RealtimeClient, speech_48k: np.ndarray) -> None:
    """After a resume: the caller's audio reaches the relay, the agent's reaches it."""
    frames_in = call.caller_audio.frames_in
    client.source.play(speech_48k)
    await eventually(lambda: call.caller_audio.frames_in > frames_in + 50, 10, "caller audio")
    loud = client.sink.loud_frames()
    user_says(client.send, "Say something again.")
    await eventually(lambda: client.sink.loud_frames() > loud + 25, 20, "the agent's audio")


async def test_wrong_token_refused_and_grace_expiry_ends_the_call(
    start_relay: RelayFactory,
) -> None:
    """Without the call's token the resume is refused (401 in OpenAI's envelope); a
    caller that does not come back within the grace ends the call as ``caller_lost``."""
    grace = 2.0
    relay = await reconnect_relay(start_relay, caller_grace_secs=grace)
    log = EventLog()
    relay.registry.add_observer(log)
    async with realtime_client(PacedAudioSource()) as first:
        call_id, token = await start_call(relay, first)
        call = relay.registry.get_call(call_id)
        vanish(first)
        await eventually(lambda: call.grace.waiting, MEDIA_TIMEOUT_SECS + 4, "the loss")
        lost_at = time.monotonic()
        for wrong in (None, "", token[:-1], token + "x", "not-" + token):
            async with realtime_client() as intruder:
                response = await resume(relay, intruder, call_id, wrong)
                body = await response.json()
                assert response.status == 401, body
                assert body["error"]["code"] == "invalid_resume_token"
                assert token not in json.dumps(body)
        async with realtime_client() as other:
            response = await resume(relay, other, "rtc_" + "0" * 32, token)
            assert response.status == 404
        assert call.state == "active", "a refused resume does not end the call"
        await asyncio.wait_for(call.wait_closed(), grace + 3)
        assert call.outcome == "caller_lost"
        assert grace - 0.2 < time.monotonic() - lost_at < grace + 1.5
        disconnected = next(e for e in log.events if e.type == "relay.caller.disconnected")
        assert disconnected.data["reason"] == "caller_media_timeout"
        assert disconnected.data["grace_secs"] == grace
        async with realtime_client() as late:
            response = await resume(relay, late, call_id, token)
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "call_not_found"


async def test_a_caller_that_closes_ends_the_call_at_once(start_relay: RelayFactory) -> None:
    """Closing the peer connection (DTLS close) is a goodbye: no grace."""
    relay = await reconnect_relay(start_relay)
    async with realtime_client(PacedAudioSource()) as client:
        call_id, _ = await start_call(relay, client)
        call = relay.registry.get_call(call_id)
        await client.pc.close()
        await asyncio.wait_for(call.wait_closed(), 3)
        assert call.outcome == "caller_closed"
        assert not call.grace.waiting


async def test_a_resume_replaces_a_leg_the_relay_thought_alive(
    start_relay: RelayFactory,
) -> None:
    """The browser may notice the failure before the relay does: its new leg replaces
    the old one at once, on the same call."""
    relay = await reconnect_relay(start_relay)
    async with realtime_client(PacedAudioSource()) as first:
        call_id, token = await start_call(relay, first)
        call = relay.registry.get_call(call_id)
        old = call.caller
        async with realtime_client(PacedAudioSource()) as second:
            response = await resume(relay, second, call_id, token)
            assert response.status == 201
            await asyncio.wait_for(second.channel_open.wait(), 10)
            await eventually(lambda: old.pc.connectionState == "closed", 5, "the old leg closed")
            assert call.caller is not old and call.state == "active"
            user_says(second.send, "Hello again.")
            await second.wait_for("response.done", timeout=15)
            assert not call.grace.waiting


async def open_socket(relay: RelayUnderTest, path: str, protocol: str) -> WsCaller:
    ws = await relay.http.ws_connect(relay.url(path), protocols=["realtime", protocol])
    caller = WsCaller(ws)
    caller.tasks = [  # type: ignore[attr-defined]
        asyncio.ensure_future(caller.receive()),
        asyncio.ensure_future(caller.send_microphone()),
    ]
    return caller


async def close_socket(caller: WsCaller, *, abort: bool = False) -> None:
    """Close the socket (a close frame), or ``abort``: the connection just dies."""
    if abort:
        caller.ws._conn.transport.abort()  # type: ignore[union-attr]
    else:
        await caller.ws.close()
    for task in caller.tasks:  # type: ignore[attr-defined]
        task.cancel()
    await asyncio.gather(*caller.tasks, return_exceptions=True)  # type: ignore[attr-defined]


async def test_a_dropped_websocket_resumes_on_a_new_socket(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    """A WebSocket leg that dies without a close frame is waited for; a new socket with
    the token from ``relay.call`` carries on the call (the gap's events first, in order);
    a close frame then ends the call at once."""
    relay = await reconnect_relay(start_relay)
    log = EventLog()
    relay.registry.add_observer(log)
    minted = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"), json={"session": {}}, headers=AUTH
    )
    secret = (await minted.json())["value"]
    backend = openai.AsyncOpenAI(api_key=API_KEY, base_url=relay.url("/v1"))
    first = await open_socket(relay, "/v1/realtime/ws", f"openai-insecure-api-key.{secret}")
    hello = await first.wait_for("relay.call", timeout=10)
    call_id, token = hello["call_id"], hello["resume_token"]
    await first.wait_for("session.created", timeout=10)
    call = relay.registry.get_call(call_id)
    async with backend.realtime.connect(call_id=call_id) as sideband:
        await close_socket(first, abort=True)
        await eventually(lambda: call.grace.waiting, 5, "the loss")
        assert call.grace.reason == "caller_dropped"
        user_says(lambda e: asyncio.ensure_future(sideband.send(e)), "Say something.")
        await eventually(lambda: "response.done" in log.types(), 15, "the answer")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_socket(relay, f"/v1/realtime/calls/{call_id}/resume", "relay-resume.x")
        assert refused.value.status == 401
        path = f"/v1/realtime/calls/{call_id}/resume"
        second = await open_socket(relay, path, f"relay-resume.{token}")
        try:
            await second.wait_for("response.done", timeout=10)
            assert second.events[0]["type"] == "relay.call"
            assert "resume_token" not in second.events[0]
            gap_ids = log.server_ids_after("relay.caller.disconnected")
            got = [e["event_id"] for e in second.events[1:]]
            assert got == gap_ids[: len(got)], "the gap's events, all and in order"
            frames_in = call.caller_audio.frames_in
            second.play(to_24k_frames(speech_48k))
            await eventually(lambda: call.caller_audio.frames_in > frames_in + 50, 10, "audio in")
            after = second.received
            user_says(second.send, "Say something again.")
            await eventually(lambda: len(second.loud_frames(after)) > 25, 20, "agent audio")
            assert call.snapshot()["transport"] == "websocket"
        finally:
            await close_socket(second)
    await asyncio.wait_for(call.wait_closed(), 3)
    assert call.outcome == "caller_closed"
    assert relay.app[EMULATOR][SESSIONS].created == 1
    await backend.close()
