"""A lean RTP path for the load side of ``bench.load`` (callers and light upstream).

aiortc spends ~100 us of Python per audio packet sent (sender coroutine, RTP object,
header extensions) and more per packet received (queue hand-offs, a coroutine per
datagram, SRTP unprotect, parsing, receiver statistics). On the shared load core that
would make the load generator, not the relay, the limit. So, for every call except
the latency probe:

* **sending**: the peer connection still negotiates a normal ``sendrecv`` audio
  transceiver (its track never yields a frame), and one :class:`Pump` task per process
  sends each stream's next pre-encoded Opus packet every 20 ms: a 12-byte RTP header
  (negotiated payload type, the sender's SSRC, +960 per packet) + payload, SRTP-
  protected with the DTLS transport's own session and written to the nominated ICE
  pair's socket. Streams are spread over 4 phases 5 ms apart, as independent callers'
  packets would be.
* **receiving**: each ICE connection's ``data_received`` is wrapped so that SRTP packets
  (not RTCP) are counted and dropped before aiortc's receive path; DTLS (the data
  channel), RTCP and STUN go on as usual.

These reach into aiortc 1.16 / aioice 0.13 internals (pinned by the project). The relay
under test is untouched: it sees ordinary SRTP from a normal DTLS-SRTP session.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError

from bench.common import cancel_and_wait
from relay import aiortc_patches

FRAME_S = 0.02
PHASES = 4
_HEADER = struct.Struct("!BBHII")


class IdleTrack(MediaStreamTrack):
    """An audio track that never yields a frame (its sender stays idle)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stopped.set()


def count_incoming_rtp(pc: RTCPeerConnection, count: Callable[[], None]) -> None:
    """Count (and drop) SRTP packets arriving on ``pc``'s ICE connections."""
    for connection in aiortc_patches.ice_connections(pc):
        original = connection.data_received

        def data_received(
            data: bytes, component: int, _original: Any = original, _count: Any = count
        ) -> None:
            # RTP/RTCP have version 2 (first byte 128..191); RTCP packet types are
            # 192..208 in the second byte (RFC 5761).
            if 127 < data[0] < 192 and not (191 < data[1] < 209):
                _count()
                return
            _original(data, component)

        connection.data_received = data_received


class RtpStream:
    """One call's outgoing audio, sent by the :class:`Pump`."""

    def __init__(self, transceiver: RTCRtpTransceiver, packets: list[bytes], offset: int) -> None:
        self._transceiver = transceiver
        self._packets = packets
        self._index = offset % len(packets)
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._ssrc: int = transceiver.sender._ssrc  # type: ignore[attr-defined]
        self._pt: int | None = None
        self._srtp: Any = None
        self._pair: Any = None
        self.sent = 0
        self.failed: str | None = None
        self.closed = False

    def _ready(self) -> bool:
        dtls = self._transceiver.sender.transport
        if dtls is None or dtls.state != "connected":
            return False
        codecs = self._transceiver._codecs  # type: ignore[attr-defined]
        if not codecs:
            return False
        self._pt = codecs[0].payloadType
        self._srtp = dtls._tx_srtp  # type: ignore[attr-defined]
        connection = dtls.transport._connection  # type: ignore[attr-defined]
        self._pair = connection._nominated.get(1)
        return self._pair is not None and self._srtp is not None

    def send_next(self) -> None:
        if self.closed:
            return
        if self._pair is None and not self._ready():
            return
        marker = 0x80 if self.sent == 0 else 0
        header = _HEADER.pack(0x80, marker | self._pt, self._seq, self._ts, self._ssrc)
        payload = self._packets[self._index]
        try:
            protected = self._srtp.protect(header + payload)
            transport = self._pair.protocol.transport
            if transport is None:
                raise ConnectionError("ICE socket closed")
            transport.sendto(protected, self._pair.remote_addr)
        except Exception as exc:  # the call is closing under us
            self.failed = f"{type(exc).__name__}: {exc}"
            self.closed = True
            return
        self._index = (self._index + 1) % len(self._packets)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + 960) & 0xFFFFFFFF
        self.sent += 1


class Pump:
    """Sends every registered stream's next packet every 20 ms (4 phases, 5 ms apart)."""

    def __init__(self) -> None:
        self._phases: list[list[RtpStream]] = [[] for _ in range(PHASES)]
        self._next_phase = 0
        self._task: asyncio.Task[None] | None = None
        #: Ticks that ran more than 5 ms late, and the worst lateness (s).
        self.late_ticks = 0
        self.ticks = 0
        self.max_late = 0.0

    def add(self, stream: RtpStream) -> None:
        self._phases[self._next_phase].append(stream)
        self._next_phase = (self._next_phase + 1) % PHASES

    def remove(self, stream: RtpStream) -> None:
        stream.closed = True
        for phase in self._phases:
            if stream in phase:
                phase.remove(stream)

    def take_lateness(self) -> tuple[int, int, float]:
        """(ticks, late ticks, worst lateness s) since the last take."""
        out = (self.ticks, self.late_ticks, self.max_late)
        self.ticks = self.late_ticks = 0
        self.max_late = 0.0
        return out

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        step = FRAME_S / PHASES
        start = time.monotonic()
        tick = 0
        while True:
            due = start + tick * step
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late = -wait
                if late > step:
                    self.late_ticks += 1
                self.max_late = max(self.max_late, late)
                if late > 1.0:  # a stall: resynchronise rather than burst for seconds
                    start += late
            self.ticks += 1
            for stream in list(self._phases[tick % PHASES]):
                stream.send_next()
            tick += 1

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


def audio_transceiver(pc: RTCPeerConnection) -> RTCRtpTransceiver:
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            return transceiver
    raise RuntimeError("no audio transceiver")
