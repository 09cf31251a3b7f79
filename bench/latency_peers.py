"""The two ends of a ``bench.latency`` call, both in the benchmark's process.

* :class:`Caller`, the browser's role: an aiortc PC that creates the ``oai-events``
  data channel before its offer, POSTs the offer (``application/sdp``) to
  ``/v1/realtime/calls``, sends tone bursts and decodes the downlink;
* :class:`ProbeCall`, the upstream's answering PC for one call (see
  :mod:`bench.latency_probe`): decodes the uplink and sends its own bursts down.

Each end sends paced 48 kHz frames of tone bursts (:mod:`bench.tones`, digital silence
between them) from a :class:`ToneSource`, which records when each onset left and can
drop exactly one RTP packet (mid-silence) through a :class:`PacketDropper`; and a
:class:`DcEndpoint` sends a timestamped event every 200 ms on the data channel.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Callable

import aiohttp
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import is_rtcp
from av import AudioFrame

from bench.common import Pacing, drain, rtc_config
from bench.ice_tcp_client import TcpLink, attach_tcp, tcp_only_offer
from bench.tones import FRAME, PERIOD, RATE, THRESHOLD, OnsetReceiver, burst_period
from relay import aiortc_patches

DROP_FRAME = 15  # frame of the period whose packet is dropped: mid-silence
DC_INTERVAL_S = 0.2


class VariantFailed(Exception):
    pass


def tone_period() -> tuple[np.ndarray, int]:
    """One 500 ms period, s16 stereo interleaved, and the index of its onset sample."""
    mono = np.round(burst_period()).astype(np.int16)
    onset = int(np.flatnonzero(np.abs(mono.astype(np.int32)) > THRESHOLD)[0])
    return np.repeat(mono, 2), onset


class ToneSource(MediaStreamTrack):
    """Paced 20 ms frames of the tone-burst signal; records when each onset left."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._signal, self._onset = tone_period()
        self._time_base = fractions.Fraction(1, RATE)
        self._pts = 0
        self._pacing = Pacing()
        self._drop: Callable[[], None] | None = None
        self.onsets: list[float] = []
        self.frames = 0
        self.drop_time: float | None = None

    def drop_one_packet(self, drop: Callable[[], None]) -> None:
        """Call ``drop`` when the next mid-silence frame leaves: its packet is lost."""
        self._drop = drop

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacing.wait(self._pts / RATE)
        pos = self._pts % PERIOD
        chunk = self._signal[2 * pos : 2 * (pos + FRAME)]
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += FRAME
        self.frames += 1
        released = time.monotonic()
        if pos <= self._onset < pos + FRAME:
            self.onsets.append(released + (self._onset - pos) / RATE)
        if self._drop is not None and pos == DROP_FRAME * FRAME:
            self._drop()
            self._drop = None
            self.drop_time = released
        return frame


class PacketDropper:
    """Skips the next outgoing RTP packet of a sender (wraps its DTLS transport's
    ``_send_rtp`` on the instance; RTCP is never dropped)."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._armed = False
        self._wrapped: set[int] = set()
        self.dropped = 0

    def arm(self) -> None:
        transport = self._sender.transport
        if id(transport) not in self._wrapped:
            self._wrapped.add(id(transport))
            original = transport._send_rtp

            async def send_rtp(data: bytes) -> None:
                if self._armed and not is_rtcp(data):
                    self._armed = False
                    self.dropped += 1
                    return
                await original(data)

            transport._send_rtp = send_rtp  # type: ignore[method-assign]
        self._armed = True


class DcEndpoint:
    """Sends a timestamped event every 200 ms on an ``oai-events`` channel; records the
    one-way latency of the other side's events."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sent = 0
        self.latencies: list[float] = []
        self._channel: RTCDataChannel | None = None
        self._task: asyncio.Task[None] | None = None

    def attach(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("message", self._on_message)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        seq = 0
        while True:
            channel = self._channel
            if channel is not None and channel.readyState == "open":
                event = {"type": self.kind, "seq": seq, "t": time.monotonic()}
                channel.send(json.dumps(event))
                self.sent += 1
                seq += 1
            await asyncio.sleep(DC_INTERVAL_S)

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        try:
            event = json.loads(message)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("type", self.kind) != self.kind:
            sent = event.get("t")
            if isinstance(sent, float):
                self.latencies.append(now - sent)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class _ToneEnd:
    """What both ends share: a PC, a tone source, a decoding receiver, the events."""

    def __init__(self, event_kind: str) -> None:
        self.pc = RTCPeerConnection(rtc_config())
        self.source = ToneSource()
        self.receiver = OnsetReceiver()
        self.dc = DcEndpoint(event_kind)
        self._drains: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self.receiver.started:
            self.receiver.start(track)
        else:
            self._drains.append(asyncio.ensure_future(drain(track)))

    async def close(self) -> None:
        self.dc.stop()
        await self.receiver.stop()
        for task in self._drains:
            task.cancel()
        await self.pc.close()


class Caller(_ToneEnd):
    """The browser's role: offers audio + ``oai-events``, sends bursts, decodes downlink.

    ``transport="tcp"``: its media reaches the relay only over ICE-TCP (an active
    candidate to the relay's passive one on its HTTP port, :mod:`bench.ice_tcp_client`),
    like a browser on a network that lets only TCP to the relay's port through."""

    def __init__(self, transport: str = "udp") -> None:
        super().__init__("bench.ping")
        self.transport = transport
        self.tcp_link: TcpLink | None = None
        self.sender = self.pc.addTrack(self.source)
        self.dropper = PacketDropper(self.sender)
        self.dc.attach(self.pc.createDataChannel("oai-events"))
        aiortc_patches.adopt(self.pc)  # the harness adds no jitter buffer of its own

    async def connect(self, http: aiohttp.ClientSession, url: str) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        if self.transport == "tcp":
            offer = tcp_only_offer(offer)
        headers = {"Content-Type": "application/sdp"}
        async with http.post(url, data=offer, headers=headers) as response:
            body = await response.text()
            location = response.headers.get("Location", "")
            if response.status != 201:
                raise VariantFailed(f"POST {url} -> HTTP {response.status}: {body.strip()[:800]}")
        if self.transport == "tcp":
            try:
                body, self.tcp_link = await attach_tcp(self.pc, body)
            except (OSError, TimeoutError) as exc:
                raise VariantFailed(f"ICE-TCP to the relay: {exc!r}") from None
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return location


class ProbeCall(_ToneEnd):
    """The probe's answering PC for one call: decodes the uplink, sends bursts down."""

    def __init__(self, call_id: str) -> None:
        super().__init__("bench.pong")
        self.id = call_id
        self.dropper: PacketDropper | None = None
        self.hung_up = False
        self.pc.on("datachannel", self.dc.attach)

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        aiortc_patches.adopt(self.pc)
        sender = self.pc.addTrack(self.source)
        self.dropper = PacketDropper(sender)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)
