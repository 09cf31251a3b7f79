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
