"""OpenAI's WebSocket transport: ``GET /v1/realtime?model=...`` (a session of its own)
and ``GET /v1/realtime?call_id=rtc_...`` (a sideband on a live WebRTC call).

A WebSocket session (:class:`WebSocketSession`) is the same emulated session as a WebRTC
call (:class:`~.core.EmulatedSession`: turns, responses, cap, events), carried
differently (protocol notes §3.1, §3.5):

* ``session.created`` is the first event, sent at once after the upgrade;
* the caller's audio is ``input_audio_buffer.append`` (base64 PCM16, 24 kHz mono): it
  is the input timeline, so server VAD, commits and transcription work on it;
* the agent's audio is ``response.output_audio.delta`` (base64 PCM16, 24 kHz), sent as
  generated (:class:`DeltaAudio`); there are no ``output_audio_buffer.*`` events and a
  barge-in truncates nothing (the client knows what it played, and truncates);
* auth: ``Authorization: Bearer`` (a standard key, or a GA ephemeral key), or the
  browser's subprotocol ``openai-insecure-api-key.<key>``. A refusal still upgrades,
  then sends one ``error`` and closes with 3000 (auth) or 4000 (request shape);
* the cap ends with the ``session_expired`` error and a close with 1001.

A sideband needs a standard key; it receives every server event of the call from then
on, its client events are handled as the call's own, and it closes (1000) when the
call ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .appstate import KEYS, SESSIONS, SETTINGS, bearer, ga_config, is_standard_key
from .core import EmulatedSession
from .errors import ApiError
from .events import Event, EventFactory, OutputSlot
from .playout import ClearedAudio
from .session_config import SessionConfig
from .settings import EmulatorSettings

logger = logging.getLogger(__name__)

SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
#: OpenAI pings about every 20 s.
HEARTBEAT_SECS = 20.0
#: Events queued for a client that does not read; past this it is disconnected.
MAX_QUEUED = 10_000
#: Largest client message (OpenAI takes audio chunks up to 15 MiB, base64).
MAX_MESSAGE_BYTES = 21 * 1024 * 1024
CLOSE_AUTH = 3000
CLOSE_REQUEST = 4000
FRAME_SAMPLES_24K = 480  # 20 ms


class DeltaAudio:
    """The agent's audio as ``response.output_audio.delta`` events (WebSocket)."""

    on_started: Callable[[str], None] | None = None
    on_stopped: Callable[[str], None] | None = None

    def __init__(self) -> None:
        self._items: dict[str, str] = {}
        self._send: Callable[[Event], None] | None = None
        self._factory: EventFactory | None = None

    def attach(self, factory: EventFactory, send: Callable[[Event], None]) -> None:
        self._factory, self._send = factory, send

    def begin(self, response_id: str, item_id: str = "") -> None:
        self._items[response_id] = item_id
        while len(self._items) > 64:
            del self._items[next(iter(self._items))]

    def enqueue(self, response_id: str, samples: np.ndarray) -> None:
        item_id = self._items.get(response_id)
        if item_id is None or samples.size < 2 or self._send is None or self._factory is None:
            return
        pairs = samples[: samples.size // 2 * 2].astype(np.int32).reshape(-1, 2)
        pcm24 = ((pairs[:, 0] + pairs[:, 1]) // 2).astype("<i2")  # 48 -> 24 kHz
        audio = base64.b64encode(pcm24.tobytes()).decode("ascii")
        self._send(self._factory.audio_delta(OutputSlot(response_id, item_id), audio))

    def end(self, response_id: str) -> None:
        self._items.pop(response_id, None)

    def clear(self) -> list[ClearedAudio]:
        """Nothing is known to have played: the client truncates what it cut."""
        return []


class WebSocketSession(EmulatedSession):
    """One session on OpenAI's WebSocket transport."""

    transport = "websocket"

    def __init__(
        self,
        config: SessionConfig,
        settings: EmulatorSettings,
        ws: web.WebSocketResponse,
        on_closed: Callable[[Any], None] | None = None,
    ) -> None:
        self.ws = ws
        self.audio = DeltaAudio()
        super().__init__(config, settings, self.audio, on_closed)
        self.audio.attach(self.factory, self.send)
        self.dialogue.on_appended = self._on_appended
        self._queue: asyncio.Queue[tuple[str, int, str] | None] = asyncio.Queue()
        self._started = False
        self._carry = np.zeros(0, dtype=np.int16)

    def start(self) -> None:
        """The socket is open: ``session.created``, the cap, the writer."""
        self._spawn(self._write())
        self.start_cap()
        self._started = True
        self._start_events()

    @property
    def ready(self) -> bool:
        return self._started

    def _transmit(self, text: str) -> bool:
        if self._queue.qsize() >= MAX_QUEUED:
            self._close_soon("client too slow")
            return False
        self._queue.put_nowait(("text", 0, text))
        return True

    async def _write(self) -> None:
        while (item := await self._queue.get()) is not None:
            kind, code, text = item
            if kind == "close":
                await self.ws.close(code=code, message=text.encode())
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self._close_soon("client gone")
                return

    def _on_appended(self, raw: bytes) -> None:
        """Appended audio is this session's input: 20 ms frames, at 48 kHz for the VAD
        and the record of received audio (each 24 kHz sample doubled)."""
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int16)
        if self._carry.size:
            pcm = np.concatenate([self._carry, pcm])
        whole = pcm.size - pcm.size % FRAME_SAMPLES_24K
        self._carry = pcm[whole:]
        for start in range(0, whole, FRAME_SAMPLES_24K):
            frame = pcm[start : start + FRAME_SAMPLES_24K]
            self.feed_audio(self.input_end_ms, np.repeat(frame, 2))

    async def _expire_transport(self) -> None:
        self._queue.put_nowait(("close", 1001, self.expiry_message))
        await self.close("session expired")

    async def _close_transport(self) -> None:
        self._queue.put_nowait(("close", 1000, "session closed"))
        writers = [t for t in self._tasks if t is not asyncio.current_task()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 1.0)
        await self.ws.close()


# --- the route ---


def _token(request: web.Request) -> str | None:
    token = bearer(request)
    if token is not None:
        return token
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(KEY_SUBPROTOCOL) and len(protocol) > len(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


async def _refuse(ws: web.WebSocketResponse, error: ApiError, close_code: int) -> None:
    """OpenAI's way: the upgrade succeeded; one ``error`` event, then a close."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(json.dumps(EventFactory("ga").error(error)))
    reason = f"{error.type}.{error.code}" if error.code else error.type
    await ws.close(code=close_code, message=reason.encode()[:120])


def _session_config(request: web.Request, token: str) -> SessionConfig:
    """The session of ``?model=`` for a standard or an ephemeral key (an ApiError with
    status 401 is an auth failure)."""
    model = request.query.get("model")
    keys = request.app[KEYS]
    if is_standard_key(request, token):
        if not model:
            raise ApiError("Missing required parameter: 'model'.", "missing_model", "model")
        return ga_config(None, None, model)
    if not keys.is_ephemeral(token):
        raise ApiError("Incorrect API key provided.", "invalid_api_key", status=401)
    return ga_config(keys.use(token), None, model)


async def realtime_websocket(request: web.Request) -> web.WebSocketResponse:
    """``GET /v1/realtime?model=...`` or ``?call_id=...`` (see the module docstring)."""
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,), heartbeat=HEARTBEAT_SECS, max_msg_size=MAX_MESSAGE_BYTES
    )
    await ws.prepare(request)
    token = _token(request)
    if token is None:
        error = ApiError("Missing bearer or basic authentication in header", None)
        await _refuse(ws, error, CLOSE_AUTH)
        return ws
    call_id = request.query.get("call_id")
    if call_id is not None:
        await _sideband(request, ws, token, call_id)
        return ws
    try:
        config = _session_config(request, token)
    except ApiError as exc:
        await _refuse(ws, exc, CLOSE_AUTH if exc.status == 401 else CLOSE_REQUEST)
        return ws
    await _serve(request, ws, config)
    return ws


async def _serve(request: web.Request, ws: web.WebSocketResponse, config: SessionConfig) -> None:
    registry = request.app[SESSIONS]
    session = WebSocketSession(config, request.app[SETTINGS], ws, on_closed=registry.discard)
    registry.add(session)
    try:
        session.start()
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                session.on_client_message(message.data)
    finally:
        await session.close("client disconnected")


async def _sideband(
    request: web.Request, ws: web.WebSocketResponse, token: str, call_id: str
) -> None:
    if not is_standard_key(request, token):
        await _refuse(ws, ApiError("Incorrect API key provided.", "invalid_api_key"), CLOSE_AUTH)
        return
    call = request.app[SESSIONS].active.get(call_id)
    if call is None:
        error = ApiError("No session found for the provided call_id", "call_id_not_found", "")
        await _refuse(ws, error, CLOSE_REQUEST)
        return
    queue: asyncio.Queue[str | None] = asyncio.Queue(MAX_QUEUED)

    def listen(event: Event) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(json.dumps(event))

    async def write() -> None:
        waiting = asyncio.ensure_future(call.closed.wait())
        waiting.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (text := await queue.get()) is not None:
                await ws.send_str(text)
            await ws.close(code=1000, message=b"call ended")
        finally:
            waiting.cancel()

    call.listeners.add(listen)
    writer = asyncio.ensure_future(write())
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                call.on_client_message(message.data)
    finally:
        call.listeners.discard(listen)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        await ws.close()
