"""The agent's voice: espeak-ng speech (:mod:`.speaking`) when the emulator speaks
(:class:`Senses`), else deterministic, speech-like synthetic audio for a transcript.

:func:`utter` is the one entry point of a response: real speech made off the event
loop, or the synthetic voice if espeak-ng is off or unavailable. The synthetic voice
(:func:`speak`, :func:`synthesize`) is not intelligible, but speech-shaped so that
everything downstream (Opus, VAD, noise suppression, level meters, recorders) sees
something like a voice: a voiced harmonic source with a falling pitch contour
(per-voice f0, 110..210 Hz), shaped by three formant resonances that glide between
vowel targets, syllable envelopes, fricative noise for consonants, and pauses at word
and sentence boundaries. Energy sits in the 300-3400 Hz telephone band. Duration
follows the text: ~65 ms per character at speed 1.0 (~350 ms per average word),
divided by ``speed``.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import speaking

if TYPE_CHECKING:
    from .settings import EmulatorSettings

RATE = 48000
CHAR_MS = 65.0
WORD_GAP_MS = 40.0
COMMA_PAUSE_MS = 150.0
SENTENCE_PAUSE_MS = 300.0
BAND_HZ = (300.0, 3400.0)
#: Peak level of the synthesised speech (-6 dBFS); its RMS lands near -18 dBFS.
PEAK = 0.5

VOICE_PITCH_HZ = {
    "alloy": 150.0,
    "ash": 110.0,
    "ballad": 130.0,
    "coral": 200.0,
    "echo": 120.0,
    "sage": 190.0,
    "shimmer": 210.0,
    "verse": 125.0,
    "marin": 195.0,
    "cedar": 115.0,
    "fable": 140.0,
    "onyx": 105.0,
    "nova": 205.0,
}

#: (F1, F2, F3) in Hz of each vowel letter, roughly an adult's.
FORMANTS = {
    "a": (750.0, 1250.0, 2600.0),
    "e": (550.0, 1800.0, 2600.0),
    "i": (320.0, 2300.0, 3000.0),
    "o": (500.0, 900.0, 2500.0),
    "u": (350.0, 800.0, 2300.0),
    "y": (400.0, 2000.0, 2700.0),
}
_BANDWIDTHS = (90.0, 110.0, 160.0)
_FORMANT_GAINS = (1.0, 0.6, 0.3)
_FRICATIVES = set("sfzcxhjtkpq")
_SYLLABLE = re.compile(r"[^aeiouy]*[aeiouy]+", re.IGNORECASE)
_TOKEN = re.compile(r"\S+")


def pitch_of(voice: str) -> float:
    if voice in VOICE_PITCH_HZ:
        return VOICE_PITCH_HZ[voice]
    return 110.0 + zlib.crc32(voice.encode()) % 100  # custom voice ids: stable per id


@dataclass(frozen=True)
class SpokenWord:
    """One word of the transcript (with its trailing space) and its audio."""

    text: str
    pcm: np.ndarray  # int16, 48 kHz mono


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    attack = min(attack, n // 2)
    release = min(release, n - attack)
    if attack:
        env[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
    if release:
        env[n - release :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, release))
    return env


def _voiced(
    n: int, f0_start: float, f0_end: float, start: tuple[float, ...], target: tuple[float, ...]
) -> np.ndarray:
    """Harmonics of a gliding f0, weighted by formant resonances gliding to ``target``."""
    f0 = np.linspace(f0_start, f0_end, n)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    glide = np.minimum(np.linspace(0.0, 1.0 / 0.3, n), 1.0)  # reach the vowel in 30%
    harmonics = np.arange(1, int(BAND_HZ[1] // min(f0_start, f0_end)) + 1)[:, None]
    freq = harmonics * f0[None, :]
    gain = np.zeros_like(freq)
    for (f_start, f_target), bw, g in zip(
        zip(start, target, strict=True), _BANDWIDTHS, _FORMANT_GAINS, strict=True
    ):
        formant = f_start + (f_target - f_start) * glide
        gain += g / (1.0 + ((freq - formant[None, :]) / bw) ** 2)
    gain *= (freq >= BAND_HZ[0] * 0.5) & (freq <= BAND_HZ[1])
    gain /= harmonics**0.5  # glottal source tilt
    out: np.ndarray = (gain * np.sin(harmonics * phase[None, :])).sum(axis=0)
    return out


def _fricative(n: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(n)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < 1800) | (freqs > BAND_HZ[1])] = 0
    out: np.ndarray = np.fft.irfft(spectrum, n) * 0.08
    return out


def _word_audio(
    word: str,
    f0: tuple[float, float],
    voice_rng: np.random.Generator,
    prev_formants: tuple[float, ...],
    speed: float,
) -> tuple[np.ndarray, tuple[float, ...]]:
    letters = re.sub(r"[^a-z]", "", word.lower()) or "a"
    syllables = _SYLLABLE.findall(letters) or [letters + "a"]
    total = int(RATE * len(letters) * CHAR_MS / 1000.0 / speed)
    per = max(total // len(syllables), int(RATE * 0.06))
    parts = []
    formants = prev_formants
    for index, syllable in enumerate(syllables):
        vowel = next((c for c in syllable if c in FORMANTS), "a")
        target = FORMANTS[vowel]
        onset = syllable[: len(syllable) - len(syllable.lstrip("bcdfghjklmnpqrstvwxz"))]
        n_cons = int(per * 0.25) if onset else 0
        n_vowel = per - n_cons
        # Pitch falls across the word and a little between syllables.
        frac = index / max(len(syllables), 1)
        f_start = f0[0] + (f0[1] - f0[0]) * frac
        f_end = f0[0] + (f0[1] - f0[0]) * (index + 1) / len(syllables)
        jitter = 1.0 + 0.03 * float(voice_rng.standard_normal())
        chunk = np.zeros(per)
        if n_cons:
            if onset[-1] in _FRICATIVES:
                chunk[:n_cons] = _fricative(n_cons, voice_rng) * _envelope(n_cons, 96, 96)
            else:  # nasals, liquids, voiced stops: a low, murmured voicing
                murmur = _voiced(
                    n_cons,
                    f_start * jitter,
                    f_start * jitter,
                    (250.0, 1000.0, 2400.0),
                    (250.0, 1000.0, 2400.0),
                )
                chunk[:n_cons] = 0.3 * murmur * _envelope(n_cons, 96, 96)
        voiced = _voiced(n_vowel, f_start * jitter, f_end * jitter, formants, target)
        chunk[n_cons:] = voiced * _envelope(n_vowel, int(RATE * 0.015), int(RATE * 0.04))
        parts.append(chunk)
        formants = target
    return np.concatenate(parts), formants


def speak(text: str, voice: str = "alloy", speed: float = 1.0) -> Iterator[SpokenWord]:
    """The transcript word by word, each with its synthesised audio (pauses included),
    so a response can stream transcript deltas and audio together. Lazy: each word
    costs a few milliseconds, so a long reply never blocks the event loop for long."""
    speed = min(max(speed, 0.25), 1.5)
    rng = np.random.default_rng(zlib.crc32(f"{voice}|{text}".encode()))
    base = pitch_of(voice)
    tokens = _TOKEN.findall(text)
    formants: tuple[float, ...] = FORMANTS["e"]
    for index, token in enumerate(tokens):
        # Declination: pitch drifts from 110% to 85% of the voice's f0 over the reply.
        position = index / max(len(tokens) - 1, 1)
        f0 = (base * (1.1 - 0.25 * position), base * (1.1 - 0.25 * min(position + 0.1, 1.0)))
        audio, formants = _word_audio(token, f0, rng, formants, speed)
        # Each word is normalised on its own (streaming has no global peak); a small
        # deterministic variation keeps it from sounding like a metronome.
        peak = float(np.max(np.abs(audio))) or 1.0
        gain = PEAK * (0.85 + 0.15 * float(rng.random())) * 32767.0 / peak
        pause_ms = WORD_GAP_MS
        if token[-1] in ".!?":
            pause_ms = SENTENCE_PAUSE_MS
        elif token[-1] in ",;:":
            pause_ms = COMMA_PAUSE_MS
        pcm = np.concatenate([audio * gain, np.zeros(int(RATE * pause_ms / 1000.0 / speed))])
        yield SpokenWord(
            text=token if index == 0 else " " + token,
            pcm=np.clip(pcm, -32768, 32767).astype(np.int16),
        )


def synthesize(text: str, voice: str = "alloy", speed: float = 1.0) -> np.ndarray:
    """The whole transcript as 48 kHz mono int16."""
    words = [w.pcm for w in speak(text, voice, speed)]
    return np.concatenate(words) if words else np.zeros(0, dtype=np.int16)


@dataclass(frozen=True)
class Senses:
    """Whether one emulator hears (speech recognition, :mod:`.hearing`) and speaks
    (espeak-ng, :mod:`.speaking`); from :class:`~.settings.EmulatorSettings`."""

    hears: bool = False
    speaks: bool = False
    recognition_timeout_secs: float = 15.0

    @classmethod
    def of(cls, settings: EmulatorSettings) -> Senses:
        return cls(settings.recognition, settings.real_voice, settings.recognition_timeout_secs)


async def utter(
    text: str, voice: str = "alloy", speed: float = 1.0, *, real: bool = True
) -> list[SpokenWord]:
    """The transcript word by word with its audio, made off the event loop: espeak-ng
    speech cut at word boundaries if ``real`` (and espeak-ng works), else the
    synthetic voice."""
    tokens = _TOKEN.findall(text)
    pcm = await speaking.synthesize(text, voice, speed) if real and tokens else None
    if pcm is None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: list(speak(text, voice, speed)))
    pieces = speaking.split_words(tokens, pcm)
    return [
        SpokenWord(text=token if index == 0 else " " + token, pcm=piece)
        for index, (token, piece) in enumerate(zip(tokens, pieces, strict=True))
    ]
