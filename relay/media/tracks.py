"""The relay's two outgoing tracks, one per peer connection, alive for the whole call.

Both read from a small bounded queue filled in real time by the other leg, so the
queue wait itself paces aiortc's sender (which does no pacing of its own). When the
queue is full the oldest frame is dropped: for live audio, late is worse than lost.
Neither ever restarts its timestamps, which would make RTP timestamps go backwards.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
from typing import Generic, TypeVar

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import Packet

T = TypeVar("T")
OPUS_CLOCK = 48000
FRAME_TICKS = OPUS_CLOCK // 50  # 20 ms on the RTP clock
_U32 = 1 << 32
DEFAULT_MAX_FRAMES = 10  # 200 ms of audio: the most a queue may hold before dropping


class _DropOldestQueue(Generic[T]):
    """A bounded FIFO that drops its oldest item when full; never blocks the producer."""

    def __init__(self, max_items: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._max = max_items
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, item: T) -> None:
        if len(self._items) >= self._max:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class UplinkTrack(MediaStreamTrack):
    """Canonical caller audio to OpenAI, as Opus packets the relay encoded itself
    (aiortc's sender only packs them: no encode executor, no re-chunking).

    ``pts`` is on the 48 kHz RTP clock and follows the caller's own timestamps, so a
    lost packet stays a gap in the RTP timestamps and OpenAI's receiver conceals it in
    the right place."""

    kind = "audio"

    def __init__(self, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        super().__init__()
        self._queue: _DropOldestQueue[tuple[bytes, int]] = _DropOldestQueue(max_frames)
        self._last_pts = -FRAME_TICKS
        self._time_base = fractions.Fraction(1, OPUS_CLOCK)
        self.frames_sent = 0

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def push(self, payload: bytes, pts: int) -> None:
        if payload:
            self._queue.put((payload, pts))

    async def recv(self) -> Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        payload, pts = await self._queue.get()
        # Drops upstream of us must never move the clock backwards.
        pts = max(pts, self._last_pts + FRAME_TICKS)
        self._last_pts = pts
        packet = Packet(payload)
        packet.pts = pts
        packet.time_base = self._time_base
        self.frames_sent += 1
        return packet


class PacketForwardTrack(MediaStreamTrack):
    """Agent Opus packets from OpenAI to the browser, forwarded without re-encoding.

    Timestamps keep OpenAI's deltas (unwrapped from 32 bits), so the browser's NetEq
    sees real gaps where packets were lost and conceals them in the right place."""

    kind = "audio"

    def __init__(self, max_packets: int = DEFAULT_MAX_FRAMES) -> None:
        super().__init__()
        self._queue: _DropOldestQueue[tuple[bytes, int]] = _DropOldestQueue(max_packets)
        self._first_ts: int | None = None
        self._last_ts = 0
        self._unwrapped = 0
        self._time_base = fractions.Fraction(1, OPUS_CLOCK)
        self.packets_in = 0
        self.packets_sent = 0

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def push(self, payload: bytes, rtp_timestamp: int) -> None:
        """Called for each in-order packet of the agent's track (on the event loop)."""
        if not payload:
            return
        if self._first_ts is None:
            self._first_ts = self._last_ts = rtp_timestamp
        delta = (rtp_timestamp - self._last_ts) % _U32
        if delta >= _U32 // 2:
            return  # older than what was already forwarded
        self._last_ts = rtp_timestamp
        self._unwrapped += delta
        self.packets_in += 1
        self._queue.put((payload, self._unwrapped))

    async def recv(self) -> Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        payload, pts = await self._queue.get()
        packet = Packet(payload)
        packet.pts = pts
        packet.time_base = self._time_base
        self.packets_sent += 1
        return packet
