"""One emulated call: its peer connection, the ``oai-events`` channel, the audio in
both directions, the duration cap, and an idempotent, awaited close.

Every task and the peer connection belong to the :class:`EmulatedCall`; ``close()``
cancels and awaits them all, and is safe to call from anywhere, any number of times
(including from one of the call's own tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
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
from .capture import ReceivedAudio
from .client_events import ClientEventHandler
from .errors import ApiError
from .events import Event, EventFactory
from .faults import Faults
from .ice import configure_ice
from .items import ItemCommands
from .outlet import Outlet
from .playout import AgentAudioTrack
from .sdp import OfferInfo, tweak_answer
from .session_config import SessionConfig
from .settings import EmulatorSettings
from .turns import Dialogue
from .voice import Senses

logger = logging.getLogger(__name__)

EVENTS_LABEL = "oai-events"
#: A call whose ICE/DTLS never completes is dropped after this long.
CONNECT_TIMEOUT_SECS = 30.0
#: After ``session_expired``: time for the error to flush before the channel closes,
#: and before the peer connection follows (OpenAI: the PC goes seconds later).
EXPIRY_FLUSH_SECS = 0.3
EXPIRY_PC_GRACE_SECS = 1.0
#: Events kept for tests (``client_events`` / ``server_events``).
MAX_RECORDED_EVENTS = 2000
#: Events generated before the channel opens are held (bounded) until it does.
MAX_OUTBOX = 1000
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


class EmulatedCall:
    """One call to the emulated Realtime API."""

    def __init__(
        self,
        config: SessionConfig,
        settings: EmulatorSettings,
        on_closed: Callable[[EmulatedCall], None] | None = None,
    ) -> None:
        self.id = ids.call_id()
        self.session_id = ids.session_id()
        self.config = config
        self.dialect = config.dialect
        self.settings = settings
        self.created_at = time.time()
        # OpenAI capped beta sessions at half the GA cap.
        cap = settings.max_session_secs
        self.max_session_secs = cap if config.dialect == "ga" else cap / 2
        self.expires_at = int(self.created_at + self.max_session_secs)
        self.on_closed = on_closed
        self.factory = EventFactory(config.dialect)
        #: Test hook: the failures switched on for this call (:mod:`.faults`).
        self.faults = Faults(settings.faults)
        #: Test hook: the caller's audio as received (see relay.emulator.capture).
        self.received = ReceivedAudio()
        #: Test hook: every client event received (parsed when it was JSON) and every
        #: server event sent, oldest first (bounded).
        self.client_events: deque[Any] = deque(maxlen=MAX_RECORDED_EVENTS)
        self.server_events: deque[Event] = deque(maxlen=MAX_RECORDED_EVENTS)
        self.close_reason: str | None = None
        self.closed = asyncio.Event()
        self.connected = asyncio.Event()
        self.channel_open = asyncio.Event()
        self.channel: RTCDataChannel | None = None
        self._outbox: list[Event] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._input_end_ms = 0.0
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = AgentAudioTrack()
        self.dialogue, self.handler = self._conversation_logic()
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    def _conversation_logic(self) -> tuple[Dialogue, ClientEventHandler]:
        out = Outlet(self.factory, self.send, self.track, self.faults)
        dialogue = Dialogue(
            self.config, out, self.settings.response_delay_secs, Senses.of(self.settings)
        )
        items = ItemCommands(
            dialogue.conversation, out, self.config.dialect, self._max_message_bytes
        )
        handler = ClientEventHandler(
            dialogue,
            items,
            out,
            on_session_updated=self._session_updated,
            on_close=lambda: self._close_soon("session.close"),
        )
        return dialogue, handler

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
        self._spawn(self._expire_after(self.max_session_secs))
        self._spawn(self._connect_watchdog())
        return tweak_answer(
            self.pc.localDescription.sdp, offer.opus_payload_type, self.settings.ice_addresses
        )

    def session_object(self) -> dict[str, Any]:
        return self.config.public(id=self.session_id, expires_at=self.expires_at)

    # -- data channel --

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_LABEL or self.channel is not None:
            return  # OpenAI only talks on the client's first "oai-events" channel
        self.channel = channel
        channel.on("message", self._on_message)
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
        self._send_now(self.factory.session_created(self.session_object()))
        outbox, self._outbox = self._outbox, []
        for event in outbox:
            self._send_now(event)

    def _on_message(self, message: str | bytes) -> None:
        # Handled synchronously, in arrival order: events sent right after open are
        # processed after session.created and in the order sent.
        if self._closing:
            return
        try:
            recorded: Any = json.loads(message) if isinstance(message, str) else message
        except ValueError:
            recorded = message
        self.client_events.append(recorded)
        self.handler.handle(message)

    def _session_updated(self) -> None:
        self.send(self.factory.session_updated(self.session_object()))

    def _max_message_bytes(self) -> int:
        sctp = self.pc.sctp
        size = getattr(sctp, "_remote_max_message_size", 65536) if sctp else 65536
        return int(size) if size else 1 << 30

    def send(self, event: Event) -> None:
        """Send a server event (held until ``session.created`` has gone out)."""
        if self._closing:
            return
        if not self.channel_open.is_set():
            if len(self._outbox) < MAX_OUTBOX:
                self._outbox.append(event)
            return
        self._send_now(event)

    def _send_now(self, event: Event) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        self.server_events.append(event)
        try:
            channel.send(json.dumps(event))
        except Exception:  # closed under us, or larger than the peer accepts
            logger.warning("emulator: could not send %s", event.get("type"), exc_info=True)

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
                rate = frame.sample_rate or 48000
                duration_ms = mono.size * 1000.0 / rate
                # The RTP timeline (pts) keeps lost packets as gaps, like OpenAI's
                # buffer would; a non-monotonic pts falls back to counting samples.
                if frame.pts is not None and frame.time_base is not None:
                    start_ms = float(frame.pts * frame.time_base * 1000)
                    if start_ms < self._input_end_ms - duration_ms:
                        start_ms = self._input_end_ms
                else:
                    start_ms = self._input_end_ms
                self._input_end_ms = start_ms + duration_ms
                dbfs = self.received.add(mono)
                self.dialogue.on_audio(start_ms, duration_ms, mono, dbfs)

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

    async def _expire_after(self, secs: float) -> None:
        await asyncio.sleep(secs)
        value, unit = (secs / 60.0, "minute") if secs >= 60 else (secs, "second")
        span = f"{value:g} {unit}{'' if value == 1 else 's'}"
        self.send(
            self.factory.error(
                ApiError(f"Your session hit the maximum duration of {span}.", "session_expired")
            )
        )
        await asyncio.sleep(EXPIRY_FLUSH_SECS)
        if self.channel is not None:
            self.channel.close()
        await asyncio.sleep(EXPIRY_PC_GRACE_SECS)
        await self.close("session expired")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_soon(self, reason: str) -> None:
        if not self._closing:
            self._spawn(self.close(reason))

    async def close(self, reason: str = "closed") -> None:
        """Close everything this call owns; idempotent, and awaits the first close."""
        if self._closing:
            if asyncio.current_task() not in self._tasks:
                await self.closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        current = asyncio.current_task()
        try:
            await self.dialogue.close()
            self.track.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT_SECS)
            others = [t for t in self._tasks if t is not current]
            for task in others:
                task.cancel()
            for task in others:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            self.closed.set()
            if self.on_closed is not None:
                self.on_closed(self)
