"""One relayed call: it owns both peer connections, their tracks and its tasks.

Set-up order: check the offer, create the caller PC, open the upstream PC with its own
offer (the data channel created before it), mint the OpenAI key while ICE gathers, post
the offer to OpenAI, wait until the upstream leg is connected, and only then answer the
browser. Any failure closes whatever was made and re-raises.

The call publishes what happens through its :class:`~relay.taps.CallTaps` (guarded
observers) and knows nothing of metrics, recordings or monitors. Periodic work
(watchdog, stats) is driven by the registry's one ticker (:meth:`tick`,
:meth:`publish_stats`), not by tasks of its own.

The browser's side is a **caller leg** (:class:`CallerLeg`): WebRTC by default
(:class:`~relay.caller.webrtc.WebRtcCallerLeg`, answered with SDP), or a WebSocket
(:class:`~relay.caller.websocket.WebSocketCallerLeg`, PCM frames and JSON events on one
socket) given in the :class:`CallRequest`. Either feeds the same caller pipeline, plays
the same agent packets, and talks through the same event bridge; the rest of the call
does not know which it has. OpenAI's side is an **upstream leg**
(:class:`~relay.upstream.leg.Upstream`): WebRTC by default, or OpenAI's WebSocket
transport (``RELAY_UPSTREAM_TRANSPORT=websocket``, :mod:`relay.upstream.websocket`).

A caller leg that is *lost* (not closed) is waited for ``caller_grace_secs``: the
call's :meth:`resume` (:class:`~relay.caller.resume.CallerReconnect`) attaches the
browser's next leg to the same call, upstream session, recording and observers.

The upstream leg may change during the call: :class:`~relay.upstream.rollover.Rollover`
renews the session before its cap and replaces one that dies (:meth:`replace_upstream`).

``close()`` is idempotent and awaited by whoever ends the call (hangup, a leg that
fails or closes, the media watchdog, the upstream session ending, shutdown)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, TypeVar

from aiortc import MediaStreamTrack, RTCPeerConnection

from .caller.leg import (
    PLAYBACK_CHANGES,
    CallerLeg,
    CallRequest,
    CallTimings,
)
from .caller.resume import GRACE_EXPIRED, CallerGrace, CallerReconnect
from .caller.webrtc import WebRtcCallerLeg
from .config import Settings
from .errors import RelayError, UpstreamError
from .events import EventBridge, error_event, transcript_entry
from .ice.gather import IceSetup
from .liveness import UPSTREAM_QUIET_SECS, Liveness, Peer
from .media.denoise import Denoiser
from .media.downlink import AgentAudio
from .media.tracks import PacketForwardTrack, UplinkTrack
from .media.uplink import CallerAudio
from .sdp import offer_sends_audio
from .stats import media_stats
from .taps import CallEnd, CallInfo, CallTaps, Leg, SetupResult, TappedEvent, TranscriptEntry
from .tasks import all_or_nothing
from .upstream.leg import Upstream, UpstreamLeg, new_upstream_leg, webrtc_upstream_leg
from .upstream.openai import OpenAIConnector
from .upstream.rollover import Rollover

logger = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")
ERROR_FLUSH_SECS = 0.15
#: What the browser is told (an ``error`` event) when the call ends on OpenAI's side.
UPSTREAM_LOST = {
    "upstream_session_ended": ("upstream_session_ended", "OpenAI ended the session."),
    "upstream_session_expired": (
        "upstream_session_expired",
        "OpenAI's session reached its time limit and could not be renewed.",
    ),
    "": ("upstream_connection_lost", "The connection to OpenAI was lost; the call has ended."),
}


class Call(CallerReconnect):
    """A browser <-> relay <-> OpenAI call."""

    def __init__(
        self,
        *,
        settings: Settings,
        connector: OpenAIConnector,
        ice: IceSetup,
        denoiser: Denoiser,
        taps: CallTaps,
        on_closed: Callable[[Call], None],
    ) -> None:
        self.id = taps.call_id
        self._settings = settings
        self._connector = connector
        self._denoiser = denoiser
        self.taps = taps
        self._on_closed = on_closed
        self.request = CallRequest("", {})
        self.state = "setting_up"
        self.outcome: str | None = None
        self.model = ""
        self.timings = CallTimings()
        self.transcripts: list[TranscriptEntry] = []
        self._ice = ice
        #: The resume token and the grace of a lost caller; legs are numbered so that
        #: a replaced leg's late ``on_ended`` is ignored.
        self.grace = CallerGrace(settings.caller_grace_secs, partial(self._end_soon, GRACE_EXPIRED))
        self._leg_number = 0
        self._retired: list[CallerLeg] = []
        self._resuming = asyncio.Lock()
        self.caller: CallerLeg = WebRtcCallerLeg(ice.caller_plan(), on_ended=self._leg_ended(0))
        self.upstream: Upstream = new_upstream_leg(
            settings,
            connector,
            ice,
            on_ended=self._end_soon,
            on_agent_track=self._on_agent_track,
        )
        self.uplink = UplinkTrack()
        self.bridge = EventBridge(self._on_event, max_event_bytes=settings.max_event_bytes)
        self.caller_audio = CallerAudio(
            denoiser, self.uplink, lambda pcm, t: self.taps.audio("caller", pcm, t)
        )
        self.agent_audio = AgentAudio(
            lambda payload, ts: self.caller.play(payload, ts),
            lambda pcm, t: self.taps.audio("agent", pcm, t),
        )
        self._watch_media = False
        self.liveness = Liveness(self._peer_of, self._leg_gone, self._spawn)
        self._told_caller = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._closing = False
        self._early_events: list[TappedEvent] = []
        self._log = logging.LoggerAdapter(logger, {"call_id": self.id})
        #: Renews the upstream session before its cap, and replaces one that dies.
        self.rollover = Rollover(
            self,
            settings,
            dialect=connector.dialect,
            make_leg=lambda on_ended: webrtc_upstream_leg(
                settings, connector, ice, on_ended=on_ended, on_agent_track=self._on_agent_track
            ),
            end=self._end_soon,
        )

    def replace_upstream(self, leg: UpstreamLeg, uplink: UplinkTrack) -> UplinkTrack:
        """Rollover and recovery: ``leg`` (opened, seeded, attached to the bridge) is
        the call's upstream from now on, fed by ``uplink``; returns the old uplink."""
        old, self.upstream, self.uplink = self.uplink, leg, uplink
        self.caller_audio.uplink = uplink
        return old

    # -- read-only views -------------------------------------------------------------

    def info(self) -> CallInfo:
        return CallInfo(
            call_id=self.id,
            model=self.model,
            dialect=self._connector.dialect,
            user_agent=self.request.user_agent,
            record=self.request.record,
            created_at=self.timings.created_at,
            setup_seconds=self.timings.setup_seconds,
            upstream_call_id=self.upstream.call_id,
            transport=self.caller.transport,
            user_id=policy.user_id if (policy := self.bridge.policy) is not None else None,
        )

    def snapshot(self) -> dict[str, Any]:
        info = self.info()
        return {
            "id": self.id,
            "state": self.state,
            "outcome": self.outcome,
            "model": info.model,
            "dialect": info.dialect,
            "user_agent": info.user_agent,
            "record": info.record,
            "upstream_call_id": info.upstream_call_id,
            "created_at": info.created_at,
            "ended_at": self.timings.ended_at,
            "setup_seconds": info.setup_seconds,
            "transport": self.caller.transport,
            "legs": {
                "caller": self.caller.snapshot(),
                "upstream": self.upstream.snapshot(),
            },
            "audio": self.audio_counters(),
            "events": {
                "to_upstream": self.bridge.upstream.sent,
                "to_caller": self.bridge.caller.sent,
                "rejected": self.bridge.rejected,
            },
            "transcripts": [entry.as_dict() for entry in self.transcripts],
            "reconnect": self.grace.snapshot(),
        }

    def audio_counters(self) -> dict[str, int]:
        """Frames per leg and direction (``in``: received by the relay on that leg)."""
        caller_in = self.caller_audio.frames_in
        return {
            "caller_frames_in": caller_in,
            "caller_frames_out": self.caller.frames_out,
            "upstream_frames_out": self.uplink.frames_sent,
            "upstream_frames_in": self.agent_audio.packets_in,
            "caller_dropped_in": self.caller.dropped_in,
            "caller_dropped_out": self.caller.dropped_out,
            "upstream_dropped_out": self.uplink.dropped,
            "upstream_dropped_in": self.upstream.dropped_in(),
        }

    # -- set-up ----------------------------------------------------------------------

    async def start(self, request: CallRequest) -> str:
        """Set the call up and return the SDP answer for the browser."""
        self.request = request
        self.model = str(request.session.get("model") or self._settings.openai_model)
        try:
            if request.caller is not None:  # another leg than the default WebRTC one
                default, self.caller = self.caller, request.caller(self._leg_ended(0))
                await default.close()
            await self.caller.accept(request.offer_sdp, self.bridge, self.caller_audio)
            # The caller's answer (and its ICE gathering) is prepared while OpenAI's leg
            # comes up; it is only returned once that leg is connected.
            answer, _ = await all_or_nothing(
                self.caller.answer(), self._open_upstream(request.session)
            )
        except BaseException as exc:
            self._setup_failed(exc)
            await self.close("setup_failed", notify=False)
            raise
        self.timings.setup_seconds = time.monotonic() - self.timings.setup_started
        self.taps.setup_finished(
            SetupResult(self.id, self.timings.setup_seconds, self.timings.upstream_seconds)
        )
        self.state = "active"
        self.taps.call_started(self.info())
        early, self._early_events = self._early_events, []
        for event in early:  # events that came during set-up
            self._on_event(event)
        sends_audio = request.sends_audio
        if sends_audio is None:  # listen-only: no audio
            sends_audio = offer_sends_audio(request.offer_sdp)
        self._watch_media = sends_audio
        self._log.info("call %s set up in %.0f ms", self.id, self.timings.setup_seconds * 1000)
        return answer

    def _setup_failed(self, exc: BaseException) -> None:
        code = exc.code if isinstance(exc, RelayError) and exc.code else "setup_failed"
        total = time.monotonic() - self.timings.setup_started
        result = SetupResult(
            self.id, total, None, failure=code, upstream_failed=isinstance(exc, UpstreamError)
        )
        self.taps.setup_finished(result)
        if isinstance(exc, RelayError):  # a caller leg that is already open hears why
            self.bridge.caller.send(error_event(exc.code or "setup_failed", exc.message))

    async def _open_upstream(self, session: dict[str, Any]) -> None:
        self.timings.upstream_seconds = await self.upstream.open(
            session,
            self.model,
            uplink=self.uplink,
            agent_audio=self.agent_audio,
            bridge=self.bridge,
            decode_agent=self.taps.wants_agent_audio(),
        )

    # -- media and events --------------------------------------------------------------

    def _on_agent_track(self, track: MediaStreamTrack) -> None:
        # Frames only reach this track while an observer wants decoded agent audio.
        self._spawn(self.agent_audio.read_decoded(track, time.time))

    def _on_event(self, event: TappedEvent) -> None:
        if self.state == "setting_up":
            self._early_events.append(event)
            return
        self.rollover.on_event(event)
        if event.type == "input_audio_buffer.speech_stopped":
            self.agent_audio.caller_stopped_speaking()
        elif event.type == "input_audio_buffer.speech_started":
            self.agent_audio.caller_started_speaking()
            self.caller.playback("barge_in")
        elif event.type in PLAYBACK_CHANGES:
            self.caller.playback(PLAYBACK_CHANGES[event.type])
        self.taps.event(event)
        entry = transcript_entry(event)
        if entry is not None:
            self.transcripts.append(entry)
            self.taps.transcript(entry)

    # -- periodic work (driven by the registry's ticker) --------------------------------

    def tick(self, now: float) -> None:
        """Decode agent audio only while an observer wants it, and check that a leg
        whose audio stopped is still there (a closed tab, a dead upstream send no
        goodbye; a muted caller or a quiet agent is not hung up while its peer answers)."""
        if self.state != "active":
            return
        self.rollover.tick(now)
        self.upstream.decode_agent(self.taps.wants_agent_audio())
        self.liveness.check("upstream", self.agent_audio.last_packet_at, UPSTREAM_QUIET_SECS, now)
        if self._watch_media and not self.grace.waiting:
            heard = self.caller_audio.last_frame_at or self.timings.setup_started
            self.liveness.check("caller", heard, self._settings.media_timeout_secs, now)

    def _peer_of(self, leg: Leg) -> Peer:
        return self.caller if leg == "caller" else self.upstream

    def _leg_gone(self, leg: Leg) -> None:
        """A quiet leg whose peer stopped answering: gone (see :mod:`relay.liveness`)."""
        if self.state != "active":
            return
        self._log.warning("call %s: the %s leg went quiet and stopped answering", self.id, leg)
        if leg == "upstream":
            self._end_soon("upstream_failed")
        else:
            self._caller_ended(self._leg_number, "caller_media_timeout")

    async def publish_stats(self) -> None:
        """getStats of both legs and the audio counters, to the observers."""
        if self.state != "active":
            return
        reports = await asyncio.gather(self.caller.stats(), self.upstream.stats())
        if self.state == "active":
            self.taps.media_stats(media_stats(self, reports[0], reports[1]))

    # -- ending ------------------------------------------------------------------------

    def _end_soon(self, outcome: str) -> None:
        if self._closing:
            return
        if outcome.startswith("upstream_") and self.state == "active":
            if self.rollover.recover(outcome):
                return
            self.bridge.caller.send(error_event(*UPSTREAM_LOST.get(outcome, UPSTREAM_LOST[""])))
            self._told_caller = True
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
            await self._release(hangup_upstream=was_active)
        finally:
            # Even if the close itself is cancelled (a shutdown past its bound), the call
            # leaves the registry and its observers hear of it exactly once.
            self.uplink.stop()
            self.caller.stop()
            _close_denoiser(self._denoiser)
            self.caller_audio.close()
            self.timings.ended_at = time.time()
            self.state = "ended"
            if notify and was_active:
                end = CallEnd(outcome, self.timings.ended_at, tuple(self.transcripts))
                self.taps.call_ended(self.info(), end)
            self._on_closed(self)
            self._closed.set()
            self._log.info("call %s ended: %s", self.id, outcome)

    async def _release(self, *, hangup_upstream: bool) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._told_caller:  # let the error event leave before the channel closes
            await asyncio.sleep(ERROR_FLUSH_SECS)
        self.grace.cancel()
        await self.rollover.close()  # first: no swap may change the upstream leg after
        closing = [self.caller.close(), self.upstream.close(hangup=hangup_upstream)]
        closing += [leg.close() for leg in self._retired]
        results = await asyncio.gather(*closing, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                self._log.warning("call %s: closing failed: %r", self.id, result)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def caller_pc(self) -> RTCPeerConnection:
        """The browser's peer connection (a WebRTC caller leg only)."""
        if not isinstance(self.caller, WebRtcCallerLeg):
            raise AttributeError("this call's caller leg is not WebRTC")
        return self.caller.pc

    @property
    def downlink(self) -> PacketForwardTrack:
        """The agent's track to the browser (a WebRTC caller leg only)."""
        if not isinstance(self.caller, WebRtcCallerLeg):
            raise AttributeError("this call's caller leg is not WebRTC")
        return self.caller.downlink

    @property
    def upstream_pc(self) -> RTCPeerConnection:
        """OpenAI's peer connection (a WebRTC upstream leg only)."""
        if not isinstance(self.upstream, UpstreamLeg):
            raise AttributeError("this call's upstream leg is not WebRTC")
        return self.upstream.pc


def _close_denoiser(denoiser: Denoiser) -> None:
    try:
        denoiser.close()
    except Exception:
        logger.exception("closing the noise suppressor failed")
