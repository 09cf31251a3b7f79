"""Noise suppression of the caller's audio, on 48 kHz mono int16, 20 ms at a time.

* ``webrtc`` (default): libwebrtc's suppressor + high-pass filter, through the
  ``livekit`` package's ``AudioProcessingModule``: ~52 us per frame, ~7 ms delay,
  gentle on clean speech and babble.
* ``rnnoise``: RNNoise (``pyrnnoise``), opt-in for steady heavy noise: ~1 ms per frame,
  20x the CPU, and it damages speech in babble.
* ``off``: nothing (browsers already run WebRTC NS on the microphone by default).
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

from ..config import NoiseSuppression
from .opus import OPUS_CLOCK

RATE = OPUS_CLOCK  # the rate libopus decodes at; both suppressors work there
TEN_MS = RATE // 100


class Denoiser(Protocol):
    name: str

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Denoise a multiple of 10 ms of 48 kHz mono int16; returns as many samples."""
        ...

    def close(self) -> None:
        """Release native state (idempotent); the call closes its suppressor."""
        ...


class NoDenoiser:
    name = "off"

    def process(self, pcm: np.ndarray) -> np.ndarray:
        return pcm

    def close(self) -> None:
        return


class WebRtcDenoiser:
    """libwebrtc's noise suppressor (via livekit's AudioProcessingModule).

    ``AudioProcessingModule.process_stream`` builds a new FFI request (a protobuf) and
    copies the frame on every 10 ms call; here one request, pointing at one buffer, is
    built once and reused, which saves about a third of the suppressor's CPU. It relies
    on livekit's private FFI names (livekit is pinned to 1.2.x); without them it falls
    back to the public call. ``tests/test_media_stages.py`` checks both give the same
    output."""

    name = "webrtc"

    def __init__(self, *, reuse_request: bool = True) -> None:
        from livekit import rtc

        self._rtc = rtc
        self._apm: Any = rtc.AudioProcessingModule(noise_suppression=True, high_pass_filter=True)
        self._buffer = bytearray(TEN_MS * 2)
        self._view = np.frombuffer(self._buffer, dtype=np.int16)
        self._request: Any = self._prepared_request() if reuse_request else None

    def _prepared_request(self) -> Any:
        try:
            from livekit.rtc._ffi_client import FfiClient
            from livekit.rtc._proto import ffi_pb2
            from livekit.rtc._utils import get_address
        except ImportError:
            return None
        request = ffi_pb2.FfiRequest()
        fields = request.apm_process_stream
        fields.apm_handle = self._apm._ffi_handle.handle
        fields.data_ptr = get_address(self._buffer)
        fields.size = len(self._buffer)
        fields.sample_rate = RATE
        fields.num_channels = 1
        self._client = FfiClient.instance
        return request

    def process(self, pcm: np.ndarray) -> np.ndarray:
        if self._apm is None:  # closed: a straggler passes through untouched
            return pcm
        out = np.empty_like(pcm)
        for start in range(0, pcm.size, TEN_MS):
            out[start : start + TEN_MS] = self._process_10ms(pcm[start : start + TEN_MS])
        return out

    def close(self) -> None:
        """Drop the FFI request and the module: livekit frees its native handle then."""
        self._request = None
        self._apm = None

    def _process_10ms(self, chunk: np.ndarray) -> np.ndarray:
        if self._request is None:
            frame = self._rtc.AudioFrame(chunk.tobytes(), RATE, 1, TEN_MS)
            self._apm.process_stream(frame)  # in place
            return np.frombuffer(frame.data, dtype=np.int16)
        self._view[:] = chunk
        response = self._client.request(self._request)  # in place, in self._buffer
        if response.apm_process_stream.error:
            raise RuntimeError(response.apm_process_stream.error)
        return self._view


class RnnoiseDenoiser:
    """RNNoise at 48 kHz (its native rate), 10 ms per call."""

    name = "rnnoise"

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        self._lib: Any = rnnoise.lib
        self._state = rnnoise.create()
        self._buf = np.zeros(TEN_MS, dtype=np.float32)
        self._ptr = self._buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._destroy = rnnoise.destroy

    def process(self, pcm: np.ndarray) -> np.ndarray:
        if self._state is None:  # closed: never hand native code a freed state
            return pcm
        out = np.empty_like(pcm)
        for start in range(0, pcm.size, TEN_MS):
            self._buf[:] = pcm[start : start + TEN_MS]
            self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr)
            out[start : start + TEN_MS] = np.clip(self._buf, -32768, 32767)
        return out

    def close(self) -> None:
        if self._state is not None:
            self._destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


def make_denoiser(mode: NoiseSuppression) -> Denoiser:
    if mode == "webrtc":
        return WebRtcDenoiser()
    if mode == "rnnoise":
        return RnnoiseDenoiser()
    return NoDenoiser()
