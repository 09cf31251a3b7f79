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
* **Gathering** (:mod:`relay.ice`). aioice skips 127.0.0.1, gathers on every interface
  on ephemeral ports and knows no public address nor ICE-TCP; an :class:`IcePlan`
  sets the host addresses, a UDP port range, announced addresses, and a passive
  ICE-TCP candidate on the page's port.

Nothing is patched process-wide: :func:`adopt` changes one peer connection's own
receivers and ICE connections, after they exist and before they gather or receive.
Anything else in the process (the embedded OpenAI emulator, a test's own peers) keeps
stock aiortc behaviour.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import secrets
import types
from collections.abc import Callable, Iterator

import aioice.ice
from aioice import Candidate, stun
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

from .ice.gather import IcePlan, gather

logger = logging.getLogger(__name__)

#: Gather as aioice does (every interface but loopback, ephemeral ports).
DEFAULT_PLAN = IcePlan()

PacketSink = Callable[[bytes, int], None]
"""Receives (Opus payload, RTP timestamp) of each in-order packet."""


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


def audio_buffer_of(receiver: RTCRtpReceiver) -> PassThroughAudioBuffer:
    """The pass-through buffer of an audio receiver (requires :func:`install`)."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    if not isinstance(buffer, PassThroughAudioBuffer):
        raise RuntimeError("relay.aiortc_patches.adopt() was not called on this receiver")
    return buffer


async def consent_checks(self: aioice.ice.Connection) -> None:
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


def adopt(pc: RTCPeerConnection, plan: IcePlan = DEFAULT_PLAN) -> None:
    """Apply the relay's workarounds to ``pc``: pass-through buffers on its audio
    receivers, USE-CANDIDATE consent checks, and gathering per ``plan`` (fixed host
    addresses, a UDP port range, announced addresses, a passive ICE-TCP candidate; see
    :mod:`relay.ice`). Call it once its transceivers and data channel exist (after
    ``setRemoteDescription`` for an answerer, after ``addTransceiver`` and
    ``createDataChannel`` for an offerer) and before ``setLocalDescription``."""
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        current = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        if transceiver.kind == "audio" and not isinstance(current, PassThroughAudioBuffer):
            receiver._RTCRtpReceiver__jitter_buffer = PassThroughAudioBuffer()  # type: ignore[attr-defined]
    for connection in ice_connections(pc):
        connection.query_consent = types.MethodType(consent_checks, connection)  # type: ignore[method-assign]
        if plan.ufrag_prefix:
            connection._local_username = plan.ufrag_prefix + secrets.token_hex(4)
        if plan != DEFAULT_PLAN:
            connection.gather_candidates = functools.partial(gather, connection, plan)  # type: ignore[method-assign]


def late_audio_packets(pc: RTCPeerConnection) -> int:
    """Audio packets the adopted receivers of ``pc`` dropped as late or duplicate."""
    total = 0
    for transceiver in pc.getTransceivers():
        buffer = transceiver.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        if isinstance(buffer, PassThroughAudioBuffer):
            total += buffer.packets_dropped_late
    return total


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


def nominated_candidates(pc: RTCPeerConnection) -> tuple[Candidate, Candidate] | None:
    """The local and remote candidate of the nominated pair, if any."""
    for connection in ice_connections(pc):
        for pair in connection._nominated.values():
            return pair.local_candidate, pair.remote_candidate
    return None


def selected_pair(pc: RTCPeerConnection) -> dict[str, str] | None:
    """Local and remote address of the nominated candidate pair, if any."""
    nominated = nominated_candidates(pc)
    if nominated is None:
        return None
    local, remote = nominated
    return {
        "local": f"{local.host}:{local.port}",
        "remote": f"{remote.host}:{remote.port}",
        "protocol": local.transport,
        "local_type": local.type,
        "remote_type": remote.type,
    }


async def ice_peer_answers(pc: RTCPeerConnection, timeout_secs: float) -> bool:
    """Whether the remote ICE agent of ``pc`` answers a connectivity check on its
    nominated pair within ``timeout_secs`` (a dead peer otherwise takes aioice's
    consent expiry, ~30 s, to notice). ``True`` when there is nothing to check."""
    for connection in ice_connections(pc):
        if connection.remote_password is None:
            continue
        for pair in connection._nominated.values():
            request = connection.build_request(pair, nominate=connection.ice_controlling)
            try:
                await asyncio.wait_for(
                    pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=connection.remote_password.encode("utf8"),
                        retransmissions=2,
                    ),
                    timeout_secs,
                )
            except (stun.TransactionError, TimeoutError, OSError):
                return False
    return True
