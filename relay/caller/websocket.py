"""The browser's WebSocket leg into the relay: for networks where WebRTC does not get
through (no UDP, no ICE-TCP to the relay's port, a proxy that passes only HTTPS).

One socket carries the whole call:

* binary frames, both ways: PCM16 little-endian, 24 kHz mono, 20 ms (480 samples) a
  frame. The caller's go into the caller pipeline at :meth:`CallerAudio.on_pcm` (the
  same suppression, canonical frames, taps and encoder as WebRTC's); the agent's are
  OpenAI's Opus packets decoded to 24 kHz and sent paced in real time, never faster,
  from a small drop-oldest queue that a barge-in empties;
* text frames, both ways: the ``oai-events`` JSON, through the same event bridge (the
  same checks and policy) as a WebRTC data channel. Once the call is set up the relay
  says so with its own event ``{"type": "relay.call", "call_id", "transport"}``.

A close frame from the browser is the caller hanging up; a socket that dies without
one (aiohttp's heartbeat finds a dead one, the connection resets) is a caller lost
(``caller_dropped``), whom the call waits for (:mod:`relay.caller.resume`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from ..events import EventBridge
from ..media.opus import OpusDecoder
from ..media.pcm import To24kMono
from ..media.uplink import CallerAudio
from ..queues import DropOldestQueue
from ..taps import CANONICAL_FRAME_SAMPLES, CANONICAL_RATE

logger = logging.getLogger(__name__)

FRAME_SECS = CANONICAL_FRAME_SAMPLES / CANONICAL_RATE
#: Agent audio queued for the browser at most (then the oldest is dropped): 200 ms.
MAX_AGENT_FRAMES = 10
#: Agent audio queued is latency that a burst from upstream left behind (sending in
#: real time never drains it): a silent frame is skipped while this many frames (20 ms
#: each) wait behind it. Speech is never skipped, and nothing is sent faster; the
#: browser's playout buffer absorbs the jitter.
TARGET_AGENT_FRAMES = 2
#: A frame whose samples all stay within this (of 32767, about -54 dBFS) is silence.
SILENT_PEAK = 64
#: How far behind its clock the paced sender may be and still catch up (a busy event
#: loop woke it late): beyond it, the clock restarts. Without catching up, every late
#: wake-up would slow the stream below real time and leave a backlog behind.
CATCH_UP_SECS = 0.1
#: Events queued for a browser that does not read (then the oldest is dropped).
MAX_EVENTS = 10_000
#: Close codes of a socket that died rather than closed (no close frame from the peer).
ABNORMAL_CLOSE_CODES = frozenset({None, 1006})
#: The largest binary frame taken from a browser: 100 ms of 24 kHz PCM16.
MAX_AUDIO_BYTES = CANONICAL_RATE // 10 * 2


class SocketChannel:
    """The WebSocket as the caller side of the :class:`EventBridge` (the shape of an
    ``RTCDataChannel`` the bridge uses: ``readyState``, ``send``, ``on``). Sends are
    queued and written by the leg's writer, in order."""

    def __init__(self) -> None:
        self.readyState = "connecting"
        self.outbox: DropOldestQueue[str] = DropOldestQueue(MAX_EVENTS)
        self._handlers: dict[str, Callable[..., Any]] = {}

    def on(self, name: str, handler: Callable[..., Any]) -> None:
        self._handlers[name] = handler

    def send(self, message: str) -> None:
        self.outbox.put(message)

    def open(self) -> None:
        self.readyState = "open"
        handler = self._handlers.get("open")
        if handler is not None:
            handler()

    def received(self, message: str | bytes) -> None:
        handler = self._handlers.get("message")
        if handler is not None:
            handler(message)

    def close(self) -> None:
        self.readyState = "closed"
        self.outbox.close()


class AgentPcm:
    """Agent Opus packets -> 24 kHz mono PCM16 frames, queued for the paced sender.

    A barge-in (:meth:`clear`) moves to a new turn: frames of the old one still queued
    are skipped by :meth:`next_frame`, and counted. A silent frame is skipped too while
    :data:`TARGET_AGENT_FRAMES` or more wait behind it (``caught_up`` counts them)."""

    def __init__(self, max_frames: int = MAX_AGENT_FRAMES) -> None:
        self._decoder = OpusDecoder()
        self._resampler = To24kMono()
        self._queue: DropOldestQueue[tuple[int, bytes, bool]] = DropOldestQueue(max_frames)
        self._turn = 0
        self._held = False
        self.cleared = 0
        self.caught_up = 0

    def push(self, payload: bytes) -> None:
        pcm = self._decoder.decode(payload)  # decoded even when held: the codec's state
        if pcm.size and self._held:
            self.cleared += 1
        elif pcm.size:
            for frame in self._resampler.push(pcm):
                silent = bool(np.abs(frame.astype(np.int32)).max() <= SILENT_PEAK)
                self._queue.put((self._turn, frame.astype("<i2").tobytes(), silent))

    def clear(self, *, hold: bool = False) -> None:
        """Drop every frame queued so far (barge-in); ``hold``: and every frame that
        comes until :meth:`resume` (the rest of a response OpenAI cleared)."""
        self._turn += 1
        self._held = hold

    def resume(self) -> None:
        self._held = False

    async def next_frame(self) -> bytes | None:
        """The next frame to send; ``None`` once closed."""
        while (item := await self._queue.get()) is not None:
            turn, frame, silent = item
            if turn != self._turn:
                self.cleared += 1
            elif silent and len(self._queue) >= TARGET_AGENT_FRAMES:
                self.caught_up += 1
            else:
                return frame
        return None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def close(self) -> None:
        self._queue.close()


