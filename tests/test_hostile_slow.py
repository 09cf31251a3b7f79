"""Adversarial run 2/8, slow clients: idle connections, trickled headers and trickled
bodies are cut off within the relay's bounds (short ones here, real sockets on
127.0.0.1), and the refusals are counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp.test_utils import TestServer
from relay_fixtures import BASE_SETTINGS
from test_hostile_security import SECURED, running_shards

from relay.config import Secret
from relay.embedded import build_app
from relay.http.app import Upstream, create_app
from relay.http.errors import SLOW_CLIENTS, ClientLimits, bound_slow_clients

BOUND = 2.0
SLACK = 3.0  # the machine is shared: closing may come a little late, never early
SHORT = ClientLimits(idle_secs=BOUND, body_secs=BOUND)


@contextlib.asynccontextmanager
async def bounded_relay() -> AsyncIterator[TestServer]:
    app = build_app(replace(BASE_SETTINGS, **SECURED))
    bound_slow_clients(app, SHORT)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def closed_after(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes = b""
) -> tuple[float, bytes]:
    """Seconds until the relay closes the connection (sending ``trickle`` a byte at a
    time meanwhile), and whatever it sent before closing."""
    started = time.monotonic()
    received = b""
    deadline = started + BOUND + SLACK
    position = 0
    while time.monotonic() < deadline:
        if position < len(trickle):
            try:
                writer.write(trickle[position : position + 1])
                await writer.drain()
            except ConnectionError:
                break
            position += 1
        try:
            chunk = await asyncio.wait_for(reader.read(4096), 0.25)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not chunk:
            break
        received += chunk
    else:
        raise AssertionError(f"still open after {BOUND + SLACK} s (sent {position} bytes)")
    return time.monotonic() - started, received


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_idle_and_trickling_connections_are_closed() -> None:
    async with bounded_relay() as server:
        port = int(server.port or 0)
        async with connection(port) as (reader, writer):  # connects, says nothing
            took, _ = await closed_after(reader, writer)
            assert took >= BOUND * 0.7
        async with connection(port) as (reader, writer):  # headers, a byte at a time
            headers = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n" + b"X-Slow: " + b"s" * 400
            took, received = await closed_after(reader, writer, trickle=headers)
            assert took >= BOUND * 0.7 and b"200 OK" not in received
        async with connection(port) as (reader, writer):  # one request, then idle
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            await writer.drain()
            took, received = await closed_after(reader, writer)
            assert received.startswith(b"HTTP/1.1 200")


def _post(path: bytes, content_type: bytes = b"application/json") -> bytes:
    key = SECURED["relay_api_key"].value.encode()
    return (
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: relay\r\nContent-Type: "
        + content_type
        + b"\r\nAuthorization: Bearer "
        + key
        + b"\r\nContent-Length: 5000\r\n\r\n"
    )


async def test_trickled_bodies_get_a_408_and_are_counted() -> None:
    async with bounded_relay() as server:
        port, guard = int(server.port or 0), server.app[SLOW_CLIENTS]
        for path, ctype in (
            (b"/v1/realtime/calls", b"application/sdp"),
            (b"/v1/realtime/client_secrets", b"application/json"),
        ):
            async with connection(port) as (reader, writer):
                writer.write(_post(path, ctype))
                took, received = await closed_after(reader, writer, trickle=b"v" * 5000)
                head, _, body = received.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408"), received[:300]
                assert json.loads(body)["error"]["code"] == "request_timeout"
                assert took >= BOUND * 0.7
        assert guard.refused == 2
        # A route that answers without reading the body: the rest is drained for as
        # long at most, then the connection closes.
        async with connection(port) as (reader, writer):
            writer.write(_post(b"/v1/realtime/calls/rtc_" + b"0" * 32 + b"/hangup"))
            took, received = await closed_after(reader, writer, trickle=b"v" * 5000)
            assert received.startswith(b"HTTP/1.1 404"), received[:300]


async def test_forwarded_trickled_bodies_get_a_408() -> None:
    async with running_shards(prepare=lambda app: bound_slow_clients(app, SHORT)) as shards:
        path = b"/v1/realtime/calls/rtc_s1_" + b"d" * 32 + b"/hangup"
        async with connection(shards[0].port) as (reader, writer):
            writer.write(
                b"POST " + path + b" HTTP/1.1\r\nHost: relay\r\nContent-Length: 5000\r\n\r\n"
            )
            took, received = await closed_after(reader, writer, trickle=b"v" * 5000)
            assert received.startswith(b"HTTP/1.1 408"), received[:300]
        assert shards[0].app[SLOW_CLIENTS].refused == 1


def test_production_bounds() -> None:
    app = create_app(BASE_SETTINGS, upstream=Upstream("http://127.0.0.1:9/v1", Secret("sk-x")))
    limits = app[SLOW_CLIENTS].limits
    assert 10 <= limits.idle_secs <= 75 and 10 <= limits.body_secs <= 60
