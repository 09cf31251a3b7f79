"""Is there voice in an Opus packet? Used to time the agent's response: the upstream
sends packets all the time (silence between responses), so "the first agent audio
frame" after the caller stopped speaking is the first one with sound in it. Packets
are decoded only while a response is awaited, so this costs nothing most of the time."""

from __future__ import annotations

from typing import Any

import numpy as np
from av import CodecContext, Packet

VOICED_DBFS = -50.0


class VoiceOnsetDetector:
    def __init__(self, threshold_dbfs: float = VOICED_DBFS) -> None:
        self._decoder: Any = None
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20)

    def voiced(self, payload: bytes) -> bool:
        if self._decoder is None:
            self._decoder = CodecContext.create("libopus", "r")
            self._decoder.sample_rate = 48000
            self._decoder.layout = "mono"
            self._decoder.format = "s16"
        try:
            frames = self._decoder.decode(Packet(payload))
        except Exception:  # a corrupt packet is not voice  # noqa: BLE001
            return False
        for frame in frames:
            pcm = frame.to_ndarray().astype(np.float64)
            if pcm.size and np.sqrt(np.mean(pcm**2)) > self._threshold:
                return True
        return False

    def reset(self) -> None:
        """Forget decoder state between responses (decoding restarts cold)."""
        self._decoder = None
