"""The shared port's demultiplexer (relay/ice/demux.py), with real sockets on 127.0.0.1:
TLS and plain HTTP on the same port as ICE-TCP; anything else, or too slow, or nothing
at all, is closed and counted; idle connections do not stall HTTP; nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioice import stun
from certs import self_signed
from relay_fixtures import BASE_SETTINGS, ServeRelay

from relay.embedded import build_app
from relay.http.state import ICE
from relay.ice.demux import PEEK_BYTES, SharedPortSite, classify
from relay.ice.tcp import FRAME, IceTcpMux


def binding_request(username: str, password: str = "x" * 22) -> bytes:
    """A STUN binding request as an ICE agent sends it (USERNAME, integrity, fingerprint)."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1853824767
    message.attributes["ICE-CONTROLLING"] = 1
    message.add_message_integrity(password.encode())
    message.add_fingerprint()
    return bytes(message)


def framed(data: bytes) -> bytes:
    return FRAME.pack(len(data)) + data


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes (fails if it does not in time)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- classify() -------------------------------------------------------------------------

STUN = framed(binding_request("relayufrag:peer"))


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"", None),
        (b"\x16", "tls"),
        (b"\x16\x03\x01\x02\x00\x01", "tls"),
        (b"\x16\x02", "unknown"),  # not a TLS record version
        (b"G", None),
        (b"GE", None),
        (b"GET", None),
        (b"GET /healthz HTTP/1.1\r\n", "http"),
        (b"POST /v1/realtime/calls HTTP/1.1\r\n", "http"),
        (b"OPTIONS * HTTP/1.1\r\n", "http"),
        (b"PRI * HTTP/2.0\r\n", "http"),
        (b"get / HTTP/1.1\r\n", "unknown"),  # methods are case-sensitive
        (b"HELLO", "unknown"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "unknown"),
        (STUN[:5], None),  # a frame header and part of the STUN header
        (STUN[:10], "ice"),
        (STUN, "ice"),
        (framed(b"\x01\x01" + STUN[4:22])[:10], "unknown"),  # a binding *response*
        (b"\x00\x14\x00\x01\x00\x00\xde\xad\xbe\xef", "unknown"),  # no magic cookie
        (b"\x00\x05\x00\x01\x00\x00\x21\x12\xa4\x42", "unknown"),  # frame too short
        (b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "unknown"),
        (bytes(range(200, 255)), "unknown"),
    ],
)
def test_classify(head: bytes, kind: str | None) -> None:
    assert classify(head) == kind


def test_classify_never_needs_more_than_it_peeks() -> None:
    """Every prefix of a valid start is either undecided or the right answer, and the
    longest answer needs at most a frame header and a STUN header."""
    for whole, kind in ((b"GET / HTTP/1.1\r\n", "http"), (STUN, "ice"), (b"\x16\x03", "tls")):
        for end in range(len(whole) + 1):
            assert classify(whole[:end]) in (None, kind)
        assert classify(whole[:10]) == kind
    assert len(STUN) < PEEK_BYTES


# -- a real listener --------------------------------------------------------------------


@dataclass
class Listener:
    site: SharedPortSite
    app: web.Application

    @property
    def port(self) -> int:
        return self.site.port

    @property
    def mux(self) -> IceTcpMux:
        mux = self.app[ICE].mux
        assert mux is not None
        return mux

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


StartListener = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def listener() -> AsyncIterator[StartListener]:
    """``await listener(first_bytes_secs=1.0)``: the relay app behind a SharedPortSite
    built here (so the test sets its bound), as relay.serving builds it otherwise."""
    runners: list[web.AppRunner] = []

    async def start(**site_options: Any) -> Listener:
        app = build_app(replace(BASE_SETTINGS, host="127.0.0.1", port=0))
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
        runners.append(runner)
        await runner.setup()
        site = SharedPortSite(runner, "127.0.0.1", 0, mux=app[ICE].mux, **site_options)
        await site.start()
        app[ICE].tcp_port = site.port
        return Listener(site, app)

    yield start
    for runner in runners:
        await runner.cleanup()


