"""The browser's WebRTC leg into the relay: its offer, the relay's answer, the caller's
audio into the caller pipeline, the agent's audio out, and the ``oai-events`` channel.

One :class:`WebRtcCallerLeg` per call; the call owns it and closes it (idempotent). It is
one of the call's caller legs (:class:`relay.call.CallerLeg`); the other carries the call
over a WebSocket (:mod:`relay.caller.websocket`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from aioice import Candidate
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from .. import aiortc_patches
from ..errors import InvalidOffer
from ..events import EventBridge
from ..ice.gather import IcePlan
from ..media.tracks import PacketForwardTrack
from ..media.uplink import CallerAudio
from ..upstream.leg import SDP_ERRORS


class WebRtcCallerLeg:
    """The browser's peer connection, answered by the relay."""

    def __init__(self, ice: IcePlan, *, on_ended: Callable[[str], None]) -> None:
        self._ice = ice
        self._on_ended = on_ended
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        #: The agent's Opus packets to the browser, forwarded as they are.
        self.downlink = PacketForwardTrack()
        self._readers: set[asyncio.Task[None]] = set()
        self._transport = "none"

    @property
    def transport(self) -> str:
        """The path ICE selected (:func:`transport_of`), ``none`` before it selected
        one; after the call, the last one it used."""
        nominated = aiortc_patches.nominated_candidates(self.pc)
        if nominated is not None:
            self._transport = transport_of(*nominated)
        return self._transport

    async def accept(self, offer_sdp: str, bridge: EventBridge, audio: CallerAudio) -> None:
        """Take the browser's offer; its first audio section feeds ``audio``."""
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", bridge.attach_caller)
        pc.on("connectionstatechange", self._on_state)
        pc.on("iceconnectionstatechange", lambda: self.transport)  # remember the path
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except SDP_ERRORS as exc:
            raise InvalidOffer(f"Invalid SDP offer: {exc}", param="sdp") from None
        aiortc_patches.adopt(pc, self._ice)
        first = True
        for transceiver in pc.getTransceivers():
            if transceiver.kind != "audio":
                continue
            # The caller's packets go straight to the caller pipeline; aiortc's decoder
            # thread gets nothing, so its remote track never queues a frame.
            buffer = aiortc_patches.audio_buffer_of(transceiver.receiver)
            buffer.decode = False
            if first:  # the first audio section is the microphone
                buffer.packet_sink = audio.on_packet
                first = False

    async def answer(self) -> str:
        """The relay's SDP answer, sending the agent's track to the browser."""
        self.pc.addTrack(self.downlink)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    def _on_track(self, track: MediaStreamTrack) -> None:
        # Audio arrives through the packet sink; anything else (video) is read and
        # dropped, so no remote track is ever left unread.
        if track.kind != "audio":
            task = asyncio.ensure_future(_drain(track))
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._on_ended(f"caller_{self.pc.connectionState}")

    def play(self, payload: bytes, rtp_timestamp: int) -> None:
        """One agent Opus packet, forwarded (the browser's jitter buffer smooths it)."""
        self.downlink.push(payload, rtp_timestamp)

    def playback(self, change: str) -> None:
        """Nothing to do: at most a few packets are queued here, the browser's jitter
        buffer plays what comes, and OpenAI truncates a WebRTC caller's turn itself."""

    @property
    def frames_out(self) -> int:
        return self.downlink.packets_sent

    @property
    def dropped_out(self) -> int:
        return self.downlink.dropped

    @property
    def dropped_in(self) -> int:
        return aiortc_patches.late_audio_packets(self.pc)

    def late_packets(self) -> int:
        return self.dropped_in

    async def stats(self) -> Mapping[str, Any]:
        self.transport  # noqa: B018 -- remember the path while the leg is up
        return await self.pc.getStats()

    async def answers(self, timeout_secs: float) -> bool:
        """Whether the browser's ICE agent still answers a connectivity check."""
        return await aiortc_patches.ice_peer_answers(self.pc, timeout_secs)

    def snapshot(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "connection_state": self.pc.connectionState,
            "ice_connection_state": self.pc.iceConnectionState,
            "selected_pair": aiortc_patches.selected_pair(self.pc),
        }

    def stop(self) -> None:
        """Stop sending (a sender waiting for agent audio ends now)."""
        self.downlink.stop()

    async def close(self) -> None:
        """Close the peer connection and stop reading (idempotent)."""
        for task in list(self._readers):
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self.pc.close()


#: The type preference (the top byte of a candidate's priority, RFC 8445 5.1.2) that
#: libwebrtc (Chrome, Edge, Safari) gives a relayed candidate, by how it reaches its
#: TURN server (``IcePriorityValue`` in libwebrtc's p2p/base/port.h). The relay itself
#: sees only the TURN server's relayed UDP address; how the browser reaches that server
#: only the browser knows, and this is where it says it.
TURN_PROTOCOL_OF_PREFERENCE = {2: "turn-udp", 1: "turn-tcp", 0: "turn-tls"}
#: RFC 8445's recommended priority of every relayed candidate of a single-homed agent
#: (type preference 0, local preference 65535; aioice's): it says nothing of the protocol.
_RFC_RELAYED_PRIORITY = 65535 << 8


def transport_of(local: Candidate, remote: Candidate) -> str:
    """What carries a WebRTC caller leg, from its selected pair: ``udp`` or ``tcp``
    (ICE-TCP) between the browser and the relay; when the browser's candidate is a
    relayed one, ``turn-udp``, ``turn-tcp`` or ``turn-tls`` (the browser's hop to its
    TURN server, read from the candidate's priority as libwebrtc encodes it), or
    ``turn`` from an agent whose priority does not tell."""
    if remote.type == "relay":
        if remote.priority & 0xFFFFFF00 == _RFC_RELAYED_PRIORITY:
            return "turn"
        return TURN_PROTOCOL_OF_PREFERENCE.get(remote.priority >> 24, "turn")
    return "tcp" if local.transport.lower() == "tcp" else "udp"


async def _drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(Exception):
        while True:
            await track.recv()
