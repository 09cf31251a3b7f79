"""An *active* ICE-TCP client for aiortc (RFC 6544, RFC 4571 framing), for the tests and
the benchmarks: what a browser on a network that lets only TCP to the relay's port
through does.

aiortc (aioice) speaks ICE over UDP only. Here the offerer's aioice ``Connection`` gets
one more protocol: aioice's own :class:`StunProtocol` over a TCP connection to the
relay's passive candidate, each datagram one length-prefixed frame. Its local candidate
is ``tcp active``; the answer's passive candidate pairs with it (same transport), so
aioice checks and nominates the pair like any other, and DTLS, SRTP and SCTP then flow
over that TCP connection. The UDP candidates are left out of the offer and of the
answer, so TCP is the only way in.

Use::

    pc = RTCPeerConnection(...)          # the offerer
    await pc.setLocalDescription(await pc.createOffer())
    offer = tcp_only_offer(pc.localDescription.sdp)
    answer = ...                         # POST offer to /v1/realtime/calls
    answer = await attach_tcp(pc, answer)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

``connect_to`` opens the TCP connection somewhere else than the candidate says (a
sibling shard's port, as a kernel spreading ``SO_REUSEPORT`` connections would).

Nothing here imports the relay beyond its framing constant: the client must speak the
protocol, not share the server's code paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import aioice.ice
from aioice.candidate import Candidate
from aiortc import RTCPeerConnection

FRAME = struct.Struct("!H")  # RFC 4571: a 16-bit length before each datagram
#: The discard port browsers announce for an active TCP candidate (RFC 6544 4.5).
ACTIVE_PORT = 9


def _candidate(line: str) -> Candidate:
    return Candidate.from_sdp(line.split(":", 1)[1])


def active_candidate(host: str, port: int = ACTIVE_PORT) -> Candidate:
    """A ``tcp active`` host candidate (RFC 6544's type preference for TCP: 90)."""
    return Candidate(
        foundation="tcpactive",
        component=1,
        transport="tcp",
        priority=(90 << 24) + (0xFFFF << 8) + 255,
        host=host,
        port=port,
        type="host",
        tcptype="active",
    )


def tcp_only_offer(sdp: str, host: str = "127.0.0.1", end_of_candidates: bool = False) -> str:
    """``sdp`` with its UDP candidates replaced by one ``tcp active`` candidate; with
    ``end_of_candidates`` it says so (as aiortc or Firefox do), else it does not (like
    Chrome's, which trickles)."""
    active = active_candidate(host)
    out: list[str] = []
    added = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            added = False
        if line.startswith("a=candidate:") or line == "a=end-of-candidates":
            if not added:
                out.append("a=candidate:" + active.to_sdp())
                if end_of_candidates:
                    out.append("a=end-of-candidates")
                added = True
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def passive_candidates(sdp: str) -> list[Candidate]:
    """The ``tcp passive`` candidates of an answer (each once)."""
    seen: dict[tuple[str, int], Candidate] = {}
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidate = _candidate(line)
            if candidate.transport.lower() == "tcp" and candidate.tcptype == "passive":
                seen.setdefault((candidate.host, candidate.port), candidate)
    return list(seen.values())


def without_udp(sdp: str) -> str:
    """``sdp`` without its UDP candidates."""
    keep = [
        line
        for line in sdp.splitlines()
        if not (line.startswith("a=candidate:") and _candidate(line).transport.lower() == "udp")
    ]
    return "\r\n".join(keep) + "\r\n"


def ice_connection(pc: RTCPeerConnection) -> aioice.ice.Connection:
    """The aioice agent of a bundled peer connection."""
    for transceiver in pc.getTransceivers():
        return transceiver.sender.transport.transport._connection
    assert pc.sctp is not None
    return pc.sctp.transport.transport._connection


class _Framed(asyncio.Protocol):
    """One active ICE-TCP connection: frames in to aioice, aioice's datagrams out."""

    def __init__(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        self.stun: aioice.ice.StunProtocol | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.frames_in = 0
        self.frames_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= FRAME.size:
            (length,) = FRAME.unpack_from(self._buffer)
            if len(self._buffer) < FRAME.size + length:
                return
            frame = bytes(self._buffer[FRAME.size : FRAME.size + length])
            del self._buffer[: FRAME.size + length]
            self.frames_in += 1
            if self.stun is not None:
                # As if from the candidate's address: aioice checks the response's source.
                self.stun.datagram_received(frame, self.remote)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stun is not None:
            self.stun.connection_lost(exc)

    # What StunProtocol sees as its datagram transport.
    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.frames_out += 1
            self.transport.write(FRAME.pack(len(data)) + data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default if self.transport is None else self.transport.get_extra_info(name, default)


class TcpLink:
    """The client's side of one ICE-TCP connection (for assertions and closing)."""

    def __init__(self, framed: _Framed, protocol: aioice.ice.StunProtocol) -> None:
        self.framed = framed
        self.protocol = protocol

    @property
    def frames_in(self) -> int:
        return self.framed.frames_in

    @property
    def frames_out(self) -> int:
        return self.framed.frames_out

    def close(self) -> None:
        self.framed.close()


async def attach_tcp(
    pc: RTCPeerConnection,
    answer_sdp: str,
    *,
    connect_to: tuple[str, int] | None = None,
    timeout_secs: float = 5.0,
) -> tuple[str, TcpLink]:
    """Open the TCP connection to the answer's passive candidate and make it a protocol
    of ``pc``'s ICE agent; returns the answer to apply (UDP candidates removed) and the
    link. Call before ``setRemoteDescription``, which pairs the candidates."""
    candidates = passive_candidates(answer_sdp)
    if not candidates:
        raise ConnectionError("the answer has no passive ICE-TCP candidate")
    remote = candidates[0]
    connection = ice_connection(pc)
    loop = asyncio.get_running_loop()
    target = connect_to or (remote.host, remote.port)
    transport, framed = await asyncio.wait_for(
        loop.create_connection(lambda: _Framed((remote.host, remote.port)), *target),
        timeout_secs,
    )
    local_host, local_port = transport.get_extra_info("sockname")[:2]
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = active_candidate(local_host, local_port)
    protocol.connection_made(framed)  # type: ignore[arg-type]
    framed.stun = protocol
    connection._protocols.append(protocol)
    return without_udp(answer_sdp), TcpLink(framed, protocol)


async def close_link(link: TcpLink | None) -> None:
    if link is not None:
        link.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
