"""The agent's outgoing audio track: paced 20 ms frames, silence when idle.

aiortc's sender encodes whatever ``recv()`` returns as fast as it returns, so the track
paces itself on its own monotonic pts (which never restarts: a restart would send RTP
timestamps backwards). Audio is queued per response; the track reports when a
response's audio really starts and stops going out, which is what OpenAI's
``output_audio_buffer.started`` / ``.stopped`` mean over WebRTC.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
#: If the event loop stalls longer than this, resynchronise instead of bursting.
MAX_LAG_SECS = 0.2


@dataclass
class _Segment:
    response_id: str
    samples: np.ndarray
    offset: int = 0


@dataclass(frozen=True)
class ClearedAudio:
    response_id: str
    played_ms: int


class AgentAudioTrack(MediaStreamTrack):
    """48 kHz mono s16 frames of 20 ms: queued agent speech, else silence."""

    kind = "audio"

    def __init__(
        self,
        on_started: Callable[[str], None] | None = None,
        on_stopped: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_started = on_started
        self.on_stopped = on_stopped
        self._segments: deque[_Segment] = deque()
        self._open: set[str] = set()  # responses that may still add audio
        self._started: set[str] = set()  # started and not yet stopped/cleared
        self._played: dict[str, int] = {}  # samples sent per response (recent ones)
        self._pts = 0
        self._clock_start: float | None = None
        self.frames_sent = 0
        self.audio_frames_sent = 0

    # -- producer side --

    def begin(self, response_id: str, item_id: str = "") -> None:
        """A response will queue audio (until :meth:`end`); its item is not needed."""
        self._open.add(response_id)
        self._played.setdefault(response_id, 0)
        while len(self._played) > 64:
            del self._played[next(iter(self._played))]

    def enqueue(self, response_id: str, samples: np.ndarray) -> None:
        if response_id not in self._open or samples.size == 0:
            return  # cleared or finished: late audio is dropped, as OpenAI does
        self._segments.append(_Segment(response_id, samples.astype(np.int16, copy=False)))

    def end(self, response_id: str) -> None:
        """No more audio for this response; ``stopped`` fires when it has played out."""
        self._open.discard(response_id)
        if response_id in self._started and not self._queued(response_id):
            self._stop(response_id)

    def clear(self) -> list[ClearedAudio]:
        """Drop all queued audio; returns each interrupted response and how much of
        it was actually sent."""
        interrupted = {s.response_id for s in self._segments} | self._started
        self._segments.clear()
        cleared = []
        order = {rid: i for i, rid in enumerate(self._played)}
        for response_id in sorted(interrupted, key=lambda rid: order.get(rid, len(order))):
            self._open.discard(response_id)
            self._started.discard(response_id)
            cleared.append(ClearedAudio(response_id, self.played_ms(response_id)))
        return cleared

    def played_ms(self, response_id: str) -> int:
        return self._played.get(response_id, 0) * 1000 // RATE

    @property
    def playing(self) -> bool:
        return bool(self._segments or self._started)

    def playing_response(self) -> str | None:
        if self._segments:
            return self._segments[0].response_id
        return next(iter(self._started), None)

    def _queued(self, response_id: str) -> bool:
        return any(s.response_id == response_id for s in self._segments)

    def _stop(self, response_id: str) -> None:
        self._started.discard(response_id)
        if self.on_stopped is not None:
            self.on_stopped(response_id)

    def stop(self) -> None:
        """End the track and drop the audio still queued (an ended call may be
        remembered a while; its unplayed speech need not be)."""
        super().stop()
        self._segments.clear()

    # -- aiortc side --

    def _take(self) -> np.ndarray:
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        finished: list[str] = []
        while filled < FRAME_SAMPLES and self._segments:
            segment = self._segments[0]
            if segment.response_id not in self._started:
                self._started.add(segment.response_id)
                if self.on_started is not None:
                    self.on_started(segment.response_id)
            n = min(FRAME_SAMPLES - filled, segment.samples.size - segment.offset)
            out[filled : filled + n] = segment.samples[segment.offset : segment.offset + n]
            filled += n
            segment.offset += n
            self._played[segment.response_id] = self._played.get(segment.response_id, 0) + n
            if segment.offset >= segment.samples.size:
                self._segments.popleft()
                rid = segment.response_id
                if rid not in self._open and not self._queued(rid):
                    finished.append(rid)
        if filled:
            self.audio_frames_sent += 1
        for response_id in finished:
            if response_id in self._started:
                self._stop(response_id)
        return out

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        wait = self._clock_start + self._pts / RATE - now
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -MAX_LAG_SECS:
            self._clock_start = now - self._pts / RATE
        if self.readyState != "live":
            raise MediaStreamError
        samples = self._take()
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        self.frames_sent += 1
        return frame
