"""Adversarial run 2/8, access control: shard-internal routes stay internal whatever the
path, a client secret ends only the call it opened, and gathered listings cover every
shard whichever way the operator's token comes.

The shards run in this process (the same app, Unix sockets and token as
``serve --workers 2``), each on its own port, so a test chooses which shard a request
lands on."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from relay_fixtures import BASE_SETTINGS, RelayFactory
from support import RealtimeClient, realtime_client

from relay.config import Secret
from relay.embedded import build_app
from relay.http.state import REGISTRY
from relay.shards import INTERNAL_HEADER, ShardClient, ShardLayout

RELAY_KEY = "hostile-relay-key-0123456789abcdef"
ADMIN = "hostile-admin-token-0123456789abcdef"
SECURED = {"open_mode": False, "relay_api_key": Secret(RELAY_KEY), "admin_token": Secret(ADMIN)}


@dataclass
class Shard:
    layout: ShardLayout
    port: int
    app: web.Application

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def running_shards(
    prepare: Callable[[web.Application], object] | None = None, **overrides: Any
) -> AsyncIterator[list[Shard]]:
    """Two shards as ``serve --workers 2`` runs them, on a port each (``prepare`` is
    called with each app before it starts)."""
    socket_dir = tempfile.mkdtemp(prefix="rr-")
    token = ShardLayout.new_token()
    settings = replace(BASE_SETTINGS, **{**SECURED, **overrides})
    runners: list[web.AppRunner] = []
    shards: list[Shard] = []
    try:
        for index in range(2):
            layout = ShardLayout(index, 2, socket_dir, token)
            app = build_app(settings, shard=layout)
            if prepare is not None:
                prepare(app)
            runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await web.UnixSite(runner, layout.socket_path(index)).start()
            port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
            shards.append(Shard(layout, port, app))
        yield shards
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        shutil.rmtree(socket_dir, ignore_errors=True)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``request`` byte for byte (no client-side normalising or encoding) and read
    the answer to the end of the connection (send ``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


def get(path: bytes | str, *headers: bytes) -> bytes:
    """A raw ``GET`` (or any method, as ``b"POST /path"``) with ``Connection: close``."""
    line = path.encode() if isinstance(path, str) else path
    if not line.split(b" ")[0].isupper():
        line = b"GET " + line
    extra = b"".join(h + b"\r\n" for h in headers)
    return line + b" HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n" + extra + b"\r\n"


async def mint(http: aiohttp.ClientSession, url: str) -> str:
    response = await http.post(
        url,
        json={"session": {"type": "realtime", "instructions": "Hostile."}},
        headers={"Authorization": f"Bearer {RELAY_KEY}"},
    )
    assert response.status == 200, await response.text()
    return str((await response.json())["value"])


TRAVERSALS = [
    "/../../../../internal/client_secrets/{ek}",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/internal/client_secrets/{ek}",
    "/%2E%2E/%2E%2E/%2E%2E/%2E%2E/internal/client_secrets/{ek}",
    "/..%2f..%2f..%2f..%2finternal%2fclient_secrets%2f{ek}",
    "%2f..%2f..%2f..%2f..%2finternal/client_secrets/{ek}",
    "/./../../.././../internal/client_secrets/{ek}",
    "/hangup/../../../../../internal/client_secrets/{ek}",
    "/..;/..;/../../internal/client_secrets/{ek}",
]


@pytest.mark.parametrize("prefix", ["/v1/realtime/calls", "/api/calls"])
async def test_internal_routes_are_unreachable_from_the_public_port(prefix: str) -> None:
    async with running_shards() as shards, aiohttp.ClientSession() as http:
        secret = await mint(http, shards[1].url("/v1/realtime/client_secrets"))
        assert secret.startswith("ek_01")
        call_id = f"rtc_s1_{'ab' * 16}"
        for traversal in TRAVERSALS:  # lands on shard 0, names a call of shard 1
            path = f"{prefix}/{call_id}{traversal.format(ek=secret)}"
            answer = await raw_request(shards[0].port, get(path))
            assert answer.status in (400, 404), (path, answer)
            assert b"Hostile." not in answer.body and b'"session"' not in answer.body, path
            assert answer.headers["content-type"].startswith("application/json"), path
        # Straight at the internal route, on either shard, even with a made-up token.
        for shard in shards:
            for headers in ((), (INTERNAL_HEADER.encode() + b": " + b"0" * 32,)):
                answer = await raw_request(
                    shard.port, get(f"/internal/client_secrets/{secret}", *headers)
                )
                assert answer.status == 404 and b"Hostile." not in answer.body


async def test_internal_routes_answer_only_on_the_unix_socket_with_the_token() -> None:
    async with running_shards() as shards, aiohttp.ClientSession() as http:
        secret = await mint(http, shards[1].url("/v1/realtime/client_secrets"))
        token = shards[0].layout.token.encode()
        # The real token on the public port is still not internal.
        answer = await raw_request(
            shards[1].port,
            get(f"/internal/client_secrets/{secret}", INTERNAL_HEADER.encode() + b": " + token),
        )
        assert answer.status == 404 and b"Hostile." not in answer.body
        # On the Unix socket, with the token: what sibling shards use.
        client = ShardClient(shards[0].layout)
        try:
            found = await client.get_json(1, f"/internal/client_secrets/{secret}")
            assert found["session"]["instructions"] == "Hostile."
        finally:
            await client.close()
        # On the Unix socket without the token: nothing.
        connector = aiohttp.UnixConnector(path=shards[1].layout.socket_path(1))
        async with aiohttp.ClientSession(connector=connector) as unix:
            response = await unix.get(f"http://shard/internal/client_secrets/{secret}")
            assert response.status == 404


async def _open_call(
    http: aiohttp.ClientSession, client: RealtimeClient, url: str, token: str
) -> str:
    response = await client.connect(http, url, token)
    assert response.status == 201, await response.text()
    return response.headers["Location"].rsplit("/", 1)[-1]


async def _hangup(http: aiohttp.ClientSession, url: str, call_id: str, token: str) -> int:
    response = await http.post(
        f"{url}/{call_id}/hangup", headers={"Authorization": f"Bearer {token}"}
    )
    if response.status != 200:
        body = await response.json()
        assert set(body) == {"error"} and body["error"]["message"], body
    return response.status


async def test_a_client_secret_ends_only_the_call_it_opened(start_relay: RelayFactory) -> None:
    relay = await start_relay(**SECURED)
    secrets_url = relay.url("/v1/realtime/client_secrets")
    mine, theirs = await mint(relay.http, secrets_url), await mint(relay.http, secrets_url)
    async with realtime_client() as first, realtime_client() as second:
        call_a = await _open_call(relay.http, first, relay.calls_url, mine)
        call_b = await _open_call(relay.http, second, relay.calls_url, mine)
        registry = relay.app[REGISTRY]
        assert await _hangup(relay.http, relay.calls_url, call_a, theirs) == 404
        assert registry.get_call(call_a) is not None, "another secret ended the call"
        assert await _hangup(relay.http, relay.calls_url, call_a, mine) == 200
        assert registry.get_call(call_a) is None
        # The relay API key and the admin token end any call.
        assert await _hangup(relay.http, relay.calls_url, call_b, RELAY_KEY) == 200
    async with realtime_client() as third:
        call_c = await _open_call(relay.http, third, relay.calls_url, RELAY_KEY)
        assert await _hangup(relay.http, relay.calls_url, call_c, theirs) == 404
        assert await _hangup(relay.http, relay.calls_url, call_c, ADMIN) == 200


async def test_a_client_secret_ends_only_its_call_across_shards() -> None:
    async with (
        running_shards() as shards,
        aiohttp.ClientSession() as http,
        realtime_client() as client,
    ):
        mine = await mint(http, shards[0].url("/v1/realtime/client_secrets"))
        theirs = await mint(http, shards[1].url("/v1/realtime/client_secrets"))
        # Opened on shard 1 with a secret minted by shard 0; hung up through shard 0.
        call_id = await _open_call(http, client, shards[1].url("/v1/realtime/calls"), mine)
        assert call_id.startswith("rtc_s1_")
        via_0 = shards[0].url("/v1/realtime/calls")
        for token in (theirs, f"ek_01{'0' * 30}"):
            assert await _hangup(http, via_0, call_id, token) in (401, 404)
            assert shards[1].app[REGISTRY].get_call(call_id) is not None
        assert await _hangup(http, via_0, call_id, mine) == 200
        assert shards[1].app[REGISTRY].get_call(call_id) is None


async def test_gathered_call_list_accepts_the_websocket_style_token() -> None:
    async with (
        running_shards() as shards,
        aiohttp.ClientSession() as http,
        realtime_client() as client,
    ):
        call_id = await _open_call(http, client, shards[1].url("/v1/realtime/calls"), RELAY_KEY)
        for headers in (
            {"Authorization": f"Bearer {ADMIN}"},
            {"Sec-WebSocket-Protocol": f"relay-monitor, bearer.{ADMIN}"},
        ):
            response = await http.get(shards[0].url("/api/calls"), headers=headers)
            assert response.status == 200, await response.text()
            listed = {c["id"] for c in (await response.json())["data"]}
            assert listed == {call_id}, headers
