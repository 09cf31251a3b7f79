"""The relay's two outgoing tracks, one per peer connection, alive for the whole call.

Both read from a small bounded queue filled in real time by the other leg, so the
queue wait itself paces aiortc's sender (which does no pacing of its own). When the
queue is full the oldest frame is dropped: for live audio, late is worse than lost.
Neither ever restarts its timestamps, which would make RTP timestamps go backwards.
"""

from __future__ import annotations

import collections
import fractions
from collections.abc import Callable

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import Packet

from ..queues import DropOldestQueue
from .opus import FRAME_TICKS, OPUS_CLOCK, RTP_WRAP

DEFAULT_MAX_FRAMES = 10  # 200 ms of audio: the most a queue may hold before dropping
RECENT_FRAMES = 5


class _OpusPacketTrack(MediaStreamTrack):
    """An audio track of ready-made Opus packets, fed by :meth:`_put` and paced by its
    queue; subclasses decide each packet's ``pts`` (48 kHz RTP clock)."""

    kind = "audio"

    def __init__(self, max_packets: int) -> None:
        super().__init__()
        self._queue: DropOldestQueue[tuple[bytes, int]] = DropOldestQueue(max_packets)
        self._time_base = fractions.Fraction(1, OPUS_CLOCK)
        self.packets_sent = 0

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def stop(self) -> None:
        super().stop()
        self._queue.close()  # a sender waiting for audio ends now

    def _next_pts(self, pts: int) -> int:
        return pts

    async def recv(self) -> Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        payload, pts = item
        packet = Packet(payload)
        packet.pts = self._next_pts(pts)
        packet.time_base = self._time_base
        self.packets_sent += 1
        return packet


class UplinkTrack(_OpusPacketTrack):
    """Canonical caller audio to OpenAI, as Opus packets the relay encoded itself
    (aiortc's sender only packs them: no encode executor, no re-chunking).

    ``pts`` is on the 48 kHz RTP clock and follows the caller's own timestamps, so a
    lost packet stays a gap in the RTP timestamps and OpenAI's receiver conceals it in
    the right place."""

    def __init__(self, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        super().__init__(max_frames)
        self._last_pts = -FRAME_TICKS
        #: Set by a WebSocket upstream: it takes the canonical PCM frames themselves
        #: (see :meth:`push_pcm`), and nothing is encoded or sent on this track.
        self.pcm_sink: Callable[[np.ndarray], None] | None = None
        self.pcm_frames_sent = 0
        #: The last frames pushed (a renewed upstream session hears them again: see
        #: relay/upstream/rollover.py).
        self.recent: collections.deque[tuple[bytes, int]] = collections.deque(maxlen=RECENT_FRAMES)

    @property
    def frames_sent(self) -> int:
        return self.packets_sent + self.pcm_frames_sent

    @property
    def wants_pcm(self) -> bool:
        return self.pcm_sink is not None

    def push_pcm(self, pcm: np.ndarray) -> None:
        """One canonical 20 ms frame for an upstream that takes PCM."""
        if self.pcm_sink is not None:
            self.pcm_frames_sent += 1
            self.pcm_sink(pcm)

    def push(self, payload: bytes, pts: int) -> None:
        if payload:
            self._queue.put((payload, pts))
            self.recent.append((payload, pts))

    def _next_pts(self, pts: int) -> int:
        # Drops upstream of us must never move the clock backwards.
        self._last_pts = max(pts, self._last_pts + FRAME_TICKS)
        return self._last_pts


class PacketForwardTrack(_OpusPacketTrack):
    """Agent Opus packets from OpenAI to the browser, forwarded without re-encoding.

    Timestamps keep OpenAI's deltas (unwrapped from 32 bits), so the browser's NetEq
    sees real gaps where packets were lost and conceals them in the right place."""

    def __init__(self, max_packets: int = DEFAULT_MAX_FRAMES) -> None:
        super().__init__(max_packets)
        self._first_ts: int | None = None
        self._last_ts = 0
        self._unwrapped = 0
        self.packets_in = 0

    def push(self, payload: bytes, rtp_timestamp: int) -> None:
        """Called for each in-order packet of the agent's track (on the event loop)."""
        if not payload:
            return
        if self._first_ts is None:
            self._first_ts = self._last_ts = rtp_timestamp
        delta = (rtp_timestamp - self._last_ts) % RTP_WRAP
        if delta >= RTP_WRAP // 2:
            return  # older than what was already forwarded
        self._last_ts = rtp_timestamp
        self._unwrapped += delta
        self.packets_in += 1
        self._queue.put((payload, self._unwrapped))
