"""TURN for the relay's web client: the relay mints coturn REST-API credentials
(``POST /api/turn_credentials``) and a real coturn (``turnserver``) accepts them; an
expired or forged username is refused by coturn; a client restricted to relayed
candidates makes a whole call through coturn and the relay."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioice.turn
import pytest
import support
from aioice import Candidate
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from netns import TurnServer
from relay_fixtures import RelayFactory, RelayUnderTest
from support import RealtimeClient

from relay import turn
from relay.caller.webrtc import transport_of
from relay.config import Secret, Settings

SECRET = "turn-test-shared-secret-0123456789"
DEPLOY_CONF = Path(__file__).resolve().parents[1] / "deploy" / "coturn" / "turnserver.conf"


@pytest.fixture
def coturn() -> Iterator[TurnServer]:
    server = TurnServer.start(secret=SECRET)
    yield server
    server.stop()


@pytest.fixture
async def turn_relay(start_relay: RelayFactory, coturn: TurnServer) -> RelayUnderTest:
    return await start_relay(
        turn_urls=(coturn.url("tcp"), coturn.url("udp")),
        turn_secret=Secret(SECRET),
        turn_ttl_secs=600,
    )


async def _allocate(server: TurnServer, username: str, password: str) -> tuple[str, int]:
    """A TURN allocation over TCP; returns the relayed address (raises if refused)."""
    transport, _ = await asyncio.wait_for(
        aioice.turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            (server.listen_ip, server.port),
            username,
            password,
            transport="tcp",
        ),
        5,
    )
    try:
        relayed = transport.get_extra_info("sockname")
        return str(relayed[0]), int(relayed[1])
    finally:
        transport.close()


def test_credentials_follow_coturns_rest_scheme() -> None:
    minted = turn.mint("s3cret", ("turn:a:3478",), 600, "call:1", now=1_000_000)
    assert minted.username == "1000600:call_1"
    expected = hmac.new(b"s3cret", b"1000600:call_1", hashlib.sha1).digest()
    assert minted.credential == base64.b64encode(expected).decode()
    assert minted.expires_at == 1000600
    body = minted.as_json()
    assert body["ice_servers"] == [
        {"urls": ["turn:a:3478"], "username": minted.username, "credential": minted.credential}
    ]
    assert turn.requester_id("client_secret", "ek_abc") not in ("ek_abc", "")
    assert "ek_abc" not in turn.requester_id("client_secret", "ek_abc")


async def test_endpoint_404_without_turn(relay: RelayUnderTest) -> None:
    async with relay.http.post(relay.url("/api/turn_credentials")) as response:
        assert response.status == 404
        body = await response.json()
    assert body["error"]["code"] == "turn_not_configured"
    assert body["error"]["type"] == "invalid_request_error"
    # The web client asks before every call; a relay without TURN says so quietly.
    async with relay.http.post(relay.url("/api/turn_credentials?optional=1")) as response:
        assert response.status == 204


async def test_endpoint_is_authorised_like_calls(
    start_relay: RelayFactory,
) -> None:
    relay = await start_relay(
        open_mode=False,
        relay_api_key=Secret("relay-key-0123456789"),
        turn_urls=("turn:127.0.0.1:3478",),
        turn_secret=Secret(SECRET),
    )
    url = relay.url("/api/turn_credentials")
    async with relay.http.post(url) as response:
        assert response.status == 401
    async with relay.http.post(url, headers={"Authorization": "Bearer wrong-key-000"}) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_api_key"
    api_key = {"Authorization": "Bearer relay-key-0123456789"}
    async with relay.http.post(url, headers=api_key) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert body["ice_servers"][0]["username"].endswith(":api_key")
    async with relay.http.post(relay.url("/v1/realtime/client_secrets"), headers=api_key) as r:
        secret = (await r.json())["value"]
    async with relay.http.post(url, headers={"Authorization": f"Bearer {secret}"}) as response:
        assert response.status == 200
        body = await response.json()
    server = body["ice_servers"][0]
    assert secret not in server["username"]
    assert abs(body["expires_at"] - (time.time() + 3600)) < 5
    assert int(server["username"].split(":")[0]) == body["expires_at"]


async def test_coturn_accepts_minted_and_refuses_expired_or_forged(
    turn_relay: RelayUnderTest, coturn: TurnServer
) -> None:
    async with turn_relay.http.post(turn_relay.url("/api/turn_credentials")) as response:
        assert response.status == 200
        body = await response.json()
    server = body["ice_servers"][0]
    assert server["urls"] == [coturn.url("tcp"), coturn.url("udp")]
    relayed = await _allocate(coturn, server["username"], server["credential"])
    assert relayed[0] == coturn.relay_ip
    assert coturn.relay_ports[0] <= relayed[1] <= coturn.relay_ports[1]

    expired = turn.mint(SECRET, (), 60, "open", now=time.time() - 120)
    with pytest.raises(aioice.stun.TransactionFailed) as refused:
        await _allocate(coturn, expired.username, expired.credential)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401

    forged = turn.mint("another-secret", (), 600, "open")
    with pytest.raises(aioice.stun.TransactionFailed):
        await _allocate(coturn, forged.username, forged.credential)


@pytest.fixture
async def relay_only_client(
    turn_relay: RelayUnderTest, coturn: TurnServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RealtimeClient]:
    """An aiortc caller that may only use relayed candidates (iceTransportPolicy
    "relay"), with the TURN/TCP credentials the relay handed it."""
    async with turn_relay.http.post(turn_relay.url("/api/turn_credentials")) as response:
        server = (await response.json())["ice_servers"][0]
    ice_server = RTCIceServer(
        urls=coturn.url("tcp"), username=server["username"], credential=server["credential"]
    )

    def configuration(**_: Any) -> RTCConfiguration:
        return RTCConfiguration(
            iceServers=[ice_server], iceTransportPolicy=RTCIceTransportPolicy.RELAY
        )

    monkeypatch.setattr(support, "RTCConfiguration", configuration)
    client = RealtimeClient()
    yield client
    await client.close()


async def test_call_through_coturn_over_tcp(
    turn_relay: RelayUnderTest, coturn: TurnServer, relay_only_client: RealtimeClient
) -> None:
    client = relay_only_client
    response = await client.connect(turn_relay.http, turn_relay.calls_url, "")
    assert response.status == 201, await response.text()
    offer = client.pc.localDescription.sdp
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate")]
    assert candidates and all(" typ relay" in line for line in candidates), candidates
    await client.wait_for("session.created", timeout=15)
    call = turn_relay.registry.get_call(client.location.rsplit("/", 1)[-1])
    assert call is not None

    def flowing() -> bool:
        return call.caller_audio.frames_in > 50 and call.downlink.packets_sent > 50

    deadline = time.monotonic() + 20
    while not flowing():
        assert time.monotonic() < deadline, f"audio both ways through coturn: {call.snapshot()}"
        await asyncio.sleep(0.1)
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    host, port = pair["remote"].rsplit(":", 1)
    assert host == coturn.relay_ip, pair
    assert coturn.relay_ports[0] <= int(port) <= coturn.relay_ports[1], pair
    assert pair["protocol"] == "udp"  # coturn -> relay is UDP; the client's hop is TCP
    assert pair["remote_type"] == "relay", pair
    # aioice gives every relayed candidate RFC 8445's priority, which names no protocol.
    assert call.snapshot()["transport"] == "turn"


def _candidate(kind: str, priority: int, transport: str = "udp") -> Candidate:
    return Candidate("1", 1, transport, priority, "192.0.2.1", 5000, kind)


@pytest.mark.parametrize(
    ("remote", "local", "expected"),
    [
        # libwebrtc's priorities: type preference << 24 | local preference << 8 | 255
        (_candidate("relay", 2 << 24 | 32542 << 8 | 255), "udp", "turn-udp"),
        (_candidate("relay", 1 << 24 | 32542 << 8 | 255), "udp", "turn-tcp"),
        (_candidate("relay", 0 << 24 | 32542 << 8 | 255), "udp", "turn-tls"),
        (_candidate("relay", 0 << 24 | 65535 << 8 | 255), "udp", "turn"),  # RFC 8445's
        (_candidate("relay", 7 << 24 | 32542 << 8 | 255), "udp", "turn"),
        (_candidate("host", 126 << 24 | 32542 << 8 | 255), "udp", "udp"),
        (_candidate("prflx", 110 << 24 | 32542 << 8 | 255), "udp", "udp"),
        (_candidate("host", 90 << 24 | 32542 << 8 | 255, "tcp"), "tcp", "tcp"),
    ],
)
def test_transport_names_the_path(remote: Candidate, local: str, expected: str) -> None:
    assert transport_of(_candidate("host", 1, local), remote) == expected


async def test_deploy_config_accepts_the_relays_credentials_only() -> None:
    """deploy/coturn/turnserver.conf as docker-compose runs it (the secret on the command
    line; addresses, ports and state files moved for the test): the relay's credentials
    allocate; the file's placeholder secret is no secret at all."""
    conf = DEPLOY_CONF
    text = DEPLOY_CONF.read_text()  # noqa: ASYNC240 (a small local file)
    assert "use-auth-secret" in text.splitlines()
    assert not any(line.startswith("static-auth-secret") for line in text.splitlines())
    assert "no-multicast-peers" in text and "denied-peer-ip=10.0.0.0-10.255.255.255" in text
    server = TurnServer.start(secret=SECRET, conf=conf)
    try:
        minted = turn.mint(SECRET, (), 600, "deploy")
        relayed = await _allocate(server, minted.username, minted.credential)
        assert relayed[0] == "127.0.0.1"
        placeholder = turn.mint("<RELAY_TURN_SECRET>", (), 600, "deploy")
        with pytest.raises(aioice.stun.TransactionFailed):
            await _allocate(server, placeholder.username, placeholder.credential)
    finally:
        server.stop()


def test_turn_settings_are_checked() -> None:
    assert turn.check(Settings()) == []
    assert not turn.configured(Settings())
    both = Settings(turn_urls=("turn:t.example:3478",), turn_secret=Secret("s"))
    assert turn.check(both) == [] and turn.configured(both)
    assert turn.check(Settings(turn_urls=("turn:t.example:3478",))) == [
        "RELAY_TURN_URLS and RELAY_TURN_SECRET go together"
    ]
    wrong = Settings(turn_urls=("stun:t.example",), turn_secret=Secret("s"), turn_ttl_secs=5)
    assert len(turn.check(wrong)) == 2
