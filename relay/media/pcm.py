"""PCM helpers on int16 numpy arrays: mono, the canonical 24 kHz, levels and mixing."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from av import AudioFrame, AudioResampler

from ..taps import CANONICAL_FRAME_SAMPLES, CANONICAL_RATE

SILENCE_DBFS = -100.0


def to_mono(frame: AudioFrame) -> np.ndarray:
    """48 kHz int16 mono from an aiortc-decoded frame (always packed s16 stereo)."""
    samples = frame.to_ndarray().reshape(-1)
    if frame.layout.name == "mono":
        return samples
    pair = samples.reshape(-1, 2).astype(np.int32)
    return ((pair[:, 0] + pair[:, 1]) >> 1).astype(np.int16)


class To24kMono:
    """Mono int16 in, exact 480-sample 24 kHz frames out (swresample, ~0.7 ms delay:
    low-latency, unlike a fixed frame_size resampler)."""

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
        return [pcm[i : i + step] for i in range(0, whole, step)]


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (``SILENCE_DBFS`` for digital silence)."""
    if pcm.size == 0:
        return SILENCE_DBFS
    samples = pcm.astype(np.float32)
    mean_square = float(np.dot(samples, samples)) / pcm.size
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / (32768.0 * 32768.0)))


def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum two int16 frames (the shorter padded with silence), clipped to int16."""
    out = np.zeros(max(len(a), len(b)), dtype=np.int32)
    out[: len(a)] += a
    out[: len(b)] += b
    return np.clip(out, -32768, 32767).astype(np.int16)


def resampler_to(output_rate: int, input_rate: int) -> Callable[[np.ndarray], np.ndarray]:
    """Mono int16 at ``input_rate`` in, mono int16 at ``output_rate`` out (swresample;
    as many samples as it has ready, the rest follows with the next input)."""
    resampler = AudioResampler(format="s16", layout="mono", rate=output_rate)

    def push(mono: np.ndarray) -> np.ndarray:
        frame = AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = input_rate
        parts = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    return push
