"""The agent's audio from a WebSocket upstream, played out in real time.

OpenAI's WebSocket sends a response's audio as ``response.output_audio.delta`` (base64
PCM16, 24 kHz) as fast as it generates it. The caller leg expects what a WebRTC
upstream gives: one Opus packet every 20 ms. :class:`AgentPlayout` queues each
response's PCM and, on its own 20 ms clock, cuts a canonical frame (silence when
nothing is queued, as OpenAI's track does), encodes it with the relay's 24 kHz Opus
encoder and hands it to :meth:`AgentAudio.on_packet` with a steady RTP timestamp.

Because the relay does the playing, it also knows what OpenAI's WebRTC side would:
when a response's audio starts and stops going out (``output_audio_buffer.started`` /
``.stopped``), and on a barge-in how much of it was played (:meth:`clear`)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..media.opus import FRAME_TICKS, RTP_WRAP, Opus24kEncoder
from ..taps import CANONICAL_FRAME_SAMPLES, CANONICAL_RATE

FRAME_SECS = CANONICAL_FRAME_SAMPLES / CANONICAL_RATE
#: A stalled event loop resynchronises instead of bursting frames out.
MAX_LAG_SECS = 0.2
#: Agent audio queued at most (OpenAI generates faster than real time): 10 minutes.
MAX_QUEUED_SAMPLES = CANONICAL_RATE * 600
#: Responses remembered as cleared (their late deltas are dropped).
KEEP_CLEARED = 64

PlaybackEvent = Callable[[str, str], None]
"""Receives ``(kind, response_id)``: kind is ``started``, ``stopped`` or ``cleared``."""


@dataclass
class _Turn:
    response_id: str
    item_id: str
    chunks: deque[np.ndarray] = field(default_factory=deque)
    offset: int = 0  # into chunks[0]
    queued: int = 0
    played: int = 0  # samples sent
    ended: bool = False
    started: bool = False


@dataclass(frozen=True)
class Cut:
    """A response cut short: its item, and how much of it was played."""

    response_id: str
    item_id: str
    played_ms: int


class AgentPlayout:
    """Queued agent PCM -> paced Opus packets (see the module docstring)."""

    def __init__(
        self,
        on_packet: Callable[[bytes, int], None],
        on_playback: PlaybackEvent,
        tap: Callable[[np.ndarray, float], None] | None = None,
    ) -> None:
        self._on_packet = on_packet
        self._on_playback = on_playback
        #: Where played frames go for observers, while one wants them.
        self.tap = tap
        self._encoder = Opus24kEncoder()
        self._turns: deque[_Turn] = deque()
        self._cleared: deque[str] = deque(maxlen=KEEP_CLEARED)
        self._queued = 0
        self._timestamp = 0
        self.frames_out = 0
        self.dropped = 0
        self._silence = np.zeros(CANONICAL_FRAME_SAMPLES, dtype=np.int16)

    # -- producer side (the upstream's events) --

    def add(self, response_id: str, item_id: str, pcm: np.ndarray) -> None:
        if response_id in self._cleared or pcm.size == 0:
            return
        if self._queued + pcm.size > MAX_QUEUED_SAMPLES:
            self.dropped += 1
            return
        turn = self._turn(response_id)
        if turn is None or turn.ended:
            turn = _Turn(response_id, item_id)
            self._turns.append(turn)
        turn.chunks.append(pcm)
        turn.queued += int(pcm.size)
        self._queued += int(pcm.size)

    def end(self, response_id: str) -> None:
        """No more audio for this response: ``stopped`` once it has played out."""
        turn = self._turn(response_id)
        if turn is not None:
            turn.ended = True
            if turn.queued == 0:
                self._finish(turn)

    def clear(self) -> list[Cut]:
        """Barge-in: drop every queued response; each is ``cleared`` and returned with
        what was played of it."""
        cuts = []
        while self._turns:
            turn = self._turns.popleft()
            self._queued -= turn.queued
            self._cleared.append(turn.response_id)
            self._on_playback("cleared", turn.response_id)
            cuts.append(Cut(turn.response_id, turn.item_id, _ms(turn.played)))
        return cuts

    @property
    def playing(self) -> bool:
        return bool(self._turns)

    def _turn(self, response_id: str) -> _Turn | None:
        return next((t for t in reversed(self._turns) if t.response_id == response_id), None)

    def _finish(self, turn: _Turn) -> None:
        if turn in self._turns:
            self._turns.remove(turn)
        if turn.started:
            self._on_playback("stopped", turn.response_id)

    # -- the clock --

    def next_frame(self) -> np.ndarray:
        """The next 20 ms to play (silence when nothing is queued)."""
        if not self._turns or self._turns[0].queued == 0:
            return self._silence
        turn = self._turns[0]
        if not turn.started:
            turn.started = True
            self._on_playback("started", turn.response_id)
        out = np.zeros(CANONICAL_FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < out.size and turn.chunks:
            chunk = turn.chunks[0]
            n = min(out.size - filled, chunk.size - turn.offset)
            out[filled : filled + n] = chunk[turn.offset : turn.offset + n]
            filled += n
            turn.offset += n
            if turn.offset >= chunk.size:
                turn.chunks.popleft()
                turn.offset = 0
        turn.queued -= filled
        turn.played += filled
        self._queued -= filled
        if turn.queued == 0 and turn.ended:
            self._finish(turn)
        return out

    def play_one(self) -> None:
        """Encode and send one frame (also what a test or benchmark drives by hand)."""
        frame = self.next_frame()
        self._on_packet(self._encoder.encode(frame), self._timestamp)
        self._timestamp = (self._timestamp + FRAME_TICKS) % RTP_WRAP
        self.frames_out += 1
        if self.tap is not None:
            self.tap(frame, time.time())

    async def run(self) -> None:
        """Play a frame every 20 ms until cancelled (never faster; a stall skips)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while True:
            wait = start + sent * FRAME_SECS - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -MAX_LAG_SECS:
                start, sent = loop.time(), 0
            self.play_one()
            sent += 1


def _ms(samples: int) -> int:
    return samples * 1000 // CANONICAL_RATE
