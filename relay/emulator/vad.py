"""Energy-based server VAD on the audio the emulator actually receives.

Threshold mapping (the session's ``turn_detection.threshold``, 0..1): a 20 ms frame is
*speech* when its RMS level is above

    level_dbfs = -60 + 50 * threshold

so 0.0 -> -60 dBFS (anything but near-silence), the default 0.5 -> -35 dBFS (normal
speech into a microphone is -30..-12 dBFS; a quiet room is below -50), 0.8 -> -20 dBFS,
1.0 -> -10 dBFS (only shouting). Being absolute, it deliberately reacts to loud steady
noise, which is what lets relay tests show that noise suppression keeps noise from
triggering turns.

Speech starts after ``ONSET_MS`` of consecutive speech frames (clicks do not start a
turn); ``audio_start_ms`` is the first speech frame minus ``prefix_padding_ms``
(OpenAI includes the padding). Speech stops once ``silence_duration_ms`` of non-speech
has followed the last speech frame; ``audio_end_ms`` includes that silence, as
OpenAI documents.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Consecutive speech needed before ``speech_started`` (two 20 ms frames).
ONSET_MS = 40.0


def threshold_to_dbfs(threshold: float) -> float:
    return -60.0 + 50.0 * min(max(threshold, 0.0), 1.0)


def frame_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (-120 for digital silence)."""
    if samples.size == 0:
        return -120.0
    x = samples.astype(np.float64) / 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * float(np.log10(max(rms, 1e-6)))


class SpeechStarted(NamedTuple):
    audio_start_ms: int
    #: Where speech was actually detected (without the prefix padding).
    onset_ms: int


class SpeechStopped(NamedTuple):
    audio_end_ms: int
    #: Speech proper: first to last speech frame.
    speech_start_ms: int
    speech_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    def __init__(
        self, threshold: float = 0.5, prefix_padding_ms: int = 300, silence_duration_ms: int = 200
    ) -> None:
        self.configure(threshold, prefix_padding_ms, silence_duration_ms)
        self.in_speech = False
        self._run_start: float | None = None  # start of the current run of speech frames
        self._speech_start = 0.0
        self._last_speech_end = 0.0

    def configure(self, threshold: float, prefix_padding_ms: int, silence_duration_ms: int) -> None:
        self.level_dbfs = threshold_to_dbfs(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms

    def reset(self) -> None:
        self.in_speech = False
        self._run_start = None

    def process(self, start_ms: float, duration_ms: float, dbfs: float) -> VadEvent | None:
        """Feed one frame (its position on the input timeline and its level)."""
        end_ms = start_ms + duration_ms
        if dbfs > self.level_dbfs:
            if self._run_start is None:
                self._run_start = start_ms
            self._last_speech_end = end_ms
            if not self.in_speech and end_ms - self._run_start >= ONSET_MS:
                self.in_speech = True
                self._speech_start = self._run_start
                padded = max(0.0, self._run_start - self.prefix_padding_ms)
                return SpeechStarted(audio_start_ms=int(padded), onset_ms=int(self._run_start))
            return None
        self._run_start = None
        if self.in_speech and end_ms - self._last_speech_end >= self.silence_duration_ms:
            self.in_speech = False
            return SpeechStopped(
                audio_end_ms=int(self._last_speech_end + self.silence_duration_ms),
                speech_start_ms=int(self._speech_start),
                speech_end_ms=int(self._last_speech_end),
            )
        return None
