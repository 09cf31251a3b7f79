"""libopus, used directly on the caller leg (on the event loop, no thread hand-off).

A 20 ms Opus packet decodes in tens of microseconds and a 24 kHz mono frame encodes in
about as much: less than what aiortc spends handing each frame to its decoder thread
and back, or to its encode executor and back. So the caller leg decodes the browser's
packets as they arrive and hands aiortc's sender ready-made packets to send.
"""

from __future__ import annotations

import fractions
from typing import Any

import numpy as np
from av import AudioFrame, CodecContext, Packet

from ..taps import CANONICAL_FRAME_SAMPLES, CANONICAL_RATE

#: The RTP clock of Opus (and the rate libopus decodes at): 48 kHz on either leg.
OPUS_CLOCK = 48000
FRAME_TICKS = OPUS_CLOCK // 50  # 20 ms on the RTP clock
#: RTP timestamps wrap at 32 bits.
RTP_WRAP = 1 << 32
"""Opus's RTP clock, whatever the audio's sample rate."""


class OpusDecoder:
    """Opus payloads -> int16 mono PCM at 48 kHz (libavcodec's libopus decoder always
    decodes at Opus's full rate)."""

    def __init__(self) -> None:
        self._codec: Any = CodecContext.create("libopus", "r")
        self._codec.sample_rate = OPUS_CLOCK
        self._codec.layout = "mono"
        self._codec.format = "s16"

    def decode(self, payload: bytes) -> np.ndarray:
        """The PCM of one packet (empty if the packet could not be decoded)."""
        try:
            frames = self._codec.decode(Packet(payload))
        except ValueError:  # av's errors derive from ValueError: a corrupt packet
            return np.zeros(0, dtype=np.int16)
        if len(frames) == 1:
            return np.asarray(frames[0].to_ndarray().reshape(-1), dtype=np.int16)
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)


class Opus24kEncoder:
    """24 kHz mono int16 frames of 20 ms -> Opus payloads, one per frame, at once.

    aiortc's own encoder resamples to 48 kHz stereo and re-chunks to 960 samples, which
    costs ~20 ms on 24 kHz input; libopus takes 24 kHz natively (the RTP clock stays at
    48 kHz)."""

    RATE = CANONICAL_RATE
    SAMPLES = CANONICAL_FRAME_SAMPLES

    def __init__(self, bit_rate: int = 32000) -> None:
        self._codec: Any = CodecContext.create("libopus", "w")
        self._codec.bit_rate = bit_rate
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = self.RATE
        self._codec.time_base = fractions.Fraction(1, self.RATE)
        self._codec.options = {"application": "voip"}
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._pts
        self._pts += pcm.size
        return b"".join(bytes(p) for p in self._codec.encode(frame))
