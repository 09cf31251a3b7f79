"""The caller's audio path, packet by packet as it arrives:

Opus -> 48 kHz mono -> noise suppression -> 24 kHz mono canonical PCM -> the taps, and
-> Opus (24 kHz) -> the uplink track to OpenAI (or, for a WebSocket upstream, the
canonical PCM frames themselves: :meth:`UplinkTrack.push_pcm`, no encode).

A caller leg that carries PCM instead (the WebSocket leg: 24 kHz mono int16) enters the
same path at :meth:`CallerAudio.on_pcm`: 24 kHz -> 48 kHz -> noise suppression -> the
same canonical frames, taps and encoder (or straight to them with suppression off).

With noise suppression off there is nothing to change in the audio, so the browser's
own Opus packets go to OpenAI as they are (no re-encoding: no generation loss, no
encoder delay, a fifth of the CPU), and the decoded copy only feeds the taps.

It runs in the receiver's packet sink (see :mod:`relay.aiortc_patches`), on the event
loop, so no frame crosses a thread; aiortc's decoder thread for the caller stays idle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from ..taps import CANONICAL_FRAME_SAMPLES, CANONICAL_RATE
from .denoise import Denoiser
from .opus import FRAME_TICKS, OPUS_CLOCK, RTP_WRAP, Opus24kEncoder, OpusDecoder
from .pcm import To24kMono, resampler_to
from .timing import FrameTimes
from .tracks import UplinkTrack

logger = logging.getLogger(__name__)

CanonicalSink = Callable[[np.ndarray, float], None]
"""Receives each canonical 20 ms frame and the wall-clock time of its first sample."""

_MAX_GAP = OPUS_CLOCK * 10  # a timestamp jump beyond 10 s is a new stream, not loss
_MAX_PCM_GAP_FRAMES = 10


class CallerAudio:
    """Turns the caller's Opus packets into canonical PCM and uplink packets."""

    def __init__(
        self,
        denoiser: Denoiser,
        uplink: UplinkTrack,
        tap: CanonicalSink,
    ) -> None:
        self._denoiser = denoiser
        #: Where the encoded frames go (a renewed upstream session brings its own).
        self.uplink = uplink
        self._tap = tap
        #: Processing time of each packet since the last stats report.
        self.times = FrameTimes()
        # libavcodec's libopus decoder always decodes at 48 kHz (Opus's full band).
        self._rate = OPUS_CLOCK
        self._decoder = OpusDecoder()
        self._resampler = To24kMono(self._rate)
        self._encoder = Opus24kEncoder()
        self._forward = denoiser.name == "off"
        self._next_ts: int | None = None
        self._out_pts = 0  # on the 48 kHz RTP clock, like the caller's timestamps
        self.frames_in = 0
        self.loss_gaps = 0
        self.last_frame_at: float | None = None  # monotonic
        # PCM entry (on_pcm): 24 kHz -> 48 kHz for the suppressor, whole 10 ms at a time.
        self._upsample: Callable[[np.ndarray], np.ndarray] | None = None
        self._pcm_carry = np.zeros(0, dtype=np.int16)
        self.closed = False

    def close(self) -> None:
        """Free the libav contexts now (idempotent; audio after this is ignored). A
        resampler (a libav filter graph) and an encoder each hold native threads, one
        per core, until they are freed, and a call's objects, which reference each
        other, would otherwise only be freed by a full garbage collection."""
        if not self.closed:
            self.closed = True
            del self._decoder, self._resampler, self._encoder
            self._upsample = None

    def on_packet(self, payload: bytes, rtp_timestamp: int) -> None:
        """One in-order caller packet (called by the receiver, on the event loop)."""
        if self.closed:
            return
        started = time.perf_counter()
        self.last_frame_at = time.monotonic()
        self.frames_in += 1
        pcm = self._decoder.decode(payload)
        if pcm.size:
            self._skip_lost_audio(rtp_timestamp, pcm.size * OPUS_CLOCK // self._rate)
            if self._forward:
                self._forward_packet(payload, pcm, time.time())
            else:
                self._process(pcm, time.time())
        self.times.add(time.perf_counter() - started)

    def on_pcm(self, pcm: np.ndarray) -> None:
        """Caller audio as 24 kHz mono int16 (a PCM leg): the same suppression,
        canonical frames, taps and encoder as the Opus path."""
        if self.closed:
            return
        started = time.perf_counter()
        self.last_frame_at = time.monotonic()
        self.frames_in += 1
        if self._forward:  # already canonical: only cut into whole 20 ms frames
            whole, step = self._whole(pcm, CANONICAL_FRAME_SAMPLES), CANONICAL_FRAME_SAMPLES
            self._emit([whole[i : i + step] for i in range(0, whole.size, step)], time.time())
        else:
            if self._upsample is None:
                self._upsample = resampler_to(self._rate, CANONICAL_RATE)
            upsampled = self._upsample(pcm)
            if self.frames_in == 1:  # swresample holds back a few samples at the start:
                # pad its first output to whole 10 ms instead of a standing delay
                pad = np.zeros(-upsampled.size % (self._rate // 100), dtype=np.int16)
                upsampled = np.concatenate([pad, upsampled])
            pcm48 = self._whole(upsampled, self._rate // 100)
            if pcm48.size:
                self._process(pcm48, time.time())
        self.times.add(time.perf_counter() - started)

    def _whole(self, pcm: np.ndarray, unit: int) -> np.ndarray:
        """``pcm`` after what was left over, cut to a whole number of ``unit`` samples."""
        pcm = np.concatenate([self._pcm_carry, pcm]) if self._pcm_carry.size else pcm
        whole = pcm.size - pcm.size % unit
        self._pcm_carry = pcm[whole:]
        return pcm[:whole]

    def _forward_packet(self, payload: bytes, pcm: np.ndarray, wallclock: float) -> None:
        if self.uplink.wants_pcm:  # an upstream that takes PCM: no Opus at all
            self._emit(self._resampler.push(pcm), wallclock)
            return
        self.uplink.push(payload, self._out_pts)
        self._out_pts += pcm.size * OPUS_CLOCK // self._rate
        for frame in self._resampler.push(pcm):
            self._tap(frame, wallclock)

    def _process(self, pcm: np.ndarray, wallclock: float) -> None:
        if pcm.size % (self._rate // 100) == 0:
            pcm = self._denoiser.process(pcm)
        self._emit(self._resampler.push(pcm), wallclock)

    def _emit(self, frames: list[np.ndarray], wallclock: float) -> None:
        """Canonical 20 ms frames to the taps and, encoded, to OpenAI."""
        for frame in frames:
            self._tap(frame, wallclock)
            if self.uplink.wants_pcm:
                self.uplink.push_pcm(frame)
                continue
            self.uplink.push(self._encoder.encode(frame), self._out_pts)
            self._out_pts += CANONICAL_FRAME_SAMPLES * OPUS_CLOCK // CANONICAL_RATE

    def _skip_lost_audio(self, rtp_timestamp: int, duration: int) -> None:
        """A jump in the caller's timestamps is lost packets: keep it as a gap upstream,
        so OpenAI's receiver conceals it where it happened (an upstream that takes PCM
        gets the gap as silence, up to 200 ms, so its timeline stays the caller's)."""
        if self._next_ts is not None:
            gap = (rtp_timestamp - self._next_ts) % RTP_WRAP
            if 0 < gap < _MAX_GAP:
                self._out_pts += gap
                self.loss_gaps += 1
                if self.uplink.wants_pcm:
                    silence = np.zeros(CANONICAL_FRAME_SAMPLES, dtype=np.int16)
                    for _ in range(min(gap // FRAME_TICKS, _MAX_PCM_GAP_FRAMES)):
                        self.uplink.push_pcm(silence)
        self._next_ts = (rtp_timestamp + duration) % RTP_WRAP