class WebSocketCallerLeg:
    """A call's caller leg over an accepted (prepared) aiohttp WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        call_id: str,
        on_ended: Callable[[str], None] | None = None,
    ) -> None:
        self.ws = ws
        self.call_id = call_id
        self.on_ended = on_ended
        self.channel = SocketChannel()
        self.agent = AgentPcm()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._audio: CallerAudio | None = None
        self._closed = False
        self._writer: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self.frames_sent = 0
        self.bad_frames = 0

    @property
    def transport(self) -> str:
        return "websocket"

    async def accept(self, offer_sdp: str, bridge: EventBridge, audio: CallerAudio) -> None:
        """Start reading the socket: text to ``bridge``, binary PCM to ``audio``."""
        del offer_sdp  # no SDP on this leg
        self._audio = audio
        bridge.attach_caller(self.channel)
        self._spawn(self._read())
        self._writer = self._spawn(self._write_events())
        self._spawn(self._send_agent_audio())

    async def answer(self) -> str:
        """Open the caller side of the bridge (OpenAI's first events may come while
        its leg is still being set up)."""
        self.channel.open()
        return ""

    def announce(self, resume_token: str | None = None) -> None:
        """Tell the browser the call is up (after set-up): ``relay.call``, with the
        call's resume token the first time (only the caller's socket carries it)."""
        hello = {"type": "relay.call", "call_id": self.call_id, "transport": self.transport}
        if resume_token is not None:
            hello["resume_token"] = resume_token
        self.channel.send(json.dumps(hello))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- caller to relay ---------------------------------------------------------------

    async def _read(self) -> None:
        outcome = "caller_closed"
        try:
            async for message in self.ws:
                if message.type == WSMsgType.BINARY:
                    self._on_audio(message.data)
                elif message.type == WSMsgType.TEXT:
                    self.channel.received(message.data)
            outcome = self._outcome()
        except Exception as exc:  # a broken socket is a caller lost
            logger.info("caller socket failed: %r", exc)
            outcome = "caller_dropped"
        self._ended(outcome)

    def _on_audio(self, data: bytes) -> None:
        if self._audio is None or not data or len(data) % 2 or len(data) > MAX_AUDIO_BYTES:
            self.bad_frames += 1
            return
        self._audio.on_pcm(np.frombuffer(data, dtype="<i2").astype(np.int16))

    def _outcome(self) -> str:
        """How the socket ended: a close frame (hang-up) or not (a caller lost)."""
        return "caller_dropped" if self.ws.close_code in ABNORMAL_CLOSE_CODES else "caller_closed"

    def _ended(self, outcome: str) -> None:
        if not self._closed and self.on_ended is not None:
            self._closed = True
            self.on_ended(outcome)

    # -- relay to caller ---------------------------------------------------------------

    def play(self, payload: bytes, rtp_timestamp: int) -> None:
        del rtp_timestamp  # TCP: nothing is lost, the order is the arrival order
        self.agent.push(payload)

    def playback(self, change: str) -> None:
        """Barge-in drops the queued agent audio; OpenAI clearing its output also drops
        what is still on its way, until the next response's audio starts."""
        if change in ("barge_in", "cleared"):
            self.agent.clear(hold=change == "cleared")
        elif change == "started":
            self.agent.resume()

    async def _write_events(self) -> None:
        while (text := await self.channel.outbox.get()) is not None:
            if not await self._send(text):
                return

    async def _send(self, data: str | bytes) -> bool:
        """One frame to the browser; ``False`` (and the caller gone) if the socket is."""
        try:
            async with self._send_lock:
                if isinstance(data, str):
                    await self.ws.send_str(data)
                else:
                    await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError):  # closing, or closed under us
            self._ended(self._outcome())
            return False
        return True

    async def _send_agent_audio(self) -> None:
        """One frame per 20 ms of real time: a burst from upstream waits in the queue
        (the oldest dropped beyond :data:`MAX_AGENT_FRAMES`). A late wake-up catches up
        with the clock (never ahead of it), up to :data:`CATCH_UP_SECS` behind; after a
        pause, or further behind, the clock restarts, so the next stretch starts at once."""
        due: float | None = None
        while (frame := await self.agent.next_frame()) is not None:
            now = time.monotonic()
            if due is None or due < now - CATCH_UP_SECS:
                due = now
            elif due > now:
                await asyncio.sleep(due - now)
            if not await self._send(frame):
                return
            due += FRAME_SECS
            self.frames_sent += 1

    # -- the call's view ---------------------------------------------------------------

    @property
    def frames_out(self) -> int:
        return self.frames_sent

    @property
    def dropped_out(self) -> int:
        return self.agent.dropped

    @property
    def dropped_in(self) -> int:
        return self.bad_frames

    async def stats(self) -> Mapping[str, Any]:
        return {}

    async def answers(self, timeout_secs: float) -> bool:
        del timeout_secs  # the socket's own heartbeat closes a dead one
        return not self.ws.closed

    def snapshot(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "connection_state": "closed" if self.ws.closed else "connected",
            "ice_connection_state": None,
            "selected_pair": None,
            "agent_frames_queued": self.agent.queued,
            "agent_frames_cleared": self.agent.cleared,
            "agent_silent_frames_skipped": self.agent.caught_up,
        }

    def stop(self) -> None:
        self.agent.close()
        self.channel.close()

    async def close(self) -> None:
        """Stop reading and writing and close the socket (idempotent)."""
        self._closed = True
        self.stop()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if self._writer is not None and self._writer is not current:
            # Queued events (an error saying why the call ended) leave first.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), 1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._done.set()

    async def wait_closed(self) -> None:
        await self._done.wait()
