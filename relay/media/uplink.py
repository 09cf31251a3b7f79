"""The caller's audio path: decoded caller audio -> mono -> noise suppression at
48 kHz -> 24 kHz mono canonical PCM -> the uplink track and the taps."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import cast

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, AudioResampler

from ..taps import CANONICAL_FRAME_SAMPLES, CANONICAL_RATE
from .denoise import Denoiser
from .tracks import UplinkTrack

logger = logging.getLogger(__name__)

CanonicalSink = Callable[[np.ndarray, float], None]
"""Receives each canonical 20 ms frame and the wall-clock time of its first sample."""


def to_mono(frame: AudioFrame) -> np.ndarray:
    """48 kHz int16 mono from an aiortc-decoded frame (always packed s16 stereo)."""
    samples = frame.to_ndarray().reshape(-1)
    if frame.layout.name == "mono":
        return samples
    pair = samples.reshape(-1, 2).astype(np.int32)
    return ((pair[:, 0] + pair[:, 1]) >> 1).astype(np.int16)


class To24kMono:
    """48 kHz mono int16 in, exact 480-sample 24 kHz frames out (swresample, ~0.7 ms
    delay: low-latency, unlike a fixed frame_size resampler)."""

    def __init__(self, input_rate: int = 48000) -> None:
        self._resampler = AudioResampler(format="s16", layout="mono", rate=CANONICAL_RATE)
        self._rate = input_rate
        self._carry = np.zeros(0, dtype=np.int16)
        self._primed = False

    def push(self, mono: np.ndarray) -> list[np.ndarray]:
        frame = AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        parts: list[np.ndarray] = [self._carry]
        parts += [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        pcm = np.concatenate(parts)
        if not self._primed and pcm.size:
            # swresample holds back a few samples (16) at the start, so its first output
            # is just short of a frame; without this pad, every frame after it would wait
            # for the next input: a standing 20 ms delay.
            pcm = np.concatenate([np.zeros(-pcm.size % CANONICAL_FRAME_SAMPLES, np.int16), pcm])
            self._primed = True
        whole = pcm.size - pcm.size % CANONICAL_FRAME_SAMPLES
        self._carry = pcm[whole:]
        step = CANONICAL_FRAME_SAMPLES
        frames: list[np.ndarray] = [pcm[i : i + step] for i in range(0, whole, step)]
        return frames


class CallerAudio:
    """Reads the caller's remote track to its end (never leaving it unread)."""

    def __init__(
        self,
        track: MediaStreamTrack,
        denoiser: Denoiser,
        uplink: UplinkTrack,
        tap: CanonicalSink,
        on_processed: Callable[[float], None] | None = None,
    ) -> None:
        self._track = track
        self._denoiser = denoiser
        self._uplink = uplink
        self._tap = tap
        self._on_processed = on_processed
        self._resampler: To24kMono | None = None
        self._next_in_pts: int | None = None
        self._out_pts = 0
        self.frames_in = 0
        self.frames_out = 0
        self.last_frame_at: float | None = None  # monotonic

    async def run(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = cast(AudioFrame, await self._track.recv())
                self.last_frame_at = time.monotonic()
                started = time.perf_counter()
                self._process(frame)
                if self._on_processed is not None:
                    self._on_processed(time.perf_counter() - started)

    def _process(self, frame: AudioFrame) -> None:
        self.frames_in += 1
        wallclock = time.time()
        if self._resampler is None or self._resampler._rate != frame.sample_rate:
            self._resampler = To24kMono(frame.sample_rate)
        self._skip_lost_audio(frame)
        mono = to_mono(frame)
        if mono.size % (frame.sample_rate // 100) == 0:
            mono = self._denoiser.process(mono)
        for pcm in self._resampler.push(mono):
            self._uplink.push(pcm, self._out_pts)
            self._tap(pcm, wallclock)
            self._out_pts += CANONICAL_FRAME_SAMPLES
            self.frames_out += 1

    def _skip_lost_audio(self, frame: AudioFrame) -> None:
        """A jump in the caller's pts is lost packets: keep it as a gap upstream."""
        if frame.pts is None:
            return
        if self._next_in_pts is not None and frame.pts > self._next_in_pts:
            lost = frame.pts - self._next_in_pts
            self._out_pts += lost * CANONICAL_RATE // frame.sample_rate
        self._next_in_pts = frame.pts + frame.samples