async def _healthz_secs(http: aiohttp.ClientSession, port: int) -> float:
    started = time.monotonic()
    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
        assert response.status == 200
        assert (await response.json()) == {"status": "ok"}
    return time.monotonic() - started


async def test_tls_and_plain_http_share_the_port(serve_relay: ServeRelay, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "127.0.0.1")
    relay = await serve_relay(host="127.0.0.1", port=0, tls_cert=str(cert), tls_key=str(key))
    assert relay.base.startswith("https://")
    trusting = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as http:
        async with http.get(relay.url("/healthz"), ssl=trusting) as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        # The page over TLS too, and a second request on the same TLS connection.
        async with http.get(relay.url("/"), ssl=trusting) as response:
            assert response.status == 200 and "text/html" in response.content_type
        # A client that does not trust the certificate is refused by TLS itself.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(relay.url("/healthz"), ssl=ssl.create_default_context())
        # Plain HTTP on the very same port is sent to HTTPS, and never reaches the app
        # (a token it carries is not used).
        plain = relay.base.replace("https://", "http://")
        async with http.get(
            plain + "/api/calls?x=1", headers={"Authorization": "Bearer t"}, allow_redirects=False
        ) as response:
            assert response.status == 308
            assert response.headers["Location"] == relay.url("/api/calls?x=1")


