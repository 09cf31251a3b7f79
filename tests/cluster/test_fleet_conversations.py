"""A signed-in user's conversations across a fleet (real processes: Redis, an emulator,
two relay nodes, the second with two shards): a call recorded on one node is read back
with a client secret minted on the other, and only by its user."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from support import PacedAudioSource, RealtimeClient

from .fleet import RELAY_KEY, Fleet

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        fleet.start(workers=(1, 2), balancer=False)
        yield fleet
    finally:
        fleet.close()
    logs = fleet.logs()
    assert "Traceback" not in logs, logs[-4000:]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def mint(base: str, user_id: str) -> str:
    sdk = openai.AsyncOpenAI(api_key=RELAY_KEY, base_url=f"{base}/v1", max_retries=0)
    session: dict[str, Any] = {"type": "realtime", "relay": {"user_id": user_id}}
    try:
        secret = await sdk.realtime.client_secrets.create(session=session)  # type: ignore[arg-type]
    finally:
        await sdk.close()
    return secret.value


async def conversations(http: aiohttp.ClientSession, base: str, secret: str) -> Any:
    headers = {"Authorization": f"Bearer {secret}"}
    async with http.get(f"{base}/api/conversations", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert "X-Relay-Missing-Nodes" not in response.headers
        return await response.json()


async def test_a_call_recorded_on_one_node_is_read_on_another(
    fleet: Fleet, http: aiohttp.ClientSession
) -> None:
    one, two = fleet.nodes
    secret = await mint(one.url, "u1")
    client = RealtimeClient(PacedAudioSource(loop=True))
    try:
        response = await client.connect(
            http, f"{two.url}/v1/realtime/calls", secret, headers={"X-Relay-Record": "1"}
        )
        assert response.status == 201, await response.text()
        await client.wait_for("session.created", timeout=15)
        assert client.location is not None
        call_id = client.location.rsplit("/", 1)[1]
        hangup = await http.post(
            f"{two.url}{client.location}/hangup", headers={"Authorization": f"Bearer {secret}"}
        )
        assert hangup.status == 200, await hangup.text()
    finally:
        await client.close()
    assert fleet.call_owner(call_id) in (None, two.url)

    # Node one has no recording of it; it gathers node two's part.
    reader = await mint(one.url, "u1")
    deadline = time.monotonic() + 15
    while call_id not in [
        c["call_id"] for c in (await conversations(http, one.url, reader))["data"]
    ]:
        assert time.monotonic() < deadline, "the call never listed on node one"
        await asyncio.sleep(0.3)
    assert not list((fleet.folder / f"recordings-{one.port}").glob(f"*/{call_id}"))
    other = await conversations(http, two.url, await mint(one.url, "u2"))
    assert call_id not in [c["call_id"] for c in other["data"]]
    unknown = await http.get(
        f"{one.url}/api/conversations", headers={"Authorization": "Bearer ek_" + "0" * 32}
    )
    assert unknown.status == 401 and (await unknown.json())["error"]["code"] == "invalid_api_key"
