"""The agent's audio path, packet by packet as it arrives from OpenAI:

Opus -> forwarded as is to the caller leg (WebRTC: its track, no decode, no re-encode;
the WebSocket leg decodes it to paced PCM), and, only
while an observer wants it (a recording, a listener), decoded by aiortc's receiver ->
24 kHz mono canonical PCM -> the taps.

It also times the agent's answers: from the caller's end of speech (the upstream VAD's
``input_audio_buffer.speech_stopped``) to the first agent packet with sound in it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import cast

import numpy as np
from aiortc import MediaStreamTrack
from av import AudioFrame

from .pcm import To24kMono, to_mono
from .timing import FrameTimes
from .uplink import CanonicalSink
from .voice_onset import VoiceOnsetDetector


class AgentAudio:
    """Forwards the agent's Opus to the caller and times the agent's answers."""

    def __init__(self, downlink: Callable[[bytes, int], None], tap: CanonicalSink) -> None:
        #: Where each agent packet goes (the caller leg's ``play``).
        self._downlink = downlink
        self._tap = tap
        self._voice_onset = VoiceOnsetDetector()
        self._speech_stopped_at: float | None = None
        self.times = FrameTimes()
        #: Caller end of speech to first voiced agent packet, since the last report.
        self.response_latencies = FrameTimes()
        self.last_response_secs: float | None = None
        #: When the last agent packet arrived (monotonic), and whether any did.
        self.last_packet_at = time.monotonic()
        #: Agent packets received from OpenAI.
        self.packets_in = 0

    def on_packet(self, payload: bytes, rtp_timestamp: int) -> None:
        """One in-order agent packet (called by the receiver, on the event loop)."""
        started = time.perf_counter()
        self.last_packet_at = time.monotonic()
        if payload:
            self.packets_in += 1
        self._downlink(payload, rtp_timestamp)
        if self._speech_stopped_at is not None and self._voice_onset.voiced(payload):
            self._answered(time.monotonic() - self._speech_stopped_at)
        self.times.add(time.perf_counter() - started)

    def on_pcm(self, pcm: np.ndarray, wallclock: float) -> None:
        """A canonical frame of agent audio an upstream already has as PCM (the
        WebSocket upstream), for the taps: nothing to decode."""
        self._tap(pcm, wallclock)

    def caller_stopped_speaking(self) -> None:
        self._speech_stopped_at = time.monotonic()

    def caller_started_speaking(self) -> None:
        """A new turn, or barge-in: no answer is awaited any more."""
        self._speech_stopped_at = None
        self._voice_onset.reset()

    def _answered(self, latency_secs: float) -> None:
        self._speech_stopped_at = None
        self._voice_onset.reset()
        self.last_response_secs = latency_secs
        self.response_latencies.add(latency_secs)

    async def read_decoded(self, track: MediaStreamTrack, clock: Callable[[], float]) -> None:
        """Tap the frames aiortc decodes for ``track`` (only while decoding is on)."""
        resampler = To24kMono()
        with contextlib.suppress(Exception):
            while True:
                frame = cast(AudioFrame, await track.recv())
                for pcm in resampler.push(to_mono(frame)):
                    self._tap(pcm, clock())
