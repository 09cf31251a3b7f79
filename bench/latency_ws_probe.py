"""The upstream end of a ``bench.latency`` call over OpenAI's WebSocket transport (the
``-ws`` variants: ``RELAY_UPSTREAM_TRANSPORT=websocket``): ``GET /v1/realtime?model=``
on the probe server, answered by a :class:`ProbeSocket` with the same face as
:class:`~bench.latency_peers.ProbeCall` (``source``, ``receiver``, ``dropper``, ``dc``).

* uplink: each ``input_audio_buffer.append`` (24 kHz PCM16) is fed to an
  :class:`~bench.tones.OnsetReceiver` at its arrival time;
* downlink: the tone-burst signal at 24 kHz, one ``response.output_audio.delta`` of
  20 ms every 20 ms, paced in real time (the relay's own pacer then plays it; what is
  measured is what the relay adds to audio arriving as it is generated);
* events: the relay's ``session.update`` is answered with ``session.updated``; the
  harness's timestamped pings go both ways as on a data channel.

There is no packet loss to provoke on TCP: the dropper drops nothing (``dropped`` 0).
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from av import AudioFrame

from bench.common import Pacing, cancel_and_wait
from bench.latency_peers import DcEndpoint
from bench.tones import THRESHOLD, OnsetReceiver, burst_period

WS_RATE = 24000
WS_FRAME = 480  # 20 ms


class _SocketChannel:
    """The WebSocket as a data channel, for :class:`DcEndpoint` (duck-typed)."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self.readyState = "open"
        self._send = send
        self.handler: Callable[[str], None] | None = None

    def on(self, name: str, handler: Callable[[str], None]) -> None:
        if name == "message":
            self.handler = handler

    def send(self, message: str) -> None:
        self._send(message)


class _NoDropper:
    dropped = 0

    def arm(self) -> None:
        return None


class DeltaToneSource:
    """The tone bursts at 24 kHz, 20 ms per delta, paced; records each onset's send."""

    def __init__(self, send: Callable[[str], None]) -> None:
        period = np.round(burst_period()[::2]).astype("<i2")  # 48 -> 24 kHz
        self._signal = period
        self._onset = int(np.flatnonzero(np.abs(period.astype(np.int32)) > THRESHOLD)[0])
        self._send = send
        self._pacing = Pacing()
        self.onsets: list[float] = []
        self.frames = 0
        self.drop_time: float | None = None
        self._response = "resp_probe" + secrets.token_hex(6)
        self._item = "item_probe" + secrets.token_hex(6)

    def drop_one_packet(self, drop: Callable[[], None]) -> None:
        drop()

    async def run(self) -> None:
        pos = 0
        while True:
            await self._pacing.wait(self.frames * WS_FRAME / WS_RATE)
            chunk = self._signal[pos : pos + WS_FRAME]
            event = {
                "type": "response.output_audio.delta",
                "event_id": "event_" + secrets.token_hex(8),
                "response_id": self._response,
                "item_id": self._item,
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(chunk.tobytes()).decode(),
            }
            released = time.monotonic()
            self._send(json.dumps(event))
            if pos <= self._onset < pos + WS_FRAME:
                self.onsets.append(released + (self._onset - pos) / WS_RATE)
            self.frames += 1
            pos = (pos + WS_FRAME) % self._signal.size


class ProbeSocket:
    """One WebSocket session of the probe (see the module docstring)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.id = "sess_probe_" + secrets.token_hex(8)
        self.ws = ws
        self.hung_up = False
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self.source = DeltaToneSource(self._out.put_nowait)
        self.receiver = OnsetReceiver()
        self.dropper = _NoDropper()
        self._channel = _SocketChannel(self._out.put_nowait)
        self.dc = DcEndpoint("bench.pong")
        self._pts = 0
        self._tasks: list[asyncio.Task[Any]] = []

    async def serve(self, on_ready: Callable[[ProbeSocket], None]) -> None:
        self._tasks.append(asyncio.ensure_future(self._write()))
        self._out.put_nowait(json.dumps({"type": "session.created", "session": {"id": self.id}}))
        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            kind = event.get("type")
            if kind == "input_audio_buffer.append":
                self._on_audio(event["audio"], time.monotonic())
            elif kind == "session.update":
                session = {**event.get("session", {}), "id": self.id}
                self._out.put_nowait(json.dumps({"type": "session.updated", "session": session}))
                self.dc.attach(self._channel)  # type: ignore[arg-type]
                self._tasks.append(asyncio.ensure_future(self.source.run()))
                on_ready(self)
            elif self._channel.handler is not None:
                self._channel.handler(message.data)

    def _on_audio(self, audio: str, arrived: float) -> None:
        pcm = np.frombuffer(base64.b64decode(audio), dtype="<i2")
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WS_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, WS_RATE)
        self._pts += pcm.size
        self.receiver.feed(frame, arrived)

    async def _write(self) -> None:
        while True:
            await self.ws.send_str(await self._out.get())

    async def close(self) -> None:
        self.dc.stop()
        for task in self._tasks:
            await cancel_and_wait(task)
        await self.ws.close()
