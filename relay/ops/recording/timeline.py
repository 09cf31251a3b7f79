"""The recording's sample timeline: both speakers' frames placed by their wall-clock
stamps, rendered in order into stereo blocks (caller left, agent right) with silence
wherever no frame was."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from relay.taps import CANONICAL_RATE, Speaker

from .wav import CHANNELS

#: The WAV channel of each speaker.
CHANNEL_OF: Final[dict[Speaker, int]] = {"caller": 0, "agent": 1}
_RENDER_BLOCK: Final = 10 * CANONICAL_RATE

Segment = tuple[int, np.ndarray]  # (first sample, samples)


@dataclass
class _Track:
    """One channel's frames waiting to be rendered, placed on the sample timeline."""

    segments: list[Segment] = field(default_factory=list)
    next_pos: int | None = None


class Timeline:
    """Sample ``n`` of the timeline was heard at ``t0 + n / 24000`` (wall clock)."""

    def __init__(self, t0: float, tolerance_samples: int) -> None:
        self._t0 = t0
        self._tolerance = tolerance_samples
        self._tracks = {speaker: _Track() for speaker in CHANNEL_OF}
        #: Samples rendered so far: everything before is final.
        self.rendered = 0
        #: Samples that arrived after their place had been rendered (left out).
        self.late_samples = 0

    def sample_at(self, wallclock: float) -> int:
        return round((wallclock - self._t0) * CANONICAL_RATE)

    def add(self, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        """Place a frame right after the previous one unless its stamp says otherwise.

        Stamps jitter by a few ms; following them exactly would chop the audio. A frame
        within ``tolerance`` of where the last one ended is contiguous; farther means
        a real gap (or overlap), so the frame goes where its stamp says."""
        track = self._tracks[speaker]
        stamped = self.sample_at(wallclock)
        pos = track.next_pos
        if pos is None or abs(stamped - pos) > self._tolerance:
            pos = stamped
        track.next_pos = pos + len(pcm)
        track.segments.append((pos, pcm))

    def pending_end(self) -> int:
        """The sample just after the last frame received (0 if none is pending)."""
        ends = [pos + len(pcm) for t in self._tracks.values() for pos, pcm in t.segments]
        return max(ends, default=0)

    def render(self, end: int) -> Iterator[np.ndarray]:
        """Stereo int16 blocks from :attr:`rendered` up to sample ``end``.

        Blocks hold at most ``_RENDER_BLOCK`` samples, so that a long stall of the
        writer never allocates one huge buffer."""
        while self.rendered < end:
            start = self.rendered
            stop = min(end, start + _RENDER_BLOCK)
            block = np.zeros((stop - start, CHANNELS), dtype=np.int16)
            for speaker, track in self._tracks.items():
                channel = block[:, CHANNEL_OF[speaker]]
                track.segments = self._paste(track.segments, channel, start, stop)
            self.rendered = stop
            yield block

    def _paste(
        self, segments: list[Segment], out: np.ndarray, start: int, end: int
    ) -> list[Segment]:
        """Copy the parts of ``segments`` inside [start, end) into ``out``; return
        what lies beyond ``end``. Parts before ``start`` arrived too late: counted."""
        remaining: list[Segment] = []
        for pos, pcm in segments:
            stop = pos + len(pcm)
            if pos < start:
                self.late_samples += min(stop, start) - pos
            lo, hi = max(pos, start), min(stop, end)
            if lo < hi:
                out[lo - start : hi - start] = pcm[lo - pos : hi - pos]
            if stop > end:
                cut = max(pos, end)
                remaining.append((cut, pcm[cut - pos :]))
        return remaining