async def test_a_plain_http_head_that_never_ends_on_an_https_port_is_closed(
    serve_relay: ServeRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redirect to HTTPS keeps no slow client: an unfinished request head is closed
    at the bound, with nothing sent."""
    from relay.ice import demux

    monkeypatch.setattr(demux._HttpsRedirect, "LIMIT_SECS", 0.5)
    cert, key = self_signed(tmp_path, "127.0.0.1")
    relay = await serve_relay(host="127.0.0.1", port=0, tls_cert=str(cert), tls_key=str(key))
    port = int(relay.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/calls HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    await writer.drain()
    started = time.monotonic()
    assert await read_until_closed(reader, 5) == b""
    assert time.monotonic() - started < 3
    writer.close()


async def test_a_binding_request_for_an_unknown_agent_is_closed_and_counted(
    listener: StartListener,
) -> None:
    served = await listener()
    reader, writer = await served.connect()
    writer.write(framed(binding_request("nosuchufrag:peer")))
    await writer.drain()
    assert await read_until_closed(reader, 5) == b""  # no answer: a STUN reply would leak
    writer.close()
    assert served.mux.refused == 1
    assert served.site.refused == 0  # it was ICE; the agent lookup refused it


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x01\x00",  # TLS-like but not a ClientHello's record version
        b"\x00\x14\x00\x01\x00\x00\xde\xad\xbe\xef" + b"\x00" * 20,  # no magic cookie
    ],
)
async def test_garbage_is_closed_and_counted(listener: StartListener, garbage: bytes) -> None:
    served = await listener()
    reader, writer = await served.connect()
    writer.write(garbage)
    await writer.drain()
    assert await read_until_closed(reader, 5) == b""
    writer.close()
    assert served.site.refused == 1 and served.mux.refused == 0


async def test_tls_on_a_port_without_tls_is_closed(listener: StartListener) -> None:
    served = await listener()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"https://127.0.0.1:{served.port}/healthz", ssl=False)
    assert served.site.refused == 1


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(every)


async def test_slow_first_bytes_are_classified_once_complete(listener: StartListener) -> None:
    served = await listener(first_bytes_secs=5.0)
    reader, writer = await served.connect()
    request = b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    await _trickle(writer, request[:4], 0.5)  # "GET " one byte every 0.5 s: 2 s
    writer.write(request[4:])
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert served.site.refused == 0


async def test_a_slow_stun_frame_is_classified_once_whole(listener: StartListener) -> None:
    """The header says ICE after 10 bytes; the listener waits for the whole first frame
    (it needs the USERNAME), which arrives in pieces."""
    served = await listener(first_bytes_secs=5.0)
    reader, writer = await served.connect()
    frame = framed(binding_request("nosuchufrag:peer"))
    for start in range(0, len(frame), 30):
        writer.write(frame[start : start + 30])
        await writer.drain()
        await asyncio.sleep(0.3)
    assert await read_until_closed(reader, 5) == b""
    writer.close()
    assert served.mux.refused == 1 and served.site.refused == 0  # reached the mux


async def test_slow_first_bytes_are_closed_at_the_bound(listener: StartListener) -> None:
    served = await listener(first_bytes_secs=1.0)
    reader, writer = await served.connect()
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        await _trickle(writer, b"GET /", 0.5)  # "GET " would be complete at 1.5 s
    assert await read_until_closed(reader, 5) == b""
    elapsed = time.monotonic() - started
    writer.close()
    assert 0.9 < elapsed < 4, elapsed
    assert served.site.refused == 1


async def test_a_silent_connection_is_closed_after_the_bound(listener: StartListener) -> None:
    served = await listener(first_bytes_secs=0.5)
    reader, writer = await served.connect()
    started = time.monotonic()
    assert await read_until_closed(reader, 5) == b""
    assert 0.4 < time.monotonic() - started < 3
    writer.close()
    assert served.site.refused == 1


async def test_a_connection_closed_before_its_first_byte_is_counted(
    listener: StartListener,
) -> None:
    served = await listener(first_bytes_secs=5.0)
    for _ in range(3):
        _, writer = await served.connect()
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert served.site.refused == 3 and not served.site._pending


async def test_idle_connections_do_not_stall_http_nor_leak(listener: StartListener) -> None:
    """50 connections that send nothing and 50 that send one byte of a method and
    stop: /healthz still answers fast meanwhile; all are closed at the bound, and the
    process is back to its file descriptors and tasks of before."""
    served = await listener(first_bytes_secs=2.0)
    async with aiohttp.ClientSession() as http:
        await _healthz_secs(http, served.port)  # the session's own connection, first
        await asyncio.sleep(0.1)
        fds_before, tasks_before = open_fds(), len(asyncio.all_tasks())
        idle = [await served.connect() for _ in range(50)]
        half = [await served.connect() for _ in range(50)]
        for _, writer in half:
            writer.write(b"G")
        await asyncio.sleep(0.3)
        assert len(served.site._pending) == 100
        slowest = max([await _healthz_secs(http, served.port) for _ in range(5)])
        assert slowest < 0.5, f"/healthz took {slowest:.3f}s with 100 idle connections"
        closed = await asyncio.gather(*(read_until_closed(r, 5) for r, _ in idle + half))
        assert closed == [b""] * 100
        for _, writer in idle + half:
            writer.close()
        assert served.site.refused == 100
        await asyncio.sleep(0.2)
        assert not served.site._pending
        assert len(asyncio.all_tasks()) <= tasks_before
        assert open_fds() <= fds_before, "file descriptors leaked"


async def test_stalled_first_bytes_cost_little_cpu(listener: StartListener) -> None:
    """300 connections that sent one byte of a method and stalled: the listener waits
    for more (the peeked byte keeps each socket readable) without spinning on them."""
    served = await listener(first_bytes_secs=10.0)
    stalled = [await served.connect() for _ in range(300)]
    for _, writer in stalled:
        writer.write(b"P")
    await asyncio.sleep(1.0)  # past the first, fast polls
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(2.0)
    share = (time.process_time() - cpu) / (time.monotonic() - wall)
    for _, writer in stalled:
        writer.close()
    assert share < 0.2, f"{share:.0%} of a core for 300 stalled connections"
