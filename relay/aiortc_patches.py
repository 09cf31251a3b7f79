"""Every workaround of aiortc / aioice internals, in one place.

aiortc is pinned to one minor version (pyproject.toml) because these reach into
private names; ``tests/test_aiortc_patches.py`` fails loudly if an upgrade moves them.

What is patched, and why (details in the README's "aiortc workarounds"):

* **Pass-through audio jitter buffer.** aiortc's audio buffer holds 4 packets (80 ms)
  and, after one lost packet, keeps ~200 ms more for good. A relay forwards to peers
  that have their own jitter buffers (the browser's NetEq, OpenAI's), so audio is
  released as soon as it arrives, in order; late or duplicate packets are dropped,
  which keeps aiortc's ``TimestampMapper`` monotonic. A buffer can also hand each
  payload to a *packet sink* instead of aiortc's decoder thread: the caller's Opus is
  decoded on the spot (relay.media.uplink) and the agent's forwarded as is.
* **Consent checks with USE-CANDIDATE.** OpenAI's ICE-lite media servers have been seen
  to stop answering consent checks that lack USE-CANDIDATE (libwebrtc sends it), which
  kills calls after ~30 s. A controlling agent now nominates on every consent check.
* **Host addresses.** aioice skips 127.0.0.1 and gathers on every interface; the
  ``ice_addresses`` setting restricts gathering to the given addresses.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aioice.ice
import aiortc.rtcrtpreceiver
from aioice import stun
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

logger = logging.getLogger(__name__)

PacketSink = Callable[[bytes, int], None]
"""Receives (Opus payload, RTP timestamp) of each in-order packet."""

_stock_get_host_addresses = aioice.ice.get_host_addresses
#: aioice's own consent checks (kept so a test can show what the fix prevents).
stock_query_consent = aioice.ice.Connection.query_consent
_installed = False


class PassThroughAudioBuffer:
    """An audio "jitter buffer" that releases every in-order packet at once."""

    def __init__(self) -> None:
        self._last_seq: int | None = None
        #: When set, each in-order payload goes here.
        self.packet_sink: PacketSink | None = None
        #: Whether frames still go to aiortc's decoder thread (and the remote track).
        self.decode = True
        self.packets_dropped_late = 0

    @property
    def capacity(self) -> int:
        return 1

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last_seq is not None and not uint16_gt(seq, self._last_seq):
            self.packets_dropped_late += 1
            return False, None
        self._last_seq = seq
        data: bytes = packet._data  # type: ignore[attr-defined]  # set by the receiver
        if self.packet_sink is not None:
            self.packet_sink(data, packet.timestamp)
        if not self.decode:
            return False, None
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


def _jitter_buffer_factory(
    capacity: int, prefetch: int = 0, is_video: bool = False
) -> JitterBuffer | PassThroughAudioBuffer:
    if is_video:
        return JitterBuffer(capacity, prefetch, is_video)
    return PassThroughAudioBuffer()


def audio_buffer_of(receiver: RTCRtpReceiver) -> PassThroughAudioBuffer:
    """The pass-through buffer of an audio receiver (requires :func:`install`)."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    if not isinstance(buffer, PassThroughAudioBuffer):
        raise RuntimeError("relay.aiortc_patches.install() was not called before the receiver")
    return buffer


async def _query_consent(self: aioice.ice.Connection) -> None:
    """aioice's ``Connection.query_consent`` (RFC 7675), but a controlling agent puts
    USE-CANDIDATE on its consent checks, as libwebrtc does."""
    assert self.remote_password is not None
    failures = 0
    while True:
        interval = aioice.ice.CONSENT_INTERVAL * (0.8 + 0.4 * random.random())
        await asyncio.sleep(interval)
        for pair in self._nominated.values():
            request = self.build_request(pair, nominate=self.ice_controlling)
            try:
                await pair.protocol.request(
                    request,
                    pair.remote_addr,
                    integrity_key=self.remote_password.encode("utf8"),
                    retransmissions=0,
                )
                failures = 0
            except stun.TransactionError:
                failures += 1
            if failures >= aioice.ice.CONSENT_FAILURES:
                logger.info("ICE consent to send expired")
                self._query_consent_task = None
                await self.close()
                return


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates on exactly these addresses (empty: aioice's default)."""
    if not addresses:
        aioice.ice.get_host_addresses = _stock_get_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def install() -> None:
    """Install the process-wide patches (idempotent). Call before creating any PC."""
    global _installed
    if _installed:
        return
    # setattr: these names are module globals that aiortc resolves at call time.
    setattr(aiortc.rtcrtpreceiver, "JitterBuffer", _jitter_buffer_factory)  # noqa: B010
    aioice.ice.Connection.query_consent = _query_consent  # type: ignore[method-assign]
    _installed = True


def ice_connections(pc: RTCPeerConnection) -> Iterator[aioice.ice.Connection]:
    """The aioice connections under a peer connection (one with BUNDLE)."""
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None and id(dtls) not in seen:
            seen.add(id(dtls))
            yield dtls.transport._connection
    sctp = pc.sctp
    if sctp is not None and id(sctp.transport) not in seen:
        yield sctp.transport.transport._connection


def selected_pair(pc: RTCPeerConnection) -> dict[str, str] | None:
    """Local and remote address of the nominated candidate pair, if any."""
    for connection in ice_connections(pc):
        for pair in connection._nominated.values():
            local, remote = pair.local_candidate, pair.remote_candidate
            return {
                "local": f"{local.host}:{local.port}",
                "remote": f"{remote.host}:{remote.port}",
                "protocol": local.transport,
                "local_type": local.type,
                "remote_type": remote.type,
            }
    return None


def refuse_consent_without_use_candidate(pc: RTCPeerConnection) -> None:
    """Make this PC's ICE agent ignore binding requests without USE-CANDIDATE once a
    pair is nominated, like OpenAI's media servers (emulator's ``strict_consent``)."""
    for connection in ice_connections(pc):
        stock = connection.request_received

        def request_received(
            message: stun.Message,
            addr: tuple[str, int],
            protocol: Any,
            _stock: Any = stock,
            _connection: Any = connection,
        ) -> None:
            if _connection._nominated and "USE-CANDIDATE" not in message.attributes:
                return
            _stock(message, addr, protocol)

        connection.request_received = request_received  # type: ignore[method-assign]
