"""One emulated WebRTC call: its peer connection, the ``oai-events`` channel and the
audio in both directions (the transport-independent rest is
:class:`~.core.EmulatedSession`: conversation, cap, events, close).

Every task and the peer connection belong to the :class:`EmulatedCall`; ``close()``
cancels and awaits them all, and is safe to call from anywhere, any number of times
(including from one of the call's own tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from . import ids
from .core import EmulatedSession
from .ice import configure_ice
from .playout import AgentAudioTrack
from .sdp import OfferInfo, tweak_answer
from .session_config import SessionConfig
from .settings import EmulatorSettings

logger = logging.getLogger(__name__)

EVENTS_LABEL = "oai-events"
#: A call whose ICE/DTLS never completes is dropped after this long.
CONNECT_TIMEOUT_SECS = 30.0
#: After ``session_expired`` has flushed and the channel closed: the peer connection
#: follows (OpenAI: the PC goes seconds later).
EXPIRY_PC_GRACE_SECS = 1.0
CLOSE_TIMEOUT_SECS = 5.0


def _to_mono(frame: AudioFrame) -> np.ndarray:
    """aiortc decodes Opus to packed s16 stereo; downmix to mono int16."""
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = array.reshape(channels, -1).astype(np.float64).mean(axis=0)
    else:
        mono = array.reshape(-1, channels).astype(np.float64).mean(axis=1)
    if frame.format.name.startswith("flt"):  # not produced by aiortc; handled anyway
        mono = mono * 32767.0
    out: np.ndarray = np.clip(mono, -32768, 32767).astype(np.int16)
    return out


class EmulatedCall(EmulatedSession):
    """One WebRTC call to the emulated Realtime API."""

    transport = "webrtc"

    def __init__(
        self,
        config: SessionConfig,
        settings: EmulatorSettings,
        on_closed: Callable[[Any], None] | None = None,
    ) -> None:
        self.track = AgentAudioTrack()
        super().__init__(config, settings, self.track, on_closed, id_=ids.call_id())
        self.connected = asyncio.Event()
        self.channel_open = asyncio.Event()
        self.channel: RTCDataChannel | None = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # -- setup --

    async def answer(self, offer: OfferInfo) -> str:
        """Apply the offer and return the answer SDP (the caller closes on error)."""
        # Remote first: the answerer's transceivers come from the offer; then the agent
        # track takes the audio transceiver (sendrecv, or sendonly... as offered).
        await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        if any(
            t.kind == "audio" and t.direction in ("sendrecv", "recvonly")
            for t in self.pc.getTransceivers()
        ):
            self.pc.addTrack(self.track)
        # Between the two descriptions: the transports exist, gathering has not begun.
        configure_ice(
            self.pc,
            host_addresses=self.settings.ice_addresses,
            strict_consent=self.settings.strict_consent,
        )
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.start_cap()
        self._spawn(self._connect_watchdog())
        return tweak_answer(
            self.pc.localDescription.sdp, offer.opus_payload_type, self.settings.ice_addresses
        )

    # -- data channel --

    @property
    def ready(self) -> bool:
        return self.channel_open.is_set()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_LABEL or self.channel is not None:
            return  # OpenAI only talks on the client's first "oai-events" channel
        self.channel = channel
        channel.on("message", self.on_client_message)
        channel.on("close", lambda: self.channel_open.clear())
        # aiortc hands over in-band channels already open (no "open" event follows).
        if channel.readyState == "open":
            self._on_channel_open()
        else:
            channel.on("open", self._on_channel_open)

    def _on_channel_open(self) -> None:
        if self.channel_open.is_set() or self._closing:
            return
        self.channel_open.set()
        self._start_events()

    def _max_message_bytes(self) -> int:
        sctp = self.pc.sctp
        size = getattr(sctp, "_remote_max_message_size", 65536) if sctp else 65536
        return int(size) if size else 1 << 30

    def _transmit(self, text: str) -> bool:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return False
        channel.send(text)
        return True

    # -- media --

    def _on_track(self, track: MediaStreamTrack) -> None:
        # Always consume remote tracks: aiortc queues unread frames without bound.
        if track.kind == "audio":
            self._spawn(self._receive_audio(track))
        else:
            self._spawn(self._drain(track))

    async def _receive_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, AudioFrame):
                    continue
                mono = _to_mono(frame)
                # The RTP timeline (pts) keeps lost packets as gaps, like OpenAI's
                # buffer would; a non-monotonic pts falls back to counting samples.
                if frame.pts is not None and frame.time_base is not None:
                    start_ms = float(frame.pts * frame.time_base * 1000)
                else:
                    start_ms = self.input_end_ms
                if frame.sample_rate and frame.sample_rate != 48000:
                    mono = np.repeat(mono, 48000 // frame.sample_rate)
                self.feed_audio(start_ms, mono)

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    # -- lifetime --

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self._close_soon(f"connection {state}")

    async def _connect_watchdog(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), CONNECT_TIMEOUT_SECS)
        except TimeoutError:
            await self.close("connect timeout")

    async def _expire_transport(self) -> None:
        if self.channel is not None:
            self.channel.close()
        await asyncio.sleep(EXPIRY_PC_GRACE_SECS)
        await self.close("session expired")

    async def _close_transport(self) -> None:
        self.track.stop()
        await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT_SECS)
