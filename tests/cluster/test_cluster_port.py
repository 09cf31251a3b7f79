"""Two relay nodes serving HTTPS on their listen port (as in deploy/kubernetes, for
single-port ICE-TCP) and a plain-HTTP cluster listener (``RELAY_CLUSTER_PORT``) that
the other node reaches them on: follow-ups and listings go through it, with the
certificate checked everywhere a client meets it; the listener serves nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import openai
import pytest
from certs import self_signed

from relay.config import Secret, Settings, check
from relay.shards import INTERNAL_HEADER

from .fleet import ADMIN, CLUSTER_TOKEN, RELAY_KEY, Fleet
from .test_fleet import ADMIN_AUTH, WS_AUTH, caller, listed, open_call, snapshot, until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("tls-fleet")
    fleet = Fleet(folder, tls=self_signed(folder, "127.0.0.1"))
    try:
        fleet.start(workers=(1, 1), balancer=False)
        yield fleet
    finally:
        fleet.close()
    logs = fleet.logs()
    assert "Traceback" not in logs, logs[-4000:]
    for secret in (RELAY_KEY, ADMIN, "cluster-fleet-test-token"):
        assert secret not in logs


@pytest.fixture
async def https(fleet: Fleet) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that trusts the nodes' certificate, and only it."""
    connector = aiohttp.TCPConnector(ssl=fleet.trust(), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def mint(fleet: Fleet, base: str) -> str:
    """A client secret minted with the official SDK over HTTPS (certificate verified)."""
    assert fleet.tls is not None
    client = openai.DefaultAsyncHttpxClient(verify=fleet.trust())
    sdk = openai.AsyncOpenAI(
        api_key=RELAY_KEY, base_url=f"{base}/v1", max_retries=0, http_client=client
    )
    try:
        secret = await sdk.realtime.client_secrets.create(session={"type": "realtime"})
    finally:
        await sdk.close()
    return secret.value


async def test_follow_ups_reach_a_tls_node_through_its_cluster_listener(
    fleet: Fleet, https: aiohttp.ClientSession
) -> None:
    one, two = fleet.nodes
    assert one.url.startswith("https://") and one.cluster_port
    async with caller() as client:
        call_id = await open_call(https, one.url, client, await mint(fleet, two.url))
        # the directory names the owner's cluster listener, not its HTTPS port
        assert fleet.call_owner(call_id) == one.node_url == f"http://127.0.0.1:{one.cluster_port}"
        assert (await snapshot(https, two.url, call_id))["id"] == call_id
        assert call_id in await listed(https, two.url)
        async with https.ws_connect(
            f"{two.url}/api/calls/{call_id}/listen?track=caller", protocols=WS_AUTH
        ) as listen:
            assert len(await listen.receive_bytes(timeout=10)) == 960  # 20 ms, 24 kHz PCM16
        hangup = await https.post(
            f"{two.url}/v1/realtime/calls/{call_id}/hangup",
            headers={"Authorization": f"Bearer {RELAY_KEY}"},
        )
        assert hangup.status == 200, await hangup.text()
        await until(lambda: client.pc.connectionState == "closed", 10, "the call did not end")


async def test_the_cluster_listener_serves_only_the_other_nodes(
    fleet: Fleet, https: aiohttp.ClientSession
) -> None:
    one, two = fleet.nodes
    internal = f"http://127.0.0.1:{one.cluster_port}"
    token = {INTERNAL_HEADER: CLUSTER_TOKEN}
    async with caller() as client, aiohttp.ClientSession() as plain:
        call_id = await open_call(https, one.url, client, await mint(fleet, one.url))
        snapshot_path = f"/api/calls/{call_id}"
        # no token, or a wrong one: refused, whatever else the request carries
        for headers in ({}, {INTERNAL_HEADER: CLUSTER_TOKEN + "x"}):
            for method, path in (("GET", snapshot_path), ("GET", "/healthz"), ("GET", "/")):
                async with plain.request(
                    method, internal + path, headers={**headers, **ADMIN_AUTH}
                ) as response:
                    assert response.status == 401, (path, await response.text())
                    error = (await response.json())["error"]
                    assert error["code"] == "cluster_token_required"
        # with the token: a call's follow-up and the fleet listings only
        async with plain.get(internal + snapshot_path, headers={**token, **ADMIN_AUTH}) as r:
            assert r.status == 200 and (await r.json())["id"] == call_id
        async with plain.get(internal + "/api/calls", headers={**token, **ADMIN_AUTH}) as r:
            assert r.status == 200 and call_id in {c["id"] for c in (await r.json())["data"]}
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/metrics"),
            ("GET", "/"),
            ("POST", "/v1/realtime/client_secrets"),
            ("POST", "/v1/realtime/calls"),
            ("GET", "/internal/client_secrets/ek_00" + "0" * 30),
            ("POST", "/admin/drain"),
        ):
            auth = {"Authorization": f"Bearer {RELAY_KEY}"}
            async with plain.request(method, internal + path, headers={**token, **auth}) as r:
                assert r.status == 404, (path, await r.text())
        # the token authorises nothing by itself
        async with plain.get(internal + snapshot_path, headers=token) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] != "cluster_token_required"
        # on the public port the token is nobody's: the request is forwarded like any other
        async with https.get(two.url + snapshot_path, headers={**token, **ADMIN_AUTH}) as r:
            assert r.status == 200, await r.text()


def test_a_cluster_listener_needs_a_directory_and_its_own_port() -> None:
    fleet_settings = {"redis_url": Secret("redis://redis:6379/0"), "cluster_token": Secret("t")}
    assert check(Settings(cluster_port=8081, **fleet_settings)) == []
    assert check(Settings(cluster_port=8081)) == [
        "RELAY_CLUSTER_PORT needs RELAY_REDIS_URL (it serves only a fleet's nodes)"
    ]
    assert check(Settings(port=8443, cluster_port=8443, **fleet_settings)) == [
        "RELAY_CLUSTER_PORT must differ from RELAY_PORT"
    ]
