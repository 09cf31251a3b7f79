"""Per-frame processing times, collected on the media path and read by the stats tick."""

from __future__ import annotations

MAX_SAMPLES = 500  # 10 s of 20 ms frames: more than one stats interval holds


class FrameTimes:
    """Durations (seconds) recorded since the last :meth:`take`; bounded, so a stats
    reader that stops never makes it grow."""

    def __init__(self) -> None:
        self._samples: list[float] = []

    def add(self, seconds: float) -> None:
        if len(self._samples) < MAX_SAMPLES:
            self._samples.append(seconds)

    def take(self) -> tuple[float, ...]:
        samples, self._samples = tuple(self._samples), []
        return samples
