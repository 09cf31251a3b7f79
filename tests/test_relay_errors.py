"""Bad input and failing upstreams get clear errors in OpenAI's envelope, and leave
no call, peer connection or task behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient

from relay.config import Secret

DATA_ONLY_OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sctp-port:5000\r\n"  # noqa: E501


async def envelope(response: aiohttp.ClientResponse) -> dict[str, object]:
    body = await response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "code", "param"} <= set(body["error"]), body
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


async def offer_sdp() -> str:
    client = RealtimeClient(PacedAudioSource())
    try:
        return await client.offer()
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("hello", "application/sdp", 400, "invalid_offer"),
        (DATA_ONLY_OFFER, "application/sdp", 400, "invalid_offer"),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "application/sdp", 400, "invalid_offer"),
        ("v=0\r\n" + "a=x\r\n" * 40000, "application/sdp", 413, "payload_too_large"),
        ('{"sdp": "v=0"}', "application/json", 400, "unsupported_content_type"),
    ],
)
async def test_bad_offers(
    relay: RelayUnderTest, body: str, content_type: str, status: int, code: str
) -> None:
    response = await relay.http.post(
        relay.calls_url, data=body, headers={"Content-Type": content_type}
    )
    assert response.status == status
    assert (await envelope(response))["code"] == code
    assert len(relay.registry) == 0


async def test_multipart_without_sdp(relay: RelayUnderTest) -> None:
    form = aiohttp.FormData()
    form.add_field("session", json.dumps({"type": "realtime"}), content_type="application/json")
    response = await relay.http.post(relay.calls_url, data=form)
    assert response.status == 400
    assert (await envelope(response))["param"] == "sdp"


async def test_wrong_method_and_unknown_route(relay: RelayUnderTest) -> None:
    response = await relay.http.get(relay.calls_url)
    assert response.status == 405
    assert (await envelope(response))["code"] == "method_not_allowed"
    response = await relay.http.post(relay.url("/v1/realtime/nothing"))
    assert response.status == 404
    await envelope(response)


async def test_bad_json_to_client_secrets(relay: RelayUnderTest) -> None:
    response = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"),
        data="{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert (await envelope(response))["code"] == "invalid_json"
    response = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"), json={"expires_after": {"seconds": 5}}
    )
    assert response.status == 400
    assert (await envelope(response))["param"] == "expires_after.seconds"


async def test_keys_are_required_unless_open(start_relay: RelayFactory) -> None:
    relay = await start_relay(open_mode=False, relay_api_key=Secret("relay-key-123456"))
    sdp = await offer_sdp()
    headers = {"Content-Type": "application/sdp"}
    response = await relay.http.post(relay.calls_url, data=sdp, headers=headers)
    assert response.status == 401
    assert (await envelope(response))["code"] == "missing_api_key"
    bad = {**headers, "Authorization": "Bearer ek_0123456789abcdef0123456789abcdef"}
    response = await relay.http.post(relay.calls_url, data=sdp, headers=bad)
    assert response.status == 401
    error = await envelope(response)
    assert "0123456789abcdef0123456789" not in str(error["message"])
    # The app backend mints a browser token with the relay key; the token works.
    minted = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"),
        json={"session": {"type": "realtime", "instructions": "Be brief."}},
        headers={"Authorization": "Bearer relay-key-123456"},
    )
    assert minted.status == 200
    secret = await minted.json()
    assert secret["value"].startswith("ek_") and len(secret["value"]) == 35
    assert secret["session"]["model"] == "gpt-realtime"
    assert "relay-key-123456" not in json.dumps(secret)
    client = RealtimeClient(PacedAudioSource())
    try:
        response = await client.connect(relay.http, relay.calls_url, secret["value"])
        assert response.status == 201, await response.text()
        await client.wait_for("session.created", timeout=10)
    finally:
        await client.close()


@pytest.fixture
async def hanging_upstream() -> AsyncIterator[str]:
    """An 'OpenAI' that accepts connections and never answers."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/v1"))
    await server.close()


TRANSPORTS = pytest.mark.parametrize("upstream_transport", ["webrtc", "websocket"])


@TRANSPORTS
async def test_upstream_timeout_is_504(
    start_relay: RelayFactory, hanging_upstream: str, upstream_transport: str
) -> None:
    relay = await start_relay(
        upstream_transport=upstream_transport,
        openai_api_key=Secret("sk-real-looking-key-abcdef"),
        openai_base_url=hanging_upstream,
        upstream_timeout_secs=1.0,
    )
    response = await relay.http.post(
        relay.calls_url, data=await offer_sdp(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status == 504
    error = await envelope(response)
    assert error["code"] == "upstream_timeout"
    assert "sk-real" not in json.dumps(error)
    assert len(relay.registry) == 0


@TRANSPORTS
async def test_upstream_unreachable_is_502(
    start_relay: RelayFactory, upstream_transport: str
) -> None:
    relay = await start_relay(
        upstream_transport=upstream_transport,
        openai_api_key=Secret("sk-real-looking-key-abcdef"),
        openai_base_url="http://127.0.0.1:9/v1",
    )
    response = await relay.http.post(
        relay.calls_url, data=await offer_sdp(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status == 502
    assert (await envelope(response))["code"] == "upstream_error"
    assert len(relay.registry) == 0


@TRANSPORTS
async def test_upstream_rejecting_the_key_is_502(
    start_relay: RelayFactory, upstream_transport: str
) -> None:
    """OpenAI refusing the relay's key is the relay's fault: 502, no key shown (over
    WebRTC an HTTP 401 when minting; over WebSocket an ``error`` and a close 3000)."""
    healthy = await start_relay()
    relay = await start_relay(
        upstream_transport=upstream_transport,
        openai_api_key=Secret("sk-wrong-key-0123456789"),
        openai_base_url=healthy.emulator_base_url,
    )
    response = await relay.http.post(
        relay.calls_url, data=await offer_sdp(), headers={"Content-Type": "application/sdp"}
    )
    assert response.status == 502
    error = await envelope(response)
    assert error["code"] == "upstream_auth_failed"
    assert "sk-wrong" not in json.dumps(error)
    assert len(relay.registry) == 0


async def test_bad_data_channel_events_get_error_events(relay: RelayUnderTest) -> None:
    """Malformed client events get OpenAI-style error events; the call carries on."""
    client = RealtimeClient(PacedAudioSource())
    try:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        await client.wait_for("session.created", timeout=10)
        client.channel.send("{nope")
        error = await client.wait_for("error")
        assert error["error"]["code"] == "invalid_json"
        client.send({"event_id": "evt_1", "no_type": True})
        error = await client.wait_for("error", after=client.events.index(error) + 1)
        assert error["error"]["code"] == "invalid_event"
        assert error["error"]["event_id"] == "evt_1"
        client.send(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
        )
        await client.wait_for("session.updated")
    finally:
        await client.close()
