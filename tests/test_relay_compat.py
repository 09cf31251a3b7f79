"""OpenAI's own clients and protocol details work against the relay unmodified."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import aioice.ice
import openai
import pytest
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client

from relay import aiortc_patches
from relay.config import Secret
from relay.emulator.settings import EmulatorSettings

RELAY_KEY = "relay-compat-key-0123456789"


async def test_official_python_sdk_mints_and_calls(start_relay: RelayFactory) -> None:
    """The `openai` SDK, pointed at the relay by base URL: client secret, then a
    multipart call with a session part, authorised by the relay's key."""
    relay = await start_relay(open_mode=False, relay_api_key=Secret(RELAY_KEY))
    sdk = openai.AsyncOpenAI(api_key=RELAY_KEY, base_url=relay.url("/v1"))
    try:
        secret = await sdk.realtime.client_secrets.create(
            session={
                "type": "realtime",
                "model": "gpt-realtime",
                "audio": {
                    "input": {
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                        "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                    },
                    "output": {"voice": "marin"},
                },
                "tracing": "auto",
            }
        )
        assert secret.value.startswith("ek_")
        client = RealtimeClient(PacedAudioSource())
        try:
            offer = await client.offer()
            answer = await sdk.realtime.calls.create(
                sdp=offer, session={"type": "realtime", "instructions": "Speak slowly."}
            )
            from aiortc import RTCSessionDescription

            await client.pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
            created = await client.wait_for("session.created", timeout=10)
            assert created["session"]["instructions"] == "Speak slowly."
        finally:
            await client.close()
    finally:
        await sdk.close()


async def test_client_secret_session_reaches_openai(start_relay: RelayFactory) -> None:
    """The session config the backend put in the client secret is what OpenAI gets;
    `session.update` is answered, and `conversation.item.retrieve` works."""
    relay = await start_relay(open_mode=False, relay_api_key=Secret(RELAY_KEY))
    minted = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"),
        json={
            "expires_after": {"anchor": "created_at", "seconds": 60},
            "session": {
                "type": "realtime",
                "instructions": "You are a weather bot.",
                "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}},
            },
        },
        headers={"Authorization": f"Bearer {RELAY_KEY}"},
    )
    secret = await minted.json()
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, secret["value"])
        assert response.status == 201
        created = await client.wait_for("session.created", timeout=10)
        assert created["session"]["instructions"] == "You are a weather bot."
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        client.send({"type": "session.update", "session": {"type": "realtime", "tracing": "auto"}})
        await client.wait_for("session.updated")
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "id": "item_client_1",
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hello"}],
                },
            }
        )
        await client.wait_for("conversation.item.done")
        client.send({"type": "conversation.item.retrieve", "item_id": "item_client_1"})
        retrieved = await client.wait_for("conversation.item.retrieved")
        assert retrieved["item"]["id"] == "item_client_1"


async def test_events_are_forwarded_in_order(relay: RelayUnderTest) -> None:
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        await client.channel_open.wait()
        ids = [f"item_order_{i:02d}" for i in range(30)]
        for item_id in ids:  # sent at once, before session.created even arrives
            client.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "id": item_id,
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": item_id}],
                    },
                }
            )
        for _ in range(100):
            added = [
                e["item"]["id"] for e in client.events if e["type"] == "conversation.item.added"
            ]
            if len(added) == len(ids):
                break
            await asyncio.sleep(0.05)
        assert added == ids
        assert client.types()[0] == "session.created"


async def test_offer_without_candidates(relay: RelayUnderTest) -> None:
    """Clients that post their offer before ICE gathering (no candidates) connect."""
    async with realtime_client() as client:
        offer = await client.offer()
        stripped = "\r\n".join(
            line for line in offer.splitlines() if not line.startswith(("a=candidate", "a=end-of"))
        )
        assert "a=candidate" not in stripped
        response = await relay.http.post(
            relay.calls_url, data=stripped + "\r\n", headers={"Content-Type": "application/sdp"}
        )
        assert response.status == 201, await response.text()
        from aiortc import RTCSessionDescription

        await client.pc.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
        await client.wait_for("session.created", timeout=10)


