"""The synthetic callers of ``bench.load`` (the browser's role), all in one process.

Each caller is an aiortc peer connection on 127.0.0.1 that offers one audio track and
the ``oai-events`` data channel, POSTs the offer (``application/sdp``) to
``/v1/realtime/calls`` and sends pre-encoded browser-like Opus, paced at 20 ms, through
the lean path of :mod:`bench.load_lean` (downlink RTP packets are counted, not decoded).
The probe caller instead uses aiortc's own path: a paced ``av.Packet`` track of tone
bursts, and a decoding receiver that finds their onsets. With ``transport="tcp"`` a
caller's media reaches the relay over ICE-TCP only (:mod:`bench.ice_tcp_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

import aiohttp
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from bench.common import rtc_config
from bench.ice_tcp_client import attach_tcp, tcp_only_offer
from bench.load_lean import IdleTrack, Pump, RtpStream, audio_transceiver, count_incoming_rtp
from bench.load_media import EncodedLoop, PacketCounter, PacketSource
from bench.tones import OnsetReceiver
from relay import aiortc_patches


class CallFailed(Exception):
    pass


class LoadCaller:
    def __init__(
        self, loop: EncodedLoop, pump: Pump | None, probe: bool = False, transport: str = "udp"
    ) -> None:
        self.probe = probe
        self.transport = transport
        self.pc = RTCPeerConnection(rtc_config())
        self.counter = PacketCounter()
        self.source: PacketSource | None = None
        self.stream: RtpStream | None = None
        self._pump = pump
        self._loop = loop
        if probe or pump is None:
            self.source = PacketSource(loop, 0, record_onsets=probe)
            self.pc.addTrack(self.source)
        else:
            self.pc.addTransceiver(IdleTrack(), direction="sendrecv")
        self.receiver = OnsetReceiver() if probe else None
        self.channel: RTCDataChannel = self.pc.createDataChannel("oai-events")
        aiortc_patches.adopt(self.pc)  # the harness adds no jitter buffer of its own
        if self.source is not None:
            buffer = aiortc_patches.audio_buffer_of(audio_transceiver(self.pc).receiver)
            buffer.packet_sink = self.counter
            buffer.decode = probe
        self.channel.on("open", self._on_open)
        self.channel.on("message", self._on_message)
        self.events_received = 0
        self.location = ""
        self.setup_ms: float | None = None
        self.closed = False
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.receiver is not None:
            self.receiver.start(track)

    def _on_open(self) -> None:
        update = {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": "You are a benchmark."},
        }
        self.channel.send(json.dumps(update))

    def _on_message(self, message: str | bytes) -> None:
        self.events_received += 1

    async def connect(self, http: aiohttp.ClientSession, url: str, timeout: float = 30) -> None:
        """Offer, POST, answer. ``setup_ms`` is POST sent -> 201 received."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        if self.transport == "tcp":
            offer = tcp_only_offer(offer)
        headers = {"Content-Type": "application/sdp"}
        started = time.monotonic()
        try:
            async with http.post(
                url,
                data=offer,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                body = await response.text()
                if response.status != 201:
                    raise CallFailed(f"POST {url} -> HTTP {response.status}: {body.strip()[:300]}")
                self.location = response.headers.get("Location", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CallFailed(f"POST {url}: {type(exc).__name__}: {exc}") from None
        self.setup_ms = (time.monotonic() - started) * 1000
        if self.transport == "tcp":
            try:
                body, _ = await attach_tcp(self.pc, body)
            except (OSError, TimeoutError) as exc:
                raise CallFailed(f"ICE-TCP to the relay: {type(exc).__name__}: {exc}") from None
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        if self.source is None and self._pump is not None:
            count_incoming_rtp(self.pc, self.counter.count)
            offset = random.randrange(len(self._loop.packets))
            self.stream = RtpStream(audio_transceiver(self.pc), self._loop.packets, offset)
            self._pump.add(self.stream)

    @property
    def ended(self) -> bool:
        """The call ended under this caller (it did not hang up itself)."""
        if self.closed:
            return False
        if self.stream is not None and self.stream.failed:
            return True
        return self.pc.connectionState in ("closed", "failed")

    @property
    def sent(self) -> int:
        if self.source is not None:
            return self.source.sent
        return self.stream.sent if self.stream is not None else 0

    async def hangup(self, http: aiohttp.ClientSession, base: str) -> None:
        """POST .../hangup (bounded, best effort), then close the peer connection."""
        if self.closed:
            return
        self.closed = True
        if self.location:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(
                    base + self.location + "/hangup", timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    await response.read()
        await self.close()

    async def close(self) -> None:
        self.closed = True
        if self.stream is not None and self._pump is not None:
            self._pump.remove(self.stream)
        if self.receiver is not None:
            await self.receiver.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 10)
