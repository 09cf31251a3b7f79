"""Three relay nodes sharing a Redis call directory behind HAProxy (real processes):
any node answers for any call, and losing a node or Redis loses only what it must.

One fleet serves the module (starting it is most of the time); the tests that break a
piece of it (Redis restarted, a node drained, a node killed) run last, in that order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import PacedAudioSource, RealtimeClient

from relay.shards import INTERNAL_HEADER

from .fleet import ADMIN, CALL_TTL_SECS, CLUSTER_TOKEN, RELAY_KEY, Fleet

# Starting the fleet (the first test's set-up) takes 5-25 s on a busy machine.
pytestmark = pytest.mark.timeout(90)

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
WS_AUTH = ("relay-monitor", f"bearer.{ADMIN}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        # The second node runs two shards: a request another node forwards to it may
        # reach either, and goes on to the call's shard.
        fleet.start(workers=(1, 2, 1))
        yield fleet
    finally:
        fleet.close()
    logs = fleet.logs()
    assert "Traceback" not in logs, logs[-4000:]
    for secret in (RELAY_KEY, ADMIN, "cluster-fleet-test-token"):
        assert secret not in logs


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request: through HAProxy, each goes to the next node.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


@contextlib.asynccontextmanager
async def caller() -> AsyncIterator[RealtimeClient]:
    client = RealtimeClient(PacedAudioSource(loop=True))
    try:
        yield client
    finally:
        await client.close()


async def mint(base: str) -> str:
    """A client secret minted with the official SDK through ``base``."""
    sdk = openai.AsyncOpenAI(api_key=RELAY_KEY, base_url=f"{base}/v1", max_retries=0)
    try:
        secret = await sdk.realtime.client_secrets.create(session={"type": "realtime"})
    finally:
        await sdk.close()
    return secret.value


async def open_call(
    http: aiohttp.ClientSession, base: str, client: RealtimeClient, secret: str, **post: Any
) -> str:
    response = await client.connect(http, f"{base}/v1/realtime/calls", secret, **post)
    assert response.status == 201, await response.text()
    await client.wait_for("session.created", timeout=15)
    assert client.location is not None
    return client.location.rsplit("/", 1)[1]


async def snapshot(http: aiohttp.ClientSession, base: str, call_id: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/calls/{call_id}", headers=ADMIN_AUTH) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def assert_audio_flows(
    http: aiohttp.ClientSession, base: str, call_id: str, secs: float = 1.5
) -> None:
    """The caller's audio still reaches OpenAI's leg (50 frames a second)."""
    before = (await snapshot(http, base, call_id))["audio"]["upstream_frames_out"]
    await asyncio.sleep(secs)
    after = (await snapshot(http, base, call_id))["audio"]["upstream_frames_out"]
    assert (after - before) / (secs * 50) > 0.7, (call_id, before, after)


async def listed(http: aiohttp.ClientSession, base: str) -> set[str]:
    async with http.get(f"{base}/api/calls", headers=ADMIN_AUTH) as response:
        assert response.status == 200, await response.text()
        return {c["id"] for c in (await response.json())["data"]}


async def test_a_secret_minted_on_one_node_opens_a_call_on_another(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    one, two, _ = fleet.nodes
    secret = await mint(one.url)
    async with caller() as client:
        call_id = await open_call(http, two.url, client, secret)
        assert fleet.call_owner(call_id) == two.url
        await assert_audio_flows(http, two.url, call_id)
    # and through the load balancer: mint and call land on different nodes
    async with caller() as client:
        call_id = await open_call(http, fleet.lb, client, await mint(fleet.lb))
        assert fleet.call_owner(call_id) in {n.url for n in fleet.nodes}


async def test_follow_ups_through_a_third_node(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    """Snapshot, events and listen WebSockets, the sideband and the hangup of a call on
    node 1, all sent to node 3."""
    one, _, three = fleet.nodes
    async with caller() as client:
        call_id = await open_call(http, one.url, client, await mint(one.url))
        assert (await snapshot(http, three.url, call_id))["id"] == call_id
        async with http.ws_connect(
            f"{three.url}/api/calls/{call_id}/events", protocols=WS_AUTH
        ) as events:
            first = await events.receive_json(timeout=10)
            assert first["type"] == "relay.snapshot" and first["call"]["id"] == call_id
        async with http.ws_connect(
            f"{three.url}/api/calls/{call_id}/listen?track=caller", protocols=WS_AUTH
        ) as listen:
            assert len(await listen.receive_bytes(timeout=10)) == 960  # 20 ms, 24 kHz PCM16
        await sideband_speaks(three.url, call_id, client)
        hangup = await http.post(
            f"{three.url}/v1/realtime/calls/{call_id}/hangup",
            headers={"Authorization": f"Bearer {RELAY_KEY}"},
        )
        assert hangup.status == 200, await hangup.text()
        await until(lambda: client.pc.connectionState == "closed", 10, "the call did not end")


async def test_the_cluster_token_is_only_a_hop(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    """A wrong ``X-Relay-Internal`` is an ordinary public request (forwarded); the right
    one is served where it lands (never forwarded again) and authorises nothing."""
    one, _, three = fleet.nodes
    async with caller() as client:
        call_id = await open_call(http, one.url, client, await mint(one.url))
        url = f"/api/calls/{call_id}"
        wrong = {INTERNAL_HEADER: CLUSTER_TOKEN + "x", **ADMIN_AUTH}
        async with http.get(three.url + url, headers=wrong) as response:
            assert response.status == 200, await response.text()
        right = {INTERNAL_HEADER: CLUSTER_TOKEN}
        async with http.get(three.url + url, headers={**right, **ADMIN_AUTH}) as response:
            assert response.status == 404  # node 3 does not own it and does not ask
        async with http.get(one.url + url, headers=right) as response:
            assert response.status == 401, await response.text()


async def sideband_speaks(base: str, call_id: str, client: RealtimeClient) -> None:
    """The SDK's sideband (``/v1/realtime?call_id=``) through ``base`` makes the agent
    answer a message in the browser's call, and hears the answer too."""
    sdk = openai.AsyncOpenAI(api_key=RELAY_KEY, base_url=f"{base}/v1", max_retries=0)
    after = len(client.events)
    async with sdk.realtime.connect(call_id=call_id) as connection:
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hello"}],
            }
        )
        await connection.response.create()
        async with asyncio.timeout(20):
            async for event in connection:
                if event.type == "response.done":
                    break
    await sdk.close()
    await client.wait_for("response.done", timeout=10, after=after)


