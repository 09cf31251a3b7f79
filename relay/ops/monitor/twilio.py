"""Twilio Media Streams' dialect for listen-in: G.711 mu-law, 24 kHz -> 8 kHz, and the
``connected`` / ``start`` / ``media`` / ``stop`` messages."""

from __future__ import annotations

import base64
import collections
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from relay.taps import CANONICAL_RATE

TWILIO_RATE: Final = 8000
#: Twilio's track of each speaker: the caller is ``inbound``, the agent ``outbound``.
TWILIO_TRACK: Final[dict[str, str]] = {"caller": "inbound", "agent": "outbound"}

_MULAW_BIAS: Final = 0x84
#: Segment ends of G.711's 14-bit mu-law (the reference ``g711.c`` tables).
_MULAW_SEGMENT_ENDS: Final = np.array(
    [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32
)


def mulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 mu-law bytes of int16 samples, bit-exact with the reference ``g711.c``
    (and with the deprecated ``audioop.lin2ulaw``)."""
    value = pcm.astype(np.int32) >> 2  # 14-bit, as G.711 defines it
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, value, side="left").astype(np.int32)
    code = (np.minimum(segment, 7) << 4) | ((value >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    encoded: bytes = ((code ^ mask) & 0xFF).astype(np.uint8).tobytes()
    return encoded


def mulaw_decode(data: bytes) -> np.ndarray:
    """int16 samples of G.711 mu-law bytes."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    decoded: np.ndarray = np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)
    return decoded


def _lowpass_taps(count: int = 63, cutoff_hz: float = 3600.0) -> np.ndarray:
    """A windowed-sinc low-pass for 24 kHz, below the 4 kHz Nyquist of 8 kHz."""
    n = np.arange(count) - (count - 1) / 2
    taps = np.sinc(2 * cutoff_hz / CANONICAL_RATE * n) * np.hamming(count)
    normalised: np.ndarray = (taps / taps.sum()).astype(np.float32)
    return normalised


_TAPS: Final = _lowpass_taps()


class Downsampler24kTo8k:
    """Streaming 24 kHz -> 8 kHz: low-pass FIR, keep every third sample.

    The filter's history is carried across frames so frame edges do not click."""

    def __init__(self) -> None:
        self._history = np.zeros(len(_TAPS) - 1, dtype=np.float32)
        self._phase = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._history, pcm.astype(np.float32)])
        filtered = np.convolve(x, _TAPS, mode="valid")
        out = filtered[self._phase :: 3]
        self._phase = (self._phase - len(pcm)) % 3
        self._history = x[len(x) - len(self._history) :]
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)


class TwilioStream:
    """Builds the messages of one Twilio Media Streams dialect listen-in stream."""

    def __init__(self, call_id: str, tracks: list[str], clock: Callable[[], float] = time.time):
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self._call_id = call_id
        self._tracks = tracks
        self._sequence = 0
        self._chunks: dict[str, int] = collections.Counter()
        self._downsamplers: dict[str, Downsampler24kTo8k] = {}
        self._started_at = clock()

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    @staticmethod
    def connected() -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": self._next_sequence(),
            "start": {
                "accountSid": "",
                "streamSid": self.stream_sid,
                "callSid": self._call_id,
                "tracks": self._tracks,
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }

    def media(self, speaker: str, pcm: np.ndarray, wallclock: float) -> dict[str, Any]:
        """One ``media`` message: ``speaker``'s 24 kHz frame as 8 kHz mu-law, base64."""
        track = TWILIO_TRACK[speaker]
        downsampler = self._downsamplers.setdefault(track, Downsampler24kTo8k())
        payload = mulaw_encode(downsampler.process(pcm))
        self._chunks[track] += 1
        timestamp = max(0, round((wallclock - self._started_at) * 1000))
        return {
            "event": "media",
            "sequenceNumber": self._next_sequence(),
            "media": {
                "track": track,
                "chunk": str(self._chunks[track]),
                "timestamp": str(timestamp),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "streamSid": self.stream_sid,
        }

    def stop(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": self._next_sequence(),
            "stop": {"accountSid": "", "callSid": self._call_id},
            "streamSid": self.stream_sid,
        }
