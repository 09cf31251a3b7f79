"""ICE over TCP for aioice: RFC 6544 passive host candidates, RFC 4571 framing.

aioice only speaks ICE over UDP. Here an accepted TCP connection becomes one more
"protocol" of an existing aioice ``Connection``: aioice's own :class:`StunProtocol`
runs unchanged on top of a transport that frames each datagram with a 16-bit length
(RFC 4571). The first frame must be a STUN binding request; its ``USERNAME`` names the
ICE agent (our ufrag before the colon), which the :class:`IceTcpMux` looks up. From
there aioice answers, runs its triggered check back over the same connection, and the
browser (the controlling agent) nominates the pair if it is the best it has: UDP stays
preferred, since a TCP candidate's priority is below every UDP host candidate's.

Every connection has one owner: the mux closes the streams of an agent when the agent
closes, and a stream that does not identify itself in time is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
from collections.abc import Callable
from typing import Any

import aioice.ice
from aioice import stun
from aioice.candidate import Candidate

logger = logging.getLogger(__name__)

FRAME = struct.Struct("!H")
MAX_FRAME = 0xFFFF
#: RFC 6544 recommends a lower type preference for TCP than for UDP host candidates
#: (126): with 90, any UDP pair that works is preferred.
TCP_TYPE_PREFERENCE = 90
IDENTIFY_SECS = 10.0  # an accepted connection names its agent within this, or goes
MAX_STREAMS_PER_AGENT = 8
#: From the start of its checks, an agent with a passive candidate waits this long for
#: a TCP connection before it may conclude that ICE failed.
TCP_WAIT_SECS = 10.0


def passive_candidate(host: str, port: int) -> Candidate:
    """The relay's passive TCP host candidate on ``host:port`` (component 1)."""
    priority = (TCP_TYPE_PREFERENCE << 24) + (0xFFFF << 8) + (256 - 1)
    return Candidate(
        foundation="tcp" + secrets.token_hex(4),
        component=1,
        transport="tcp",
        priority=priority,
        host=host,
        port=port,
        type="host",
        tcptype="passive",
    )


def username_of(frame: bytes) -> str | None:
    """The USERNAME of a STUN binding request, or ``None`` if ``frame`` is not one."""
    try:
        message = stun.parse_message(frame)
    except ValueError:
        return None
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        return None
    username = message.attributes.get("USERNAME")
    return username if isinstance(username, str) else None


def local_ufrag(username: str) -> str:
    """Our ufrag in a binding request's ``USERNAME`` (``ours:theirs``)."""
    return username.split(":", 1)[0]


class _Agent:
    def __init__(self, connection: aioice.ice.Connection, candidate: Candidate) -> None:
        self.connection = connection
        self.candidate = candidate
        self.streams: set[IceTcpStream] = set()
        self.attached = False
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    def wait_for_tcp(self) -> None:
        """Until a TCP connection attaches (or ``TCP_WAIT_SECS`` after the checks
        start), aioice must not conclude that ICE failed. A browser's active TCP
        candidates never pair on this side, so an offer whose only candidates are TCP
        leaves the check list empty; with end-of-candidates signalled, aioice would
        fail at once, before the browser's connection could arrive."""
        connection = self.connection
        loop = asyncio.get_running_loop()
        stock_expected = connection._remote_candidates_expected
        stock_connect = connection.connect

        def expected() -> bool:
            waiting = not self.attached and (self.deadline is None or loop.time() < self.deadline)
            return bool(stock_expected()) or waiting

        async def connect() -> None:
            self.deadline = loop.time() + TCP_WAIT_SECS
            # Just after the deadline (a timer may run a little early), fail if every
            # pair has: aioice only looks again when a check ends.
            self.timer = loop.call_at(self.deadline + 0.05, connection._check_list_maybe_fail)
            await stock_connect()

        connection._remote_candidates_expected = expected  # type: ignore[method-assign]
        connection.connect = connect  # type: ignore[method-assign]


