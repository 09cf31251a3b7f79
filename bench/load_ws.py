"""The synthetic callers of ``bench.load`` over the relay's WebSocket caller leg
(``/v1/realtime/ws``, the ``-ws`` variants), as the web client uses it where WebRTC
does not get through.

Each opens one socket, waits for the relay's ``relay.call``, sends ``session.update``
and then the same real speech as the WebRTC callers (their Opus loop decoded once to
24 kHz PCM16), 20 ms binary frames paced in real time by its own task, and counts the
agent's frames the relay sends back. Closing the socket is the hang-up. The ``-ws``
variants have no probe calls (their latency is ``bench.latency``'s ``relay-off-ws``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

import aiohttp
import numpy as np

from bench.common import Pacing, cancel_and_wait
from bench.latency_ws import NotUp, call_id_of
from bench.load_callers import CallFailed
from bench.load_media import EncodedLoop, PacketCounter, decode_opus
from relay.media.pcm import To24kMono

FRAME_S = 0.02


def pcm_loop(loop: EncodedLoop) -> list[bytes]:
    """The loop's speech as 24 kHz PCM16 frames of 20 ms (the web client's wire)."""
    resampler = To24kMono()
    return [frame.astype("<i2").tobytes() for frame in resampler.push(decode_opus(loop.packets))]


class LoadWsCaller:
    probe = False
    source = None
    receiver = None

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = frames
        self._index = random.randrange(len(frames))
        self.counter = PacketCounter()
        self.sent = 0
        self.setup_ms: float | None = None
        self.location = ""
        self.closed = False
        self.events_received = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, http: aiohttp.ClientSession, url: str, timeout: float = 30) -> None:
        """Open the socket next to ``url`` (``.../calls``); ``setup_ms`` is the socket
        opened -> ``relay.call`` received."""
        ws_url = url.replace("http://", "ws://", 1).removesuffix("/calls") + "/ws"
        started = time.monotonic()
        try:
            self._ws = ws = await http.ws_connect(ws_url, protocols=["realtime"], timeout=timeout)
            call_id = await asyncio.wait_for(call_id_of(ws), timeout)
        except NotUp as exc:
            raise CallFailed(str(exc)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CallFailed(f"WebSocket {ws_url}: {type(exc).__name__}: {exc}") from None
        self.setup_ms = (time.monotonic() - started) * 1000
        self.location = f"/v1/realtime/calls/{call_id}"
        update = {"type": "session.update", "session": {"type": "realtime"}}
        await ws.send_str(json.dumps(update))
        self._tasks = [asyncio.ensure_future(self._send(ws)), asyncio.ensure_future(self._read(ws))]

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        pacing = Pacing()
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not ws.closed:
                await pacing.wait(self.sent * FRAME_S)
                await ws.send_bytes(self._frames[self._index])
                self._index = (self._index + 1) % len(self._frames)
                self.sent += 1

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.counter.count()
            elif message.type == aiohttp.WSMsgType.TEXT:
                self.events_received += 1

    @property
    def ended(self) -> bool:
        """The call ended under this caller (it did not hang up itself)."""
        return not self.closed and self._ws is not None and self._ws.closed

    async def hangup(self, http: aiohttp.ClientSession, base: str) -> None:
        """Closing the socket hangs up."""
        del http, base
        await self.close()

    async def close(self) -> None:
        self.closed = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 10)
        for task in self._tasks:
            await cancel_and_wait(task)


def frames_of(loop: EncodedLoop) -> list[bytes]:
    """:func:`pcm_loop`, checked: a loop that decodes to nothing is a broken harness."""
    frames = pcm_loop(loop)
    if not frames or np.frombuffer(frames[0], "<i2").size != 480:
        raise CallFailed("the callers' speech loop decoded to no 20 ms frames")
    return frames
