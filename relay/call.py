"""One relayed call: it owns both peer connections, their tracks and its tasks.

Set-up order (DESIGN §2): check the offer, create the caller PC, open the upstream
PC with its own offer (the data channel created before it), mint the OpenAI key while
ICE gathers, post the offer to OpenAI, wait until the upstream leg is connected, and
only then answer the browser. Any failure closes whatever was made and re-raises.

``close()`` is idempotent and awaited by whoever ends the call (hangup, a leg that
fails or closes, the media watchdog, the upstream session ending, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from av import AudioFrame

from . import aiortc_patches
from .config import Settings
from .errors import InvalidOffer, RelayError, UpstreamError, UpstreamTimeout
from .events import EventBridge, transcript_entry
from .media.denoise import Denoiser
from .media.tracks import PacketForwardTrack, UplinkTrack
from .media.uplink import CallerAudio, To24kMono, to_mono
from .media.voice_onset import VoiceOnsetDetector
from .ops.metrics import RelayMetrics
from .sdp import offer_sends_audio
from .taps import CallObserver, Direction, Leg
from .upstream.openai import OpenAIConnector

logger = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")
STATS_INTERVAL_SECS = 2.0
HANGUP_TIMEOUT_SECS = 2.0
OBSERVER_CHECK_SECS = 0.5


def new_call_id() -> str:
    return "rtc_" + secrets.token_hex(16)


@dataclass
class CallRequest:
    """What the HTTP layer hands over: a checked offer and the session config."""

    offer_sdp: str
    session: dict[str, Any]
    user_agent: str = ""
    record: bool = False


@dataclass
class CallTimings:
    created_at: float = field(default_factory=time.time)
    setup_started: float = field(default_factory=time.monotonic)
    upstream_seconds: float | None = None
    setup_seconds: float | None = None
    ended_at: float | None = None


class Call:
    """A browser <-> relay <-> OpenAI call."""

    def __init__(
        self,
        *,
        settings: Settings,
        connector: OpenAIConnector,
        denoiser: Denoiser,
        observers: list[CallObserver],
        on_closed: Callable[[Call], None],
        call_id: str | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.id = call_id or new_call_id()
        self._settings = settings
        self._connector = connector
        self._denoiser = denoiser
        self._observers = list(observers)
        self._on_closed = on_closed
        self._metrics = metrics
        self.record = False
        self.state = "setting_up"
        self.outcome: str | None = None
        self.model = ""
        self.user_agent = ""
        self.upstream_call_id: str | None = None
        self.timings = CallTimings()
        self.transcripts: list[dict[str, Any]] = []
        self.caller_pc = RTCPeerConnection(self._rtc_config(bundle=False))
        self.upstream_pc = RTCPeerConnection(self._rtc_config(bundle=True))
        self.uplink = UplinkTrack()
        self.downlink = PacketForwardTrack()
        self.bridge = EventBridge(self._tap_event, max_event_bytes=settings.max_event_bytes)
        self._caller_audio: CallerAudio | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._closing = False
        self._upstream_connected = asyncio.Event()
        self._speech_stopped_at: float | None = None
        self.last_agent_response_secs: float | None = None
        self._voice_onset = VoiceOnsetDetector()
        self._early_events: list[tuple[Direction, dict[str, Any], float]] = []
        self._agent_buffer: aiortc_patches.PassThroughAudioBuffer | None = None
        self._log = logging.LoggerAdapter(logger, {"call_id": self.id})

    # -- read-only view (relay.taps.CallView) ---------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "outcome": self.outcome,
            "model": self.model,
            "dialect": self._connector.dialect,
            "user_agent": self.user_agent,
            "record": self.record,
            "upstream_call_id": self.upstream_call_id,
            "created_at": self.timings.created_at,
            "ended_at": self.timings.ended_at,
            "setup_seconds": self.timings.setup_seconds,
            "legs": {
                "caller": self._leg_snapshot(self.caller_pc),
                "upstream": self._leg_snapshot(self.upstream_pc),
            },
            "audio": {
                "caller_frames_in": self._caller_audio.frames_in if self._caller_audio else 0,
                "caller_frames_out": self.uplink.frames_sent,
                "caller_frames_dropped": self.uplink.dropped,
                "agent_packets_in": self.downlink.packets_in,
                "agent_packets_out": self.downlink.packets_sent,
                "agent_packets_dropped": self.downlink.dropped,
            },
            "events": {
                "to_upstream": self.bridge.upstream.sent,
                "to_caller": self.bridge.caller.sent,
                "rejected": self.bridge.rejected,
            },
            "transcripts": list(self.transcripts),
        }

    @staticmethod
    def _leg_snapshot(pc: RTCPeerConnection) -> dict[str, Any]:
        return {
            "connection_state": pc.connectionState,
            "ice_connection_state": pc.iceConnectionState,
            "selected_pair": aiortc_patches.selected_pair(pc),
        }

    # -- set-up ----------------------------------------------------------------------

    async def start(self, request: CallRequest) -> str:
        """Set the call up and return the SDP answer for the browser."""
        self.model = str(request.session.get("model") or self._settings.openai_model)
        self.user_agent = request.user_agent
        self.record = request.record
        try:
            await self._accept_caller_offer(request.offer_sdp)
            # The caller's answer (and its ICE gathering) is prepared while OpenAI's leg
            # comes up; it is only returned once that leg is connected.
            answer, _ = await _all_or_nothing(
                self._answer_caller(), self._open_upstream(request.session)
            )
        except BaseException as exc:
            code = exc.code if isinstance(exc, RelayError) and exc.code else "setup_failed"
            self._count_setup_failure(exc, code)
            await self.close(code, notify=False)
            raise
        self.timings.setup_seconds = time.monotonic() - self.timings.setup_started
        if self._metrics is not None:
            upstream = self.timings.upstream_seconds or 0.0
            self._metrics.call_setup_succeeded(self.timings.setup_seconds, upstream)
        self.state = "active"
        for observer in self._observers:
            observer.call_started(self)
        early, self._early_events = self._early_events, []
        for direction, event, wallclock in early:  # events that came during set-up
            self._tap_event(direction, event, wallclock)
        if offer_sends_audio(request.offer_sdp):  # a listen-only caller sends nothing
            self._spawn(self._watch_caller_media())
        self._spawn(self._sample_stats())
        self._spawn(self._follow_observers())
        self._log.info("call %s set up in %.0f ms", self.id, self.timings.setup_seconds * 1000)
        return answer

    def _count_setup_failure(self, exc: BaseException, code: str) -> None:
        if self._metrics is None:
            return
        self._metrics.call_setup_failed(code)
        if isinstance(exc, UpstreamError):
            self._metrics.upstream_error(code)

    async def _accept_caller_offer(self, offer_sdp: str) -> None:
        pc = self.caller_pc
        pc.on("track", self._on_caller_track)
        pc.on("datachannel", self.bridge.attach_caller)
        pc.on("connectionstatechange", lambda: self._on_leg_state("caller", pc))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except (ValueError, AssertionError, KeyError, IndexError) as exc:
            raise InvalidOffer(f"Invalid SDP offer: {exc}", param="sdp") from None
        self._take_caller_audio(pc)

    def _take_caller_audio(self, pc: RTCPeerConnection) -> None:
        """The caller's packets go straight to the caller pipeline (see relay.media.uplink);
        aiortc's decoder thread gets nothing, so its remote track never queues a frame."""
        on_processed = None
        if self._metrics is not None:
            on_processed = self._metrics.leg("caller").processing_seconds.observe
        for transceiver in pc.getTransceivers():
            if transceiver.kind != "audio":
                continue
            buffer = aiortc_patches.audio_buffer_of(transceiver.receiver)
            buffer.decode = False
            if self._caller_audio is None:  # the first audio section is the microphone
                self._caller_audio = CallerAudio(
                    self._denoiser,
                    self.uplink,
                    lambda pcm, t: self._tap_audio("caller", pcm, t),
                    on_processed,
                )
                buffer.packet_sink = self._caller_audio.on_packet

    async def _open_upstream(self, session: dict[str, Any]) -> None:
        started = time.monotonic()
        pc = self.upstream_pc
        transceiver = pc.addTransceiver(self.uplink, direction="sendrecv")
        agent_buffer = aiortc_patches.audio_buffer_of(transceiver.receiver)
        agent_buffer.packet_sink = self._on_agent_packet
        agent_buffer.decode = self._agent_audio_wanted()
        self._agent_buffer = agent_buffer
        pc.on("track", self._on_agent_track)
        pc.on("connectionstatechange", self._on_upstream_state)
        channel = pc.createDataChannel("oai-events")
        self.bridge.attach_upstream(channel)
        channel.on("close", lambda: self._end_soon("upstream_session_ended"))
        # Minting the key and gathering ICE candidates overlap.
        mint = asyncio.ensure_future(self._connector.mint_ephemeral_key(session))
        try:
            await pc.setLocalDescription(await pc.createOffer())
            key, _expires_at = await mint
        finally:
            if not mint.done():
                mint.cancel()
                with contextlib.suppress(BaseException):
                    await mint
        upstream = await self._connector.create_call(pc.localDescription.sdp, key, self.model)
        self.upstream_call_id = upstream.call_id
        try:
            await pc.setRemoteDescription(RTCSessionDescription(upstream.answer_sdp, "answer"))
        except (ValueError, AssertionError, KeyError, IndexError) as exc:
            raise UpstreamError(f"OpenAI's SDP answer could not be used: {exc}") from None
        await self._wait_upstream_connected()
        self.timings.upstream_seconds = time.monotonic() - started

    async def _wait_upstream_connected(self) -> None:
        try:
            await asyncio.wait_for(self._upstream_connected.wait(), self._settings.ice_timeout_secs)
        except TimeoutError:
            raise UpstreamTimeout(
                "The media connection to OpenAI did not come up in time."
            ) from None
        if self.upstream_pc.connectionState != "connected":
            raise UpstreamError("The media connection to OpenAI failed.")

    async def _answer_caller(self) -> str:
        pc = self.caller_pc
        pc.addTrack(self.downlink)
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    # -- media and events --------------------------------------------------------------

    def _on_caller_track(self, track: MediaStreamTrack) -> None:
        # Audio arrives through the packet sink; anything else (video) is read and
        # dropped, so no remote track is ever left unread.
        if track.kind != "audio":
            self._spawn(_drain(track))

    def _on_agent_track(self, track: MediaStreamTrack) -> None:
        # Frames only reach this track when an observer wants decoded agent audio.
        self._spawn(self._read_agent_track(track))

    async def _read_agent_track(self, track: MediaStreamTrack) -> None:
        resampler = To24kMono()
        with contextlib.suppress(Exception):
            while True:
                frame = cast(AudioFrame, await track.recv())
                for pcm in resampler.push(to_mono(frame)):
                    self._tap_audio("agent", pcm, time.time())

    def _on_agent_packet(self, payload: bytes, rtp_timestamp: int) -> None:
        self.downlink.push(payload, rtp_timestamp)
        if self._speech_stopped_at is not None and self._voice_onset.voiced(payload):
            self._agent_answered(time.monotonic() - self._speech_stopped_at)

    def _agent_answered(self, latency_secs: float) -> None:
        """The first agent audio with sound in it after the caller stopped speaking."""
        self._speech_stopped_at = None
        self._voice_onset.reset()
        self.last_agent_response_secs = latency_secs
        if self._metrics is not None:
            self._metrics.agent_response_latency_seconds.observe(latency_secs)

    def _agent_audio_wanted(self) -> bool:
        return any(o.wants_agent_audio(self.id) for o in self._observers)

    async def _follow_observers(self) -> None:
        """Decode agent audio only while an observer (a recording, a listener) wants it."""
        while True:
            await asyncio.sleep(OBSERVER_CHECK_SECS)
            if self._agent_buffer is not None:
                self._agent_buffer.decode = self._agent_audio_wanted()

    async def _sample_stats(self) -> None:
        """Feed getStats (jitter, loss, RTT) and the audio counters to the metrics."""
        if self._metrics is None:
            return
        samplers = {
            "caller": self._metrics.stats_sampler("caller"),
            "agent": self._metrics.stats_sampler("agent"),
        }
        counters = _AudioCounters(self._metrics)
        while True:
            await asyncio.sleep(STATS_INTERVAL_SECS)
            counters.update(self)
            samplers["caller"].observe(await self.caller_pc.getStats())
            samplers["agent"].observe(await self.upstream_pc.getStats())

    def _tap_audio(self, leg: Leg, pcm: np.ndarray, wallclock: float) -> None:
        for observer in self._observers:
            observer.audio(self, leg, pcm, wallclock)

    def _tap_event(self, direction: Direction, event: dict[str, Any], wallclock: float) -> None:
        if self.state == "setting_up":
            self._early_events.append((direction, event, wallclock))
            return
        kind = event.get("type")
        if kind == "input_audio_buffer.speech_stopped":
            self._speech_stopped_at = time.monotonic()
        elif kind == "input_audio_buffer.speech_started":
            self._speech_stopped_at = None  # a new turn, or barge-in
            self._voice_onset.reset()
        entry = transcript_entry(event) if direction == "server" else None
        if entry is not None:
            role, text, item_id = entry
            self.transcripts.append(
                {"role": role, "text": text, "item_id": item_id, "t": wallclock}
            )
        for observer in self._observers:
            observer.event(self, direction, event, wallclock)

    # -- ending ------------------------------------------------------------------------

    def _on_leg_state(self, leg: str, pc: RTCPeerConnection) -> None:
        if pc.connectionState in ("failed", "closed"):
            self._end_soon(f"{leg}_{pc.connectionState}")

    def _on_upstream_state(self) -> None:
        state = self.upstream_pc.connectionState
        if state in ("connected", "failed", "closed"):
            self._upstream_connected.set()
        if state in ("failed", "closed") and self.state == "active":
            self._end_soon(f"upstream_{state}")

    async def _watch_caller_media(self) -> None:
        """Hang up a caller whose audio stopped (a closed tab sends no goodbye)."""
        timeout = self._settings.media_timeout_secs
        started = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            audio = self._caller_audio
            last = audio.last_frame_at if audio and audio.last_frame_at else started
            if time.monotonic() - last > timeout:
                self._log.info("call %s: no caller audio for %.1f s", self.id, timeout)
                self._end_soon("caller_media_timeout")
                return

    def _end_soon(self, outcome: str) -> None:
        if not self._closing:
            self._spawn(self.close(outcome))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, outcome: str = "hangup", *, notify: bool = True) -> None:
        """End the call (idempotent): both legs closed, tasks awaited, taps told."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        was_active = self.state == "active"
        self.state = "ending"
        self.outcome = outcome
        try:
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            closing = [self.caller_pc.close(), self.upstream_pc.close()]
            if self.upstream_call_id and was_active:
                closing.append(self._hangup_upstream(self.upstream_call_id))
            await asyncio.gather(*closing, return_exceptions=True)
        finally:
            # Even if the close itself is cancelled (a shutdown past its bound), the call
            # leaves the registry and its observers hear of it exactly once.
            self.uplink.stop()
            self.downlink.stop()
            self.timings.ended_at = time.time()
            self.state = "ended"
            if notify and was_active:
                for observer in self._observers:
                    observer.call_ended(self, outcome)
            self._on_closed(self)
            self._closed.set()
            self._log.info("call %s ended: %s", self.id, outcome)

    async def _hangup_upstream(self, upstream_call_id: str) -> None:
        """Tell OpenAI, briefly: the media legs close anyway."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connector.hangup(upstream_call_id), HANGUP_TIMEOUT_SECS)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _rtc_config(self, *, bundle: bool) -> RTCConfiguration:
        # Never aiortc's default public STUN server: the relay's candidates are its
        # own host addresses (RELAY_ICE_ADDRESSES), browsers reach it directly or by TURN.
        if bundle:
            return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        return RTCConfiguration(iceServers=[])


async def _all_or_nothing(
    first: Coroutine[Any, Any, T], second: Coroutine[Any, Any, U]
) -> tuple[T, U]:
    """Run both; if either fails, cancel the other, wait for it, and raise."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results[0], results[1]


async def _drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(Exception):
        while True:
            await track.recv()


class _AudioCounters:
    """Adds a call's audio counters to the Prometheus counters every few seconds, so the
    per-frame path does no metrics work."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self._caller = metrics.leg("caller")
        self._agent = metrics.leg("agent")
        self._seen: dict[str, int] = {}

    def _add(self, name: str, value: int, counter: Any) -> None:
        delta = value - self._seen.get(name, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[name] = value

    def update(self, call: Call) -> None:
        caller_in = call._caller_audio.frames_in if call._caller_audio else 0
        self._add("caller_in", caller_in, self._caller.frames_in)
        self._add("caller_out", call.uplink.frames_sent, self._caller.frames_out)
        self._add("caller_dropped", call.uplink.dropped, self._caller.dropped_out)
        self._add("agent_in", call.downlink.packets_in, self._agent.frames_in)
        self._add("agent_out", call.downlink.packets_sent, self._agent.frames_out)
        self._add("agent_dropped", call.downlink.dropped, self._agent.dropped_out)
