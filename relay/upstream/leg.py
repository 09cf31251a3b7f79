"""The relay's leg to OpenAI: caller audio out, agent audio in, events.

One leg per upstream session. It owns its peer connection (or socket); the call owns
the leg and closes it (idempotent, awaited). A call may go through several WebRTC legs
(:mod:`relay.upstream.rollover`): a leg opened with no bridge keeps its events to a
listener of its own until it is :meth:`attached <UpstreamLeg.attach>` to the call's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
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
MessageHandler = Callable[[str | bytes], None]
PacketSink = Callable[[bytes, int], None]


class _ServerEvents:
    """The leg's channel as the bridge sees it: OpenAI's ``session_expired`` error is
    the leg's to handle (its session ends; the call goes on with a new one), not the
    browser's to see."""

    def __init__(self, channel: RTCDataChannel, on_expired: Callable[[], None]) -> None:
        self._channel = channel
        self._on_expired = on_expired

    @property
    def readyState(self) -> str:  # noqa: N802 (RTCDataChannel's name)
        return str(self._channel.readyState)

    def send(self, message: str) -> None:
        self._channel.send(message)

    def on(self, name: str, handler: Callable[..., Any]) -> Any:
        if name != "message":
            return self._channel.on(name, handler)

        def filtered(message: str | bytes) -> None:
            if _is_expiry(message):
                self._on_expired()
                return
            handler(message)

        return self._channel.on("message", filtered)


def _is_expiry(message: str | bytes) -> bool:
    if not isinstance(message, str) or '"session_expired"' not in message:
        return False  # the cheap test first: almost every event stops here
    try:
        event = json.loads(message)
    except ValueError:
        return False
    error = event.get("error") if isinstance(event, dict) else None
    return (
        event.get("type") == "error"
        and isinstance(error, dict)
        and error.get("code") == "session_expired"
    )


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
    return webrtc_upstream_leg(
        settings, connector, ice, on_ended=on_ended, on_agent_track=on_agent_track
    )


def webrtc_upstream_leg(
    settings: Settings,
    connector: OpenAIConnector,
    ice: IceSetup,
    *,
    on_ended: Callable[[str], None],
    on_agent_track: Callable[[MediaStreamTrack], None],
) -> UpstreamLeg:
    """A WebRTC leg (the default; also every session a rollover opens)."""
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
        self.channel: RTCDataChannel | None = None
        self._connected = asyncio.Event()
        self.active = False
        self._retired = False  # detached from the call while active: hang up at close
        #: When the session was asked for (monotonic): its cap runs from about then.
        self.opened_at = time.monotonic()

    async def open(
        self,
        session: dict[str, Any],
        model: str,
        *,
        uplink: UplinkTrack,
        agent_audio: AgentAudio | PacketSink,
        bridge: EventBridge | MessageHandler,
        decode_agent: bool,
    ) -> float:
        """Mint a key, offer, connect; returns the seconds it took. Agent packets go to
        ``agent_audio``; events go to ``bridge``, or a listener of the caller's."""
        started = self.opened_at = time.monotonic()
        pc = self.pc
        transceiver = pc.addTransceiver(uplink, direction="sendrecv")
        pc.on("track", self._on_agent_track)
        pc.on("connectionstatechange", self._on_state)
        channel = self.channel = pc.createDataChannel("oai-events")
        if isinstance(bridge, EventBridge):
            self.attach(bridge)
        else:
            channel.on("message", bridge)
        channel.on("close", lambda: self._ended("upstream_session_ended"))
        aiortc_patches.adopt(pc, self._ice)
        self.agent_sink(
            agent_audio.on_packet if isinstance(agent_audio, AgentAudio) else agent_audio
        )
        aiortc_patches.audio_buffer_of(transceiver.receiver).decode = decode_agent
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

    def attach(self, bridge: EventBridge) -> None:
        """The call's events now flow through this leg (any earlier listener is gone)."""
        assert self.channel is not None
        self.channel.remove_all_listeners("message")
        bridge.attach_upstream(
            _ServerEvents(self.channel, lambda: self._ended("upstream_session_expired"))
        )

    def detach(self) -> None:
        """Stop delivering this leg's events and its end: the call has moved on."""
        self._retired, self.active = self.active, False
        if self.channel is not None:
            self.channel.remove_all_listeners("message")

    def agent_sink(self, sink: PacketSink) -> None:
        """Where this leg's agent packets go from now on."""
        for transceiver in self.pc.getTransceivers():
            aiortc_patches.audio_buffer_of(transceiver.receiver).packet_sink = sink

    def send(self, event: str) -> None:
        """An event for this leg's session only (seeding a new session)."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(event)

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
        was_active, self.active = self.active or self._retired, False
        self._retired = False
        await self.pc.close()
        if hangup and was_active and self.call_id:
            try:
                await asyncio.wait_for(self._connector.hangup(self.call_id), HANGUP_TIMEOUT_SECS)
            except TimeoutError:
                logger.info("OpenAI's hangup of %s did not answer in time", self.call_id)
