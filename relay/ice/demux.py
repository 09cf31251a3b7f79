"""One port for everything: the page, the API, WebSockets and WebRTC media.

A browser on a locked-down network can often open TCP connections to the relay's
HTTPS origin and nothing else. The relay's listener therefore tells each accepted
connection apart by its first bytes, which it only peeks at (``MSG_PEEK``), so the
chosen handler reads the stream from its very first byte:

* a TLS ClientHello (``0x16 0x03``): HTTPS, handed to aiohttp with the TLS context;
* an HTTP method: plain HTTP, handed to aiohttp (on an HTTPS port: a redirect to
  HTTPS, so no token travels in clear);
* an RFC 4571 frame holding a STUN binding request (length, then a STUN header with
  the magic cookie): ICE-TCP media, handed to the call's ICE agent (:mod:`.tcp`), or
  to the shard that owns it (``route``);
* anything else, or nothing within ``first_bytes_secs``: closed and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Callable
from typing import Literal

from aiohttp import web
from yarl import URL

from .tcp import FRAME, IceTcpMux, local_ufrag, username_of

logger = logging.getLogger(__name__)

Kind = Literal["tls", "http", "ice", "unknown"]
PEEK_BYTES = 512
FIRST_BYTES_SECS = 10.0
_POLL_SECS = 0.02
_MAX_POLL_SECS = 0.25
_STUN_COOKIE = b"\x21\x12\xa4\x42"
_METHODS = (
    b"GET ",
    b"POST",
    b"PUT ",
    b"HEAD",
    b"DELE",
    b"OPTI",
    b"PATC",
    b"CONN",
    b"TRAC",
    b"PRI ",
)

#: Hands an ICE-TCP connection whose agent this process does not have to its owner
#: (``True``), given the agent's ufrag; the connection is the handler's from then on.
Router = Callable[[socket.socket, str], bool]


def classify(head: bytes) -> Kind | None:
    """What a connection that started with ``head`` speaks (``None``: need more)."""
    if not head:
        return None
    if head[0] == 0x16:
        return "tls" if len(head) < 2 or head[1] == 0x03 else "unknown"
    if head[:1].isalpha():
        if len(head) < 4:
            return None
        return "http" if head[:4] in _METHODS else "unknown"
    if len(head) < FRAME.size + 8:
        return None
    (length,) = FRAME.unpack_from(head)
    stun_type, cookie = head[2:4], head[6:10]
    if length >= 20 and stun_type == b"\x00\x01" and cookie == _STUN_COOKIE:
        return "ice"
    return "unknown"


class SharedPortSite(web.BaseSite):
    """An aiohttp site whose port also carries ICE-TCP (and TLS when given a context)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        mux: IceTcpMux | None,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        route: Router | None = None,
        first_bytes_secs: float = FIRST_BYTES_SECS,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port = host, port
        self._mux = mux
        self._route = route
        self._first_bytes_secs = first_bytes_secs
        self._sock = _listen(host, port, reuse_port, backlog)
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        #: Connections closed for speaking nothing we know, or nothing in time.
        self.refused = 0

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host, port=self.port))

    async def start(self) -> None:
        await super().start()
        self._accepting = asyncio.create_task(self._accept_forever())

    async def stop(self) -> None:
        tasks = [t for t in (self._accepting, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sock.close()
        await super().stop()

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                logger.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = asyncio.create_task(self._hand_over(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        try:
            kind, head = await _peek_kind(conn, self._first_bytes_secs)
            logger.debug(
                "connection on %s: %s", self.name, kind or f"nothing usable ({head[:8]!r})"
            )
            if not await self._serve(conn, kind, head):
                self.refused += 1
                conn.close()
        except BaseException:
            conn.close()
            raise

    async def _serve(self, conn: socket.socket, kind: Kind | None, head: bytes) -> bool:
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        if kind == "tls" and self._ssl_context is not None:
            await loop.connect_accepted_socket(server, conn, ssl=self._ssl_context)
        elif kind == "http" and self._ssl_context is not None:
            # Tokens must not travel in clear on an HTTPS port: send the client there.
            await loop.connect_accepted_socket(_HttpsRedirect, conn)
        elif kind == "http":
            await loop.connect_accepted_socket(server, conn)
        elif kind == "ice" and self._mux is not None:
            return await self._serve_ice(conn, head)
        else:
            return False
        return True

    async def _serve_ice(self, conn: socket.socket, head: bytes) -> bool:
        assert self._mux is not None
        username = username_of(head[FRAME.size :]) if len(head) > FRAME.size else None
        ufrag = local_ufrag(username) if username else None
        if ufrag and not self._mux.knows(ufrag) and self._route is not None:
            return self._route(conn, ufrag)
        await asyncio.get_running_loop().connect_accepted_socket(self._mux.stream, conn)
        return True


class _HttpsRedirect(asyncio.Protocol):
    """Plain HTTP on an HTTPS port: a 308 to the same URL over HTTPS, then close (the
    request is never handed to the app, so no credential it carries is used)."""

    MAX_HEAD = 8192
    #: A request head that never ends is closed after this (no slow client kept).
    LIMIT_SECS = FIRST_BYTES_SECS
    _SAFE = re.compile(rb"[A-Za-z0-9.:\[\]-]{1,255}")

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self.LIMIT_SECS, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer and len(self._buffer) < self.MAX_HEAD:
            return
        assert self._transport is not None
        lines = self._buffer.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1] if len(parts) == 3 and parts[1].startswith(b"/") else b"/"
        host = next((ln[5:].strip() for ln in lines[1:] if ln[:5].lower() == b"host:"), b"")
        if self._SAFE.fullmatch(host) and all(33 <= c < 127 for c in path):
            head = b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://%s%s\r\n" % (host, path)
        else:
            head = b"HTTP/1.1 400 Bad Request\r\n"
        self._transport.write(head + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        self._transport.close()


def _listen(host: str, port: int, reuse_port: bool, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _peek_kind(conn: socket.socket, timeout_secs: float) -> tuple[Kind | None, bytes]:
    """Peek at the first bytes until they say what the connection speaks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_secs
    head = b""
    poll = _POLL_SECS
    while loop.time() < deadline:
        await _readable(conn, deadline - loop.time())
        seen = len(head)
        with contextlib.suppress(BlockingIOError, InterruptedError):
            head = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
            if not head:
                return None, head  # closed before saying anything
        kind = classify(head)
        if kind is not None and (kind != "ice" or _whole_first_frame(head)):
            return kind, head
        # More bytes are on their way (or never come). The peeked bytes keep the socket
        # readable, so this polls: backing off while nothing new arrives keeps many
        # stalled connections from costing a core.
        poll = _POLL_SECS if len(head) > seen else min(poll * 2, _MAX_POLL_SECS)
        await asyncio.sleep(min(poll, max(0.0, deadline - loop.time())))
    return None, head


def _whole_first_frame(head: bytes) -> bool:
    (length,) = FRAME.unpack_from(head)
    return len(head) >= FRAME.size + length or len(head) >= PEEK_BYTES


async def _readable(conn: socket.socket, timeout_secs: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await asyncio.wait_for(ready, max(0.0, timeout_secs))
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(conn.fileno())
