"""The caller of ``bench.latency`` over the relay's WebSocket caller leg
(``/v1/realtime/ws``), as the web client uses it where WebRTC does not get through.

It has the shape of :class:`bench.latency_peers.Caller` that the run uses (``source``,
``receiver``, ``dc``, ``dropper``, ``connect``, ``close``):

* the source sends the same tone bursts (:mod:`bench.tones`) as 24 kHz PCM16 binary
  frames of 20 ms, paced in real time; an onset's source time is when its frame was
  handed to the socket + the onset's offset in it;
* the receiver reads the relay's agent frames (24 kHz PCM16, which the relay paces in
  real time) and times onsets as they arrive + their offset: the browser's own playout
  buffer (80 ms by default, see realtime-audio-worklet.js) comes on top, as a WebRTC
  browser's jitter buffer comes on top of the other variants' figures;
* the events go as text frames on the same socket (``bench.ping`` every 200 ms).

TCP does not lose a frame: the "dropped" packet of this caller is never dropped (its
count stays 0); the probe still drops one RTP packet towards the relay."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Callable

import aiohttp
import numpy as np
from av import AudioFrame

from bench.common import Pacing, cancel_and_wait
from bench.latency_peers import DC_INTERVAL_S, VariantFailed
from bench.tones import RATE, THRESHOLD, OnsetReceiver, burst_period

WS_RATE = 24000
WS_FRAME = WS_RATE // 50  # 20 ms
#: The tone period at 24 kHz (every other sample of the 48 kHz one: 1 kHz stays 1 kHz).
_PERIOD_24K = np.round(burst_period()[:: RATE // WS_RATE]).astype("<i2")
_ONSET_24K = int(np.flatnonzero(np.abs(_PERIOD_24K.astype(np.int32)) > THRESHOLD)[0])


class WsToneSource:
    """Paced 20 ms PCM frames of tone bursts; records when each onset left."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self.frames = 0
        self.drop_time: float | None = None

    def drop_one_packet(self, drop: Callable[[], None]) -> None:
        """TCP loses nothing: nothing is dropped, but the time splits the window into
        "before" and "after" as for the other callers."""
        del drop
        self.drop_time = time.monotonic()

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        pacing, pts, period = Pacing(), 0, len(_PERIOD_24K)
        with contextlib.suppress(ConnectionError, RuntimeError):  # the socket closed
            await self._send(ws, pacing, pts, period)

    async def _send(
        self, ws: aiohttp.ClientWebSocketResponse, pacing: Pacing, pts: int, period: int
    ) -> None:
        while not ws.closed:
            await pacing.wait(pts / WS_RATE)
            pos = pts % period
            chunk = _PERIOD_24K[pos : pos + WS_FRAME]
            released = time.monotonic()
            await ws.send_bytes(chunk.tobytes())
            if pos <= _ONSET_24K < pos + WS_FRAME:
                self.onsets.append(released + (_ONSET_24K - pos) / WS_RATE)
            pts += WS_FRAME
            self.frames += 1


class NoDropper:
    dropped = 0

    def arm(self) -> None:
        """Nothing to drop on a TCP socket."""


class WsEvents:
    """``bench.ping`` events out every 200 ms; the one-way latency of ``bench.pong``."""

    def __init__(self) -> None:
        self.sent = 0
        self.latencies: list[float] = []

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        seq = 0
        while not ws.closed:
            event = {"type": "bench.ping", "seq": seq, "t": time.monotonic()}
            with contextlib.suppress(ConnectionError, RuntimeError):  # the socket closed
                await ws.send_str(json.dumps(event))
            self.sent += 1
            seq += 1
            await asyncio.sleep(DC_INTERVAL_S)

    def on_text(self, text: str, now: float) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("type") == "bench.pong":
            sent = event.get("t")
            if isinstance(sent, float):
                self.latencies.append(now - sent)


class NotUp(Exception):
    """The relay refused the call, or the socket closed before it was up."""


async def call_id_of(ws: aiohttp.ClientWebSocketResponse) -> str:
    """Reads the socket until the relay says the call is up (``relay.call``); its id."""
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(message.data)
        if event.get("type") == "error":
            raise NotUp(f"the relay refused the call: {event}")
        if event.get("type") == "relay.call":
            return str(event["call_id"])
    raise NotUp("the WebSocket closed before the call was up")


class WsCaller:
    """The browser's role over the WebSocket: sends bursts, times the agent's."""

    transport = "websocket"

    def __init__(self) -> None:
        self.source = WsToneSource()
        self.receiver = OnsetReceiver()
        self.dc = WsEvents()
        self.dropper = NoDropper()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pts = 0
        self._time_base = fractions.Fraction(1, WS_RATE)

    async def connect(self, http: aiohttp.ClientSession, calls_url: str) -> str:
        """Open the socket next to ``calls_url`` and wait until the relay says the call
        is up (``relay.call``); returns the call's id."""
        url = calls_url.replace("http://", "ws://", 1).removesuffix("/calls") + "/ws"
        try:
            self._ws = ws = await http.ws_connect(url, protocols=["realtime"])
        except aiohttp.ClientError as exc:
            raise VariantFailed(f"WebSocket {url}: {exc!r}") from None
        try:
            call_id = await call_id_of(ws)
        except NotUp as exc:
            raise VariantFailed(str(exc)) from None
        self._tasks = [
            asyncio.ensure_future(self.source.run(ws)),
            asyncio.ensure_future(self.dc.run(ws)),
            asyncio.ensure_future(self._receive(ws)),
        ]
        return call_id

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            now = time.monotonic()
            if message.type == aiohttp.WSMsgType.BINARY:
                self.receiver.feed(self._frame(message.data), now)
            elif message.type == aiohttp.WSMsgType.TEXT:
                self.dc.on_text(message.data, now)

    def _frame(self, data: bytes) -> AudioFrame:
        pcm = np.frombuffer(data, dtype="<i2").reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = WS_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += pcm.shape[1]
        return frame

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        for task in self._tasks:
            await cancel_and_wait(task)