class IceTcpMux:
    """The ICE agents that take TCP connections, by local ufrag. One per process."""

    def __init__(self) -> None:
        self._agents: dict[str, _Agent] = {}
        #: Connections closed without reaching an agent (garbage, unknown, too slow).
        self.refused = 0

    def register(self, connection: aioice.ice.Connection, candidate: Candidate) -> None:
        """Take TCP connections for ``connection`` on ``candidate`` until it closes."""
        agent = _Agent(connection, candidate)
        self._agents[connection.local_username] = agent
        agent.wait_for_tcp()
        stock_close = connection.close

        async def close() -> None:
            self._drop(agent)
            await stock_close()

        connection.close = close  # type: ignore[method-assign]

    def _drop(self, agent: _Agent) -> None:
        if agent.timer is not None:
            agent.timer.cancel()
        if self._agents.get(agent.connection.local_username) is agent:
            del self._agents[agent.connection.local_username]
        for stream in list(agent.streams):
            stream.close()

    def __len__(self) -> int:
        return len(self._agents)

    def knows(self, ufrag: str) -> bool:
        return ufrag in self._agents

    def attach(self, stream: IceTcpStream, username: str) -> aioice.ice.StunProtocol | None:
        """The aioice protocol for ``stream``, if ``username`` names a live agent."""
        agent = self._agents.get(local_ufrag(username))
        if agent is None or len(agent.streams) >= MAX_STREAMS_PER_AGENT:
            return None
        agent.streams.add(stream)
        agent.attached = True
        stream.on_close(lambda: agent.streams.discard(stream))
        protocol = aioice.ice.StunProtocol(agent.connection)
        protocol.local_candidate = agent.candidate
        protocol.connection_made(_FramedTransport(stream))  # type: ignore[arg-type]
        return protocol

    def stream(self) -> IceTcpStream:
        """A protocol for an accepted connection that speaks ICE-TCP."""
        return IceTcpStream(self)


class _FramedTransport:
    """What aioice's StunProtocol sees as its datagram transport: one frame a datagram."""

    def __init__(self, stream: IceTcpStream) -> None:
        self._stream = stream

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._stream.send_frame(data)

    def close(self) -> None:
        self._stream.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._stream.extra(name, default)


class IceTcpStream(asyncio.Protocol):
    """One accepted ICE-TCP connection: RFC 4571 frames in and out."""

    def __init__(self, mux: IceTcpMux) -> None:
        self._mux = mux
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._peer: tuple[str, int] = ("", 0)
        self._stun: aioice.ice.StunProtocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._on_close: list[Callable[[], None]] = []
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Media must not wait for Nagle (asyncio sets TCP_NODELAY only on sockets
            # whose proto says IPPROTO_TCP, which the listener's accepted ones do not).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername") or ("", 0)
        self._peer = (str(peer[0]), int(peer[1]))
        self._timer = asyncio.get_running_loop().call_later(IDENTIFY_SECS, self._too_slow)

    def _too_slow(self) -> None:
        if self._stun is None:
            self._refuse("did not identify itself in time")

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= FRAME.size and not self._closed:
            (length,) = FRAME.unpack_from(self._buffer)
            if len(self._buffer) < FRAME.size + length:
                return
            frame = bytes(self._buffer[FRAME.size : FRAME.size + length])
            del self._buffer[: FRAME.size + length]
            self._frame(frame)

    def _frame(self, frame: bytes) -> None:
        if self._stun is None:
            username = username_of(frame)
            protocol = self._mux.attach(self, username) if username else None
            if protocol is None:
                self._refuse("its first frame names no ICE agent of this relay")
                return
            self._stun = protocol
            if self._timer is not None:
                self._timer.cancel()
        self._stun.datagram_received(frame, self._peer)

    def _refuse(self, why: str) -> None:
        self._mux.refused += 1
        logger.info("ICE-TCP connection from %s closed: %s", self._peer[0], why)
        self.close()

    def send_frame(self, data: bytes) -> None:
        if self._transport is not None and not self._closed and len(data) <= MAX_FRAME:
            self._transport.write(FRAME.pack(len(data)) + data)

    def extra(self, name: str, default: Any = None) -> Any:
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._stun is not None:
            self._stun.connection_lost(exc)
        for callback in self._on_close:
            callback()
        self._on_close.clear()
