"""The agent's real voice: espeak-ng (the Debian package), offline.

``espeak-ng --stdout`` writes a 22.05 kHz mono WAV; it is resampled to the agent
track's 48 kHz, levelled like the synthetic voice (peak -6 dBFS) and cut into words at
the quietest points near their expected boundaries, so that a response can stream
transcript deltas and audio together. Each OpenAI voice maps to an espeak-ng variant
(female or male) and pitch. Synthesis runs in a small thread pool (a subprocess of a
few tens of milliseconds per sentence), never on the event loop.

Without espeak-ng (or if it fails) :func:`synthesize` returns ``None`` and the caller
falls back to the synthetic voice (:mod:`.voice`); the log says so once per process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import shutil
import subprocess
import zlib

import numpy as np

from .hearing import resample

log = logging.getLogger(__name__)

RATE = 48000
#: espeak-ng's words per minute at ``speed`` 1.0 (OpenAI's voices speak ~160-180).
WORDS_PER_MINUTE = 175
#: Peak level, as the synthetic voice's (-6 dBFS).
PEAK = 0.5
SYNTH_TIMEOUT_SECS = 10.0
FEMALE_VOICES = {"coral", "sage", "shimmer", "marin", "nova", "fable"}

_executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="speaking")
_failed: str | None = None


def _variant(voice: str) -> tuple[str, int]:
    """(espeak-ng voice, pitch 0..99) of an OpenAI voice id: stable per id."""
    spread = zlib.crc32(voice.encode())
    if voice in FEMALE_VOICES:
        return f"en-us+f{2 + spread % 4}", 45 + spread % 20
    return f"en-us+m{2 + spread % 6}", 35 + spread % 20


def _unavailable(reason: str) -> None:
    global _failed
    if _failed is None:
        log.warning("espeak-ng unavailable (%s): the agent speaks with the synthetic voice", reason)
    _failed = reason


def _wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of espeak-ng's streamed WAV (its sizes are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV")
    rate = int.from_bytes(data[24:28], "little")
    position = 12
    while position + 8 <= len(data):
        chunk, size = (
            data[position : position + 4],
            int.from_bytes(data[position + 4 : position + 8], "little"),
        )
        if chunk == b"data":
            body = data[position + 8 :]
            return np.frombuffer(body[: len(body) // 2 * 2], dtype=np.int16), rate
        position += 8 + size
    raise ValueError("no data chunk")


def synthesize_sync(text: str, voice: str = "alloy", speed: float = 1.0) -> np.ndarray | None:
    """``text`` spoken by espeak-ng as 48 kHz mono int16, ``None`` if espeak-ng is
    unavailable. Blocking: call it from a worker thread."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        _unavailable("espeak-ng not found")
        return None
    name, pitch = _variant(voice)
    wpm = int(WORDS_PER_MINUTE * min(max(speed, 0.25), 1.5))
    try:
        done = subprocess.run(
            [binary, "--stdout", "-v", name, "-p", str(pitch), "-s", str(max(wpm, 80)), "--", text],
            capture_output=True,
            timeout=SYNTH_TIMEOUT_SECS,
            check=True,
        )
        samples, rate = _wav_samples(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        _unavailable(f"{type(exc).__name__}: {exc}")
        return None
    audio = resample(samples, rate, RATE)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio *= PEAK / peak
    out: np.ndarray = np.clip(audio * 32767.0, -32768, 32767).astype(np.int16)
    return out


async def synthesize(text: str, voice: str = "alloy", speed: float = 1.0) -> np.ndarray | None:
    """:func:`synthesize_sync` in the worker pool."""
    if _failed is not None or not text.strip():
        return None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, synthesize_sync, text, voice, speed)


def split_words(words: list[str], pcm: np.ndarray) -> list[np.ndarray]:
    """``pcm`` cut into one piece per word: boundaries where the text's characters say,
    moved to the quietest 10 ms within 150 ms of there. Concatenated, the pieces are
    ``pcm`` exactly."""
    if len(words) <= 1 or pcm.size == 0:
        return [pcm] + [pcm[:0]] * (len(words) - 1) if words else []
    hop = RATE // 100
    frames = pcm[: pcm.size // hop * hop].astype(np.float32).reshape(-1, hop)
    energy = (frames**2).mean(axis=1) if frames.size else np.zeros(1)
    weights = np.array([len(w) + 1 for w in words], dtype=float)
    expected = np.cumsum(weights)[:-1] / weights.sum() * pcm.size
    cuts = [0]
    reach = 15  # frames either side
    for position in expected:
        centre = int(position // hop)
        low = max(centre - reach, cuts[-1] // hop + 1)
        high = min(centre + reach, energy.size - 1)
        if low > high:
            cuts.append(max(cuts[-1], min(int(position), pcm.size)))
            continue
        quiet = low + int(np.argmin(energy[low : high + 1]))
        cuts.append(max(cuts[-1], quiet * hop))
    cuts.append(pcm.size)
    return [pcm[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