async def test_every_node_lists_every_call(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    one, two, three = fleet.nodes
    async with caller() as a, caller() as b:
        on_one = await open_call(http, one.url, a, await mint(one.url))
        on_two = await open_call(
            http, two.url, b, await mint(two.url), headers={"X-Relay-Record": "1"}
        )
        for base in (one.url, two.url, three.url, fleet.lb):
            assert {on_one, on_two} <= await listed(http, base), base
        async with http.get(f"{three.url}/api/recordings", headers=ADMIN_AUTH) as response:
            assert response.status == 200, await response.text()
            recorded = [r["call_id"] for r in (await response.json())["data"]]
            assert on_two in recorded  # recorded on node 2, listed by node 3
        # each node (each shard) publishes its load with its heartbeat
        await until(
            lambda: sum(load["calls"] for load in fleet.node_loads().values()) >= 2,
            CALL_TTL_SECS,
            "loads not published",
        )
        loads = fleet.node_loads()
        assert set(loads) == {f"{one.url}#0", f"{two.url}#0", f"{two.url}#1", f"{three.url}#0"}
        assert loads[f"{one.url}#0"]["calls"] >= 1
        assert all(
            {"loop_lag_ms", "loop_load", "cpu", "draining"} <= set(v) for v in loads.values()
        )


async def test_a_websocket_call_is_in_the_directory(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    """The WebSocket transport's calls are registered as WebRTC ones are."""
    one, _, three = fleet.nodes
    protocols = ["realtime", f"openai-insecure-api-key.{await mint(one.url)}"]
    async with http.ws_connect(f"{three.url}/v1/realtime/ws", protocols=protocols) as ws:
        async with asyncio.timeout(15):
            while (hello := await ws.receive_json())["type"] != "relay.call":
                pass
        assert fleet.call_owner(hello["call_id"]) == three.url
        assert (await snapshot(http, one.url, hello["call_id"]))["transport"] == "websocket"


async def test_redis_restarted_mid_call(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    """Running calls keep their audio; new calls get 503 (OpenAI's envelope) while Redis
    is down and work again once it is back, with the running calls re-registered."""
    one, two, three = fleet.nodes
    async with caller() as client:
        call_id = await open_call(http, one.url, client, await mint(two.url))
        secret = await mint(three.url)
        fleet.stop_redis()
        await assert_audio_flows(http, one.url, call_id)
        for node in fleet.nodes:
            async with http.post(
                f"{node.url}/v1/realtime/client_secrets",
                json={"session": {"type": "realtime"}},
                headers={"Authorization": f"Bearer {RELAY_KEY}"},
            ) as response:
                assert response.status == 503, await response.text()
                assert response.headers["Retry-After"]
                error = (await response.json())["error"]
                assert error["code"] == "directory_unavailable", error
        # a secret minted elsewhere cannot be looked up; one minted here can, but the call
        # cannot be registered: both refused, in OpenAI's envelope
        for node in (two, three):
            async with caller() as refused:
                answer = await refused.connect(http, f"{node.url}/v1/realtime/calls", secret)
                assert answer.status == 503, await answer.text()
                error = (await answer.json())["error"]
                assert error["code"] == "directory_unavailable", error
        async with http.get(f"{three.url}/api/calls", headers=ADMIN_AUTH) as response:
            assert response.status == 200 and (await response.json())["data"] == []
            assert response.headers["X-Relay-Missing-Nodes"] == "?"
        up, errors = await directory_health(http, three.url)
        # three failed to store a secret, register a call and list the nodes
        assert up == 0, errors
        assert min(errors["put_secret"], errors["register_call"], errors["nodes"]) >= 1, errors
        fleet.start_redis()
        # the owner's heartbeat puts its call back (a third of the TTL)
        await until(lambda: fleet.call_owner(call_id) == one.url, CALL_TTL_SECS, "not back")
        assert (await snapshot(http, three.url, call_id))["id"] == call_id
        await assert_audio_flows(http, one.url, call_id)
        async with caller() as again:
            new_call = await open_call(http, two.url, again, await mint(three.url))
            assert fleet.call_owner(new_call) == two.url
        up, after = await directory_health(http, three.url)
        assert up == 1 and after["put_secret"] == errors["put_secret"], after


async def directory_health(
    http: aiohttp.ClientSession, base: str
) -> tuple[float, dict[str, float]]:
    """A one-shard node's ``directory_up`` and its ``directory_errors_total`` by op."""
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    up, errors = -1.0, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "realtime_relay_directory_up":
                up = sample.value
            elif sample.name == "realtime_relay_directory_errors_total":
                errors[sample.labels["op"]] = sample.value
    return up, errors


async def test_a_drained_node_finishes_its_calls_while_others_take_new_ones(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    one, two, three = fleet.nodes
    async with caller() as running:
        call_id = await open_call(http, two.url, running, await mint(two.url))
        drain = await http.post(f"{two.url}/admin/drain", headers=ADMIN_AUTH)
        assert drain.status == 202, await drain.text()
        await until(lambda: fleet.node_loads()[f"{two.url}#0"]["draining"], 5, "not published")
        await asyncio.sleep(0.7)  # HAProxy's health check (300 ms) takes the node out
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                client = await stack.enter_async_context(caller())
                new_call = await open_call(http, fleet.lb, client, await mint(fleet.lb))
                assert fleet.call_owner(new_call) in (one.url, three.url)
        await assert_audio_flows(http, one.url, call_id)  # through another node
        hangup = await http.post(
            f"{three.url}/v1/realtime/calls/{call_id}/hangup", headers=ADMIN_AUTH
        )
        assert hangup.status == 200, await hangup.text()


async def test_a_killed_node_leaves_the_directory_and_others_keep_their_audio(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    one, _, three = fleet.nodes
    async with caller() as survivor, caller() as lost:
        kept = await open_call(http, one.url, survivor, await mint(one.url))
        gone = await open_call(http, three.url, lost, await mint(three.url))
        three.proc.kill()  # SIGKILL: no goodbye to the directory
        killed = time.monotonic()
        await until(lambda: fleet.call_owner(gone) is None, CALL_TTL_SECS + 1, "still listed")
        assert time.monotonic() - killed <= CALL_TTL_SECS + 1
        await until(lambda: f"{three.url}#0" not in fleet.node_loads(), 2, "node still there")
        assert await listed(http, one.url) >= {kept}
        assert gone not in await listed(http, one.url)
        await assert_audio_flows(http, one.url, kept)


async def until(check: Any, secs: float, message: str) -> None:
    deadline = time.monotonic() + secs
    while not check():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.1)
