"""The relay's leg to OpenAI: caller audio out, agent audio in, events.

:class:`Upstream` is what a call needs of it, whatever carries it: WebRTC
(:class:`UpstreamLeg`, here; the default) or OpenAI's WebSocket transport
(:class:`~relay.upstream.websocket.WebSocketUpstreamLeg`), chosen by
``RELAY_UPSTREAM_TRANSPORT`` (:func:`new_upstream_leg`).

One leg per upstream session. It owns its peer connection (or socket); the call owns
the leg and closes it (idempotent, awaited)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy

from .. import aiortc_patches
from ..config import Settings
from ..errors import UpstreamError, UpstreamTimeout
from ..events import EventBridge
from ..ice.gather import IcePlan, IceSetup
from ..media.downlink import AgentAudio
from ..media.tracks import UplinkTrack
from .openai import OpenAIConnector

logger = logging.getLogger(__name__)

HANGUP_TIMEOUT_SECS = 2.0
SDP_ERRORS = (ValueError, AssertionError, KeyError, IndexError)


class Upstream(Protocol):
    """What a call needs of its leg to OpenAI."""

    #: OpenAI's id of the session (WebRTC: its call id), once known.
    call_id: str | None
    #: Set up and not yet ended.
    active: bool

    @property
    def transport(self) -> str:
        """``webrtc`` or ``websocket``."""
        ...

    async def open(
        self,
        session: dict[str, Any],
        model: str,
        *,
        uplink: UplinkTrack,
        agent_audio: AgentAudio,
        bridge: EventBridge,
        decode_agent: bool,
    ) -> float:
        """Set the session up with ``session`` (locked config); returns the seconds."""
        ...

    def decode_agent(self, wanted: bool) -> None:
        """Agent PCM for observers only while one wants it."""
        ...

    async def answers(self, timeout_secs: float) -> bool:
        """Whether OpenAI's side is still there."""
        ...

    def snapshot(self) -> dict[str, Any]: ...

    async def stats(self) -> Mapping[str, Any]:
        """The leg's transport statistics (WebRTC: getStats)."""
        ...

    def dropped_in(self) -> int:
        """Agent audio that arrived too late, or too much, to be played."""
        ...

    async def close(self, *, hangup: bool) -> None: ...


def new_upstream_leg(
    settings: Settings,
    connector: OpenAIConnector,
    ice: IceSetup,
    *,
    on_ended: Callable[[str], None],
    on_agent_track: Callable[[MediaStreamTrack], None],
) -> Upstream:
    """The leg ``RELAY_UPSTREAM_TRANSPORT`` asks for."""
    if settings.upstream_transport == "websocket":
        from .websocket import WebSocketUpstreamLeg

        return WebSocketUpstreamLeg(
            connector=connector, timeout_secs=settings.upstream_timeout_secs, on_ended=on_ended
        )
    return UpstreamLeg(
        connector=connector,
        ice=ice.upstream_plan(),
        ice_timeout_secs=settings.ice_timeout_secs,
        on_ended=on_ended,
        on_agent_track=on_agent_track,
    )


class UpstreamLeg:
    """A WebRTC session with OpenAI (or its emulator) for one call."""

    transport = "webrtc"

    def __init__(
        self,
        *,
        connector: OpenAIConnector,
        ice: IcePlan,
        ice_timeout_secs: float,
        on_ended: Callable[[str], None],
        on_agent_track: Callable[[MediaStreamTrack], None],
    ) -> None:
        self._connector = connector
        self._ice = ice
        self._ice_timeout = ice_timeout_secs
        self._on_ended = on_ended
        self._on_agent_track = on_agent_track
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.call_id: str | None = None
        self._connected = asyncio.Event()
        self.active = False

    async def open(
        self,
        session: dict[str, Any],
        model: str,
        *,
        uplink: UplinkTrack,
        agent_audio: AgentAudio,
        bridge: EventBridge,
        decode_agent: bool,
    ) -> float:
        """Mint a key, offer, connect; returns the seconds it took."""
        started = time.monotonic()
        pc = self.pc
        transceiver = pc.addTransceiver(uplink, direction="sendrecv")
        pc.on("track", self._on_agent_track)
        pc.on("connectionstatechange", self._on_state)
        channel = pc.createDataChannel("oai-events")
        bridge.attach_upstream(channel)
        channel.on("close", lambda: self._ended("upstream_session_ended"))
        aiortc_patches.adopt(pc, self._ice)
        agent_buffer = aiortc_patches.audio_buffer_of(transceiver.receiver)
        agent_buffer.packet_sink = agent_audio.on_packet
        agent_buffer.decode = decode_agent
        key = await self._offer_while_minting(session)
        upstream = await self._connector.create_call(pc.localDescription.sdp, key, model)
        self.call_id = upstream.call_id
        try:
            await pc.setRemoteDescription(RTCSessionDescription(upstream.answer_sdp, "answer"))
        except SDP_ERRORS as exc:
            raise UpstreamError(f"OpenAI's SDP answer could not be used: {exc}") from None
        await self._wait_connected()
        self.active = True
        return time.monotonic() - started

    async def _offer_while_minting(self, session: dict[str, Any]) -> str:
        """Minting the key and gathering ICE candidates overlap."""
        mint = asyncio.ensure_future(self._connector.mint_ephemeral_key(session))
        try:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            key, _expires_at = await mint
            return key
        finally:
            if not mint.done():
                mint.cancel()
                with contextlib.suppress(BaseException):
                    await mint

    async def _wait_connected(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self._ice_timeout)
        except TimeoutError:
            raise UpstreamTimeout(
                "The media connection to OpenAI did not come up in time."
            ) from None
        if self.pc.connectionState != "connected":
            raise UpstreamError("The media connection to OpenAI failed.")

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state in ("connected", "failed", "closed"):
            self._connected.set()
        if state in ("failed", "closed"):
            self._ended(f"upstream_{state}")

    def _ended(self, outcome: str) -> None:
        if self.active:
            self._on_ended(outcome)

    def decode_agent(self, wanted: bool) -> None:
        """Decode agent audio (for observers) only while someone wants it."""
        for transceiver in self.pc.getTransceivers():
            aiortc_patches.audio_buffer_of(transceiver.receiver).decode = wanted

    async def answers(self, timeout_secs: float) -> bool:
        """Whether OpenAI's side still answers a connectivity check."""
        return await aiortc_patches.ice_peer_answers(self.pc, timeout_secs)

    def snapshot(self) -> dict[str, Any]:
        pc = self.pc
        return {
            "transport": self.transport,
            "connection_state": pc.connectionState,
            "ice_connection_state": pc.iceConnectionState,
            "selected_pair": aiortc_patches.selected_pair(pc),
        }

    async def stats(self) -> Mapping[str, Any]:
        report: Mapping[str, Any] = await self.pc.getStats()
        return report

    def dropped_in(self) -> int:
        return aiortc_patches.late_audio_packets(self.pc)

    async def close(self, *, hangup: bool) -> None:
        """Close the peer connection and (briefly) tell OpenAI. Idempotent."""
        was_active, self.active = self.active, False
        await self.pc.close()
        if hangup and was_active and self.call_id:
            try:
                await asyncio.wait_for(self._connector.hangup(self.call_id), HANGUP_TIMEOUT_SECS)
            except TimeoutError:
                logger.info("OpenAI's hangup of %s did not answer in time", self.call_id)
