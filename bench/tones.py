"""The tone-onset method both benchmarks time audio with (``reference/aiortc-notes.md``
§5.3): the tone bursts, the onset detector, and the matching of received onsets to
sent ones.

A burst is 100 ms of 1 kHz at half of full scale, one every 500 ms, starting mid-frame.
An onset is the first decoded sample above THRESHOLD after at least QUIET_S of quiet;
its time is when the frame holding it came out of ``recv()`` + its offset in the frame.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Sequence

import numpy as np
from aiortc import MediaStreamTrack
from av import AudioFrame

from bench.common import cancel_and_wait, drain

RATE = 48000
FRAME = 960  # 20 ms
PERIOD = 25 * FRAME  # one burst every 500 ms
BURST = 5 * FRAME  # 100 ms of tone
BURST_START = FRAME // 2  # mid-frame onsets
TONE_HZ = 1000.0
AMPLITUDE = 0.5  # of full scale
THRESHOLD = 0.2 * 32768  # onset = first sample above this
QUIET_S = 0.25  # a loud sample after this much quiet starts a new burst


def burst_period() -> np.ndarray:
    """One 500 ms period, mono float (int16 scale): the burst, digital silence around."""
    period = np.zeros(PERIOD)
    n = np.arange(BURST)
    period[BURST_START : BURST_START + BURST] = (
        AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * n / RATE)
    )
    return period


def find_onsets(pcm: np.ndarray, rate: int = RATE) -> list[int]:
    """Sample indices where a burst starts (loud after QUIET_S of quiet)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > THRESHOLD)
    onsets: list[int] = []
    last = -math.inf
    quiet = QUIET_S * rate
    for i in loud:
        if i - last > quiet:
            onsets.append(int(i))
        last = float(i)
    return onsets


def match_onsets(
    source: Sequence[float], received: Sequence[float], max_latency: float
) -> list[tuple[float, float]]:
    """(source onset, latency s) for each received onset: the latest source onset before
    it, if closer than ``max_latency``; a source onset is used at most once."""
    src = sorted(source)
    used: set[int] = set()
    out: list[tuple[float, float]] = []
    for r in sorted(received):
        i = bisect.bisect_right(src, r) - 1
        if i < 0 or i in used or r - src[i] >= max_latency:
            continue
        used.add(i)
        out.append((src[i], r - src[i]))
    return out


class OnsetReceiver:
    """Reads a decoded remote track to its end; records tone onsets (monotonic), and
    counts frames and the frames lost (gaps in the frames' pts)."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self.frames = 0
        self.lost_frames = 0
        self.first_frame = asyncio.Event()
        self._next_pts: int | None = None
        self._last_loud = -math.inf
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.ensure_future(drain(track, self._on_frame))

    def _on_frame(self, frame: object) -> None:
        if isinstance(frame, AudioFrame):
            self.feed(frame, time.monotonic())

    def feed(self, frame: AudioFrame, returned: float) -> None:
        self.frames += 1
        self.first_frame.set()
        if frame.pts is not None:
            if self._next_pts is not None and frame.pts > self._next_pts:
                self.lost_frames += (frame.pts - self._next_pts) // frame.samples
            self._next_pts = frame.pts + frame.samples
        pcm = frame.to_ndarray().reshape(-1)
        if len(frame.layout.channels) == 2:
            pcm = pcm[0::2]
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > THRESHOLD)
        if loud.size == 0:
            return
        rate = frame.sample_rate or RATE
        first = returned + int(loud[0]) / rate
        if first - self._last_loud > QUIET_S:
            self.onsets.append(first)
        self._last_loud = returned + int(loud[-1]) / rate

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