async def test_cors_for_pages_on_another_origin(start_relay: RelayFactory) -> None:
    relay = await start_relay(cors_origins=("https://app.example",))
    preflight = await relay.http.options(
        relay.calls_url,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"]
    async with realtime_client() as client:
        response = await client.connect(
            relay.http, relay.calls_url, "", headers={"Origin": "https://app.example"}
        )
        assert response.status == 201
        assert "Location" in response.headers["Access-Control-Expose-Headers"]
    other = await relay.http.options(
        relay.calls_url,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_beta_dialect_upstream(start_relay: RelayFactory) -> None:
    """RELAY_OPENAI_DIALECT=beta: keys from /realtime/sessions, SDP to /realtime?model=,
    beta event names come back."""
    relay = await start_relay(
        openai_dialect="beta", openai_model="gpt-4o-realtime-preview-2024-12-17"
    )
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201, await response.text()
        created = await client.wait_for("session.created", timeout=10)
        assert created["session"]["model"] == "gpt-4o-realtime-preview-2024-12-17"
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hi"}],
                },
            }
        )
        await client.wait_for("conversation.item.created")  # the beta name


async def test_direct_session_route(start_relay: RelayFactory) -> None:
    off = await start_relay()
    response = await off.http.post(off.url("/api/realtime/session"))
    assert response.status == 404
    relay = await start_relay(enable_direct_session=True)
    response = await relay.http.post(relay.url("/api/realtime/session"), json={})
    assert response.status == 200
    body = await response.json()
    assert body["client_secret"]["value"].startswith("ek_")
    assert body["base_url"].endswith("/v1")


async def test_readiness(start_relay: RelayFactory) -> None:
    relay = await start_relay(max_calls=1)
    assert (await relay.http.get(relay.url("/readyz"))).status == 200
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        assert (await relay.http.get(relay.url("/readyz"))).status == 503
        async with realtime_client() as second:
            refused = await second.connect(relay.http, relay.calls_url, "")
            assert refused.status == 503
            assert refused.headers["Retry-After"]


@pytest.fixture
def fast_consent() -> Iterator[None]:
    """ICE consent every ~0.1 s instead of 5 s: 6 missed checks end a call in < 1 s."""
    interval = aioice.ice.CONSENT_INTERVAL
    aioice.ice.CONSENT_INTERVAL = 0.1  # type: ignore[assignment]
    yield
    aioice.ice.CONSENT_INTERVAL = interval


async def test_call_survives_servers_that_require_use_candidate(
    start_relay: RelayFactory, fast_consent: None
) -> None:
    """Against an emulator that, like OpenAI's ICE-lite servers, ignores consent checks
    without USE-CANDIDATE, a call lives on: 6 s at 0.1 s per check is as many checks as
    5 minutes at aioice's real 5 s interval."""
    relay = await start_relay(
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), strict_consent=True)
    )
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        call_id = response.headers["Location"].rsplit("/", 1)[-1]
        await client.wait_for("session.created", timeout=10)
        await asyncio.sleep(6)
        call = relay.registry.get_call(call_id)
        assert call is not None and call.state == "active"
        assert call.upstream_pc.connectionState == "connected"
        client.send({"type": "session.update", "session": {"type": "realtime"}})
        await client.wait_for("session.updated")


async def test_stock_consent_checks_would_drop_the_call(
    start_relay: RelayFactory, fast_consent: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, with aioice's stock consent checks: the upstream leg dies, and the
    relay ends the call (so the test above really tests the fix)."""
    monkeypatch.setattr(aiortc_patches, "consent_checks", aioice.ice.Connection.query_consent)
    relay = await start_relay(
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), strict_consent=True)
    )
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        call_id = response.headers["Location"].rsplit("/", 1)[-1]
        for _ in range(100):
            if relay.registry.get(call_id) is None:
                break
            await asyncio.sleep(0.1)
        assert relay.registry.get(call_id) is None, "stock consent should have lost the call"


def test_client_secrets_look_like_openai_keys() -> None:
    from relay.auth import ClientSecretStore

    secret = ClientSecretStore().mint({}, 60)
    assert re.fullmatch(r"ek_[0-9a-f]{32}", secret.value)
