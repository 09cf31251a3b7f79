"""The recording's WAV file: PCM16 whose header is kept true at every flush, and the
repair of one a crash left behind."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from relay.taps import CANONICAL_RATE

CHANNELS: Final = 2
SAMPLE_BYTES: Final = 2
WAV_HEADER_BYTES: Final = 44
_RIFF_SIZE_AT: Final = 4
_DATA_SIZE_AT: Final = 40


def wav_header(data_bytes: int, channels: int = CHANNELS, rate: int = CANONICAL_RATE) -> bytes:
    """The 44-byte header of a PCM16 WAV holding ``data_bytes`` of samples."""
    block = channels * SAMPLE_BYTES
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


def _patch_sizes(file: BinaryIO, data_bytes: int) -> None:
    """Write the RIFF and data chunk sizes into the header of the WAV open as ``file``."""
    file.seek(_RIFF_SIZE_AT)
    file.write(struct.pack("<I", 36 + data_bytes))
    file.seek(_DATA_SIZE_AT)
    file.write(struct.pack("<I", data_bytes))


class WavWriter:
    """A PCM16 WAV file whose header is kept true at every :meth:`flush`."""

    def __init__(self, path: Path, channels: int = CHANNELS, rate: int = CANONICAL_RATE) -> None:
        self._channels = channels
        self._file = path.open("wb")
        self._file.write(wav_header(0, channels, rate))
        self.data_bytes = 0

    @property
    def frames(self) -> int:
        return self.data_bytes // (self._channels * SAMPLE_BYTES)

    def write(self, samples: np.ndarray) -> int:
        """Append interleaved int16 samples (shape ``(n, channels)``); returns bytes."""
        data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
        self._file.write(data)
        self.data_bytes += len(data)
        return len(data)

    def flush(self) -> None:
        """Patch the RIFF and data sizes, then push everything to the OS."""
        _patch_sizes(self._file, self.data_bytes)
        self._file.seek(0, os.SEEK_END)
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self.flush()
        finally:
            self._file.close()


def repair_wav(path: Path) -> int:
    """Make ``path``'s header match its data (whole frames only); returns frames."""
    size = path.stat().st_size
    block = CHANNELS * SAMPLE_BYTES
    data_bytes = max(0, size - WAV_HEADER_BYTES) // block * block
    with path.open("r+b") as file:
        if size < WAV_HEADER_BYTES:
            file.truncate(0)
            file.write(wav_header(0))
            return 0
        file.truncate(WAV_HEADER_BYTES + data_bytes)
        _patch_sizes(file, data_bytes)
    return data_bytes // block


def peaks(path: Path, points: int) -> dict[str, list[float]]:
    """The waveform of a recording's stereo WAV for drawing: the loudest sample (0..1)
    of each channel (``caller`` left, ``agent`` right) in each of ``points`` equal
    slices of the audio (fewer if the file holds fewer frames). Reads the samples in
    place (a memory map), not into memory."""
    block = CHANNELS * SAMPLE_BYTES
    frames = max(0, path.stat().st_size - WAV_HEADER_BYTES) // block
    points = max(0, min(points, frames))
    if points == 0:
        return {"caller": [], "agent": []}
    with path.open("rb") as file:
        data = np.memmap(
            file, dtype="<i2", mode="r", offset=WAV_HEADER_BYTES, shape=(frames, CHANNELS)
        )
        starts = np.linspace(0, frames, points + 1).astype(np.int64)[:-1]
        high = np.maximum.reduceat(data, starts, axis=0).astype(np.float64)
        low = np.minimum.reduceat(data, starts, axis=0).astype(np.float64)
        del data
    loudest = np.minimum(1.0, np.maximum(high, -low) / 32767.0).round(4)
    return {"caller": loudest[:, 0].tolist(), "agent": loudest[:, 1].tolist()}
