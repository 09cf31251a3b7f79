"""What an emulated call received: the test hook for relay tests.

Every emulated call keeps a :class:`ReceivedAudio` (``call.received``) fed with the
caller's audio exactly as the emulator decoded it (48 kHz, downmixed to mono):

* ``frame_dbfs``: RMS level of every received frame (20 ms each), oldest dropped
  after ``MAX_LEVELS`` frames (10 minutes);
* ``pcm()``: a copy of the last ``keep_secs`` (30 s) of received mono int16 PCM;
* counters (``frames``, ``samples``) and helpers (``loud_frames``, ``max_dbfs``,
  ``duration_secs``).

Relay tests reach it through ``app[SESSIONS]`` (see :mod:`relay.emulator.app`), e.g.
to assert that noise was reduced, or that muted audio never reached "OpenAI"::

    call = await app[SESSIONS].wait_for_call(timeout=5)
    ...
    assert call.received.loud_frames(-45.0) == 0
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from .vad import frame_dbfs

MAX_LEVELS = 10 * 60 * 50


class ReceivedAudio:
    def __init__(self, keep_secs: float = 30.0, rate: int = 48000) -> None:
        self.rate = rate
        self.keep_samples = int(keep_secs * rate)
        self.frame_dbfs: deque[float] = deque(maxlen=MAX_LEVELS)
        self._pcm: deque[np.ndarray] = deque()
        self._pcm_samples = 0
        self.frames = 0
        self.samples = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def add(self, pcm: np.ndarray, dbfs: float | None = None) -> float:
        """Record one received frame (mono int16); returns its level in dBFS."""
        level = frame_dbfs(pcm) if dbfs is None else dbfs
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.frames += 1
        self.samples += int(pcm.size)
        self.frame_dbfs.append(level)
        self._pcm.append(pcm.copy())
        self._pcm_samples += int(pcm.size)
        while self._pcm and self._pcm_samples - self._pcm[0].size >= self.keep_samples:
            self._pcm_samples -= int(self._pcm.popleft().size)
        return level

    def pcm(self) -> np.ndarray:
        """The last ``keep_secs`` of received audio, 48 kHz mono int16."""
        if not self._pcm:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(self._pcm))[-self.keep_samples :]

    @property
    def duration_secs(self) -> float:
        return self.samples / self.rate

    def levels(self) -> list[float]:
        return list(self.frame_dbfs)

    def loud_frames(self, threshold_dbfs: float = -45.0) -> int:
        """How many recorded frames were louder than ``threshold_dbfs``."""
        return sum(1 for level in self.frame_dbfs if level > threshold_dbfs)

    def max_dbfs(self) -> float:
        return max(self.frame_dbfs, default=-120.0)

    def mean_dbfs(self, above_dbfs: float = -120.0) -> float:
        """Mean level of the frames louder than ``above_dbfs`` (-120 if none)."""
        levels = [level for level in self.frame_dbfs if level > above_dbfs]
        return float(np.mean(levels)) if levels else -120.0
