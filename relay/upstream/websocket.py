"""The relay's WebSocket leg to OpenAI (``RELAY_UPSTREAM_TRANSPORT=websocket``): for a
relay whose egress allows only HTTPS. The browser's side does not change: it still
speaks WebRTC's event protocol, and cannot tell.

* Set-up: ``wss .../realtime?model=`` with the server's own key; OpenAI's
  ``session.created`` (its defaults) stays here; the call's locked session goes up as
  ``session.update``, and OpenAI's ``session.updated`` reaches the browser as the
  ``session.created`` it expects (what a WebRTC session minted with that config says).
* Caller audio: the canonical 24 kHz PCM16 frames the caller pipeline already makes
  (:meth:`UplinkTrack.push_pcm`, no Opus encode), one ``input_audio_buffer.append``
  every 20 ms.
* Agent audio: ``response.output_audio.delta`` is queued and played out in real time
  as Opus (:class:`~relay.upstream.playout.AgentPlayout`); the deltas never reach the
  browser. The relay emits the ``output_audio_buffer.started/stopped/cleared`` events
  the WebSocket transport lacks, and on a barge-in (server VAD's ``speech_started``
  with ``interrupt_response``, or the browser's ``output_audio_buffer.clear``, which it
  answers itself) truncates the item upstream to what was actually played
  (``conversation.item.truncate``), as OpenAI's WebRTC side does on its own.

The leg owns its socket and tasks; the call owns the leg and closes it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import numpy as np

from ..errors import UpstreamAuthError, UpstreamError, UpstreamRejected, UpstreamTimeout
from ..events import EventBridge
from ..media.downlink import AgentAudio
from ..media.tracks import UplinkTrack
from ..queues import DropOldestQueue
from .openai import OpenAIConnector, redact
from .playout import AgentPlayout

logger = logging.getLogger(__name__)

HEARTBEAT_SECS = 15.0
#: OpenAI's largest events are audio deltas (a few hundred KiB at most).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Messages queued for a socket that does not drain (then the oldest is dropped).
MAX_OUTGOING = 10_000
_AUDIO_DELTA = "response.output_audio.delta"
#: The ``event_id`` prefix of the relay's own client events: OpenAI's errors about
#: them are the relay's business (logged), not the browser's.
_OWN_EVENT = "relay_ws_"


class _UpstreamChannel:
    """The socket as the upstream side of the :class:`EventBridge` (``readyState``,
    ``send``, ``on``): open once the session is set up; the leg sees each browser
    event first (:meth:`WebSocketUpstreamLeg._from_browser`)."""

    def __init__(self, outgoing: Callable[[str], None]) -> None:
        self.readyState = "connecting"
        self._outgoing = outgoing
        self._handlers: dict[str, Callable[..., Any]] = {}

    def on(self, name: str, handler: Callable[..., Any]) -> None:
        self._handlers[name] = handler

    def send(self, message: str) -> None:
        self._outgoing(message)

    def open(self) -> None:
        self.readyState = "open"
        handler = self._handlers.get("open")
        if handler is not None:
            handler()

    def deliver(self, message: str) -> None:
        """A server event for the browser (OpenAI's, or one the relay makes)."""
        handler = self._handlers.get("message")
        if handler is not None:
            handler(message)


def _playback_event(kind: str, response_id: str) -> str:
    event_id = "event_" + secrets.token_hex(8)  # 16 hex, as OpenAI's own (observed)
    return json.dumps(
        {"type": f"output_audio_buffer.{kind}", "event_id": event_id, "response_id": response_id}
    )


class WebSocketUpstreamLeg:
    """A WebSocket session with OpenAI (or its emulator) for one call."""

    transport = "websocket"

    def __init__(
        self, *, connector: OpenAIConnector, timeout_secs: float, on_ended: Callable[[str], None]
    ) -> None:
        self._connector = connector
        self._timeout = timeout_secs
        self._on_ended = on_ended
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._outgoing: DropOldestQueue[str] = DropOldestQueue(MAX_OUTGOING)
        self._channel = _UpstreamChannel(self._from_browser)
        self._ready: asyncio.Future[None] | None = None
        self._session: dict[str, Any] = {}
        self._playout: AgentPlayout | None = None
        self._agent_audio: AgentAudio | None = None
        self._interrupt = True
        self._live = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: OpenAI's session id (a WebSocket session has no call id).
        self.call_id: str | None = None
        self.active = False
        self.truncations = 0

    # -- set-up --

    async def open(
        self,
        session: dict[str, Any],
        model: str,
        *,
        uplink: UplinkTrack,
        agent_audio: AgentAudio,
        bridge: EventBridge,
        decode_agent: bool,
    ) -> float:
        """Connect, configure the session; returns the seconds it took."""
        started = time.monotonic()
        self._session = session
        self._agent_audio = agent_audio
        self._playout = AgentPlayout(agent_audio.on_packet, self._on_playback)
        self.decode_agent(decode_agent)
        bridge.attach_upstream(self._channel)
        self._ready = asyncio.get_running_loop().create_future()
        self._ws = await self._connector.connect_websocket(
            model, heartbeat_secs=HEARTBEAT_SECS, max_message_bytes=MAX_MESSAGE_BYTES
        )
        self._spawn(self._read(self._ws))
        self._spawn(self._write(self._ws))
        try:
            await asyncio.wait_for(self._ready, self._timeout)
        except TimeoutError:
            raise UpstreamTimeout("OpenAI's WebSocket session did not come up in time.") from None
        uplink.pcm_sink = self._send_audio
        self.active = True
        self._spawn(self._playout.run())
        return time.monotonic() - started

    def _set_up(self, event: dict[str, Any], text: str) -> None:
        """Events before the session is ready: ``session.created`` (ours to answer),
        ``session.updated`` (the browser's ``session.created``), or an ``error``."""
        assert self._ready is not None
        kind = event.get("type")
        if kind == "session.created":
            self.call_id = str((event.get("session") or {}).get("id") or "") or None
            self._outgoing.put(json.dumps({"type": "session.update", "session": self._session}))
        elif kind == "session.updated" and not self._ready.done():
            self._note_session(event)
            event["type"] = "session.created"
            self._live = True  # every event from here on is the browser's
            self._channel.deliver(json.dumps(event))
            self._channel.open()
            self._ready.set_result(None)
        elif kind == "error" and not self._ready.done():
            self._ready.set_exception(_setup_error(event.get("error") or {}))

    def _note_session(self, event: dict[str, Any]) -> None:
        session = event.get("session") or {}
        detection = ((session.get("audio") or {}).get("input") or {}).get("turn_detection")
        self._interrupt = (
            isinstance(detection, dict) and detection.get("interrupt_response", True) is not False
        )

    # -- the socket --

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._from_openai(message.data)
        finally:
            reason = f"closed ({ws.close_code})"
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(UpstreamError(f"OpenAI's WebSocket {reason}."))
            if self.active:
                self.active = self._live = False
                # A close frame is OpenAI ending the session; none (1006) is a lost link.
                clean = ws.close_code not in (None, aiohttp.WSCloseCode.ABNORMAL_CLOSURE)
                self._on_ended("upstream_session_ended" if clean else "upstream_failed")

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while (text := await self._outgoing.get()) is not None:
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return  # the reader sees the close

    def _send_audio(self, pcm: np.ndarray) -> None:
        audio = base64.b64encode(pcm.astype("<i2", copy=False).tobytes()).decode("ascii")
        self._outgoing.put('{"type":"input_audio_buffer.append","audio":"' + audio + '"}')

    # -- events --

    def _from_openai(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == _AUDIO_DELTA:
            self._on_audio_delta(event)
            return
        if not self._live:
            self._set_up(event, text)
            return
        if kind == "error" and str((event.get("error") or {}).get("event_id")).startswith(
            _OWN_EVENT
        ):
            logger.info("OpenAI refused the relay's truncation: %s", text[:300])
            return
        self._channel.deliver(text)
        assert self._playout is not None
        if kind == "session.updated":
            self._note_session(event)
        elif kind == "input_audio_buffer.speech_started" and self._interrupt:
            self._barge_in()
        elif kind in ("response.output_audio.done", "response.done"):
            response = event.get("response") or {}
            self._playout.end(str(event.get("response_id") or response.get("id") or ""))

    def _on_audio_delta(self, event: dict[str, Any]) -> None:
        if self._playout is None:
            return
        try:
            raw = base64.b64decode(event.get("delta") or "", validate=True)
        except ValueError:
            return
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
        self._playout.add(str(event.get("response_id")), str(event.get("item_id")), pcm)

    def _from_browser(self, message: str) -> None:
        """A browser event the bridge let through: ``output_audio_buffer.clear`` is the
        relay's to answer (the WebSocket transport has none); the rest goes up."""
        if '"output_audio_buffer.clear"' in message:
            with contextlib.suppress(ValueError):
                if json.loads(message).get("type") == "output_audio_buffer.clear":
                    self._clear_output()
                    return
        self._outgoing.put(message)

    def _clear_output(self) -> None:
        """The browser's ``output_audio_buffer.clear``: the agent's audio stops and is
        ``cleared``, as OpenAI's WebRTC side does (nothing is truncated; a client that
        also wants the generation stopped sends ``response.cancel`` first)."""
        assert self._playout is not None
        self._playout.clear()

    def _barge_in(self) -> None:
        """The caller spoke over the agent (OpenAI cancelled the response): stop the
        agent's audio and truncate each cut item to what was played."""
        assert self._playout is not None
        for cut in self._playout.clear():
            if not cut.item_id:
                continue
            self.truncations += 1
            truncate = {
                "type": "conversation.item.truncate",
                "event_id": _OWN_EVENT + secrets.token_hex(8),
                "item_id": cut.item_id,
                "content_index": 0,
                "audio_end_ms": cut.played_ms,
            }
            self._outgoing.put(json.dumps(truncate))

    def _on_playback(self, kind: str, response_id: str) -> None:
        self._channel.deliver(_playback_event(kind, response_id))

    # -- what the call asks of a leg --

    def decode_agent(self, wanted: bool) -> None:
        """Agent audio for observers: the PCM is here already, only tapped if wanted."""
        if self._playout is not None and self._agent_audio is not None:
            self._playout.tap = self._agent_audio.on_pcm if wanted else None

    async def answers(self, timeout_secs: float) -> bool:
        return self._ws is not None and not self._ws.closed

    def snapshot(self) -> dict[str, Any]:
        closed = self._ws is None or self._ws.closed
        return {
            "transport": self.transport,
            "connection_state": "connected" if self.active and not closed else "closed",
            "ice_connection_state": None,  # the WebRTC leg's keys, so the shape is one
            "selected_pair": None,
            "session_id": self.call_id,
            "truncations": self.truncations,
        }

    async def stats(self) -> Mapping[str, Any]:
        return {}

    def dropped_in(self) -> int:
        return self._playout.dropped if self._playout is not None else 0

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, *, hangup: bool) -> None:
        """Close the socket (a WebSocket session ends with it) and the tasks. Idempotent."""
        self.active = self._live = False
        self._channel.readyState = "closed"
        self._outgoing.close()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        elif self._ready is not None and not self._ready.cancelled():
            self._ready.exception()  # retrieved: a failed set-up was already raised


def _setup_error(error: Mapping[str, Any]) -> Exception:
    code = error.get("code")
    text = str(error.get("message") or "")
    message = redact(text or "OpenAI refused the session.")
    if code == "invalid_api_key" or text.startswith("Missing bearer"):
        return UpstreamAuthError(
            "OpenAI rejected the relay's credentials; check the relay's OPENAI_API_KEY."
        )
    return UpstreamRejected(400, message, code=code, param=error.get("param"))
