"""One emulated Realtime session, whatever carries it: its config and cap, its
conversation logic (:class:`~.turns.Dialogue` and the client-event handler), the events
it sent and received, its sideband listeners, and an idempotent, awaited close.

A transport subclasses :class:`EmulatedSession`: WebRTC (:class:`~.session.EmulatedCall`:
a peer connection, ``oai-events``, the paced agent track) or a WebSocket
(:class:`~.websocket.WebSocketSession`: events and base64 PCM16 on one socket). It
provides where events go (:meth:`_transmit`), whether that is open yet, how the agent's
audio leaves (the :class:`~.outlet.AudioOut` given to ``__init__``), and how its own
resources close (:meth:`_close_transport`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np

from . import ids
from .capture import ReceivedAudio
from .client_events import ClientEventHandler
from .errors import ApiError
from .events import Event, EventFactory
from .faults import Faults
from .items import ItemCommands
from .outlet import AudioOut, Outlet
from .session_config import SessionConfig
from .settings import EmulatorSettings
from .turns import Dialogue
from .voice import Senses

logger = logging.getLogger(__name__)

#: Events kept for tests (``client_events`` / ``server_events``).
MAX_RECORDED_EVENTS = 2000
#: Events generated before the transport opens are held (bounded) until it does.
MAX_OUTBOX = 1000
#: After ``session_expired``: time for the error to flush before the transport closes.
EXPIRY_FLUSH_SECS = 0.3

Listener = Callable[[Event], None]


class EmulatedSession:
    """The transport-independent part of one emulated session."""

    #: ``webrtc`` or ``websocket``.
    transport = ""

    def __init__(
        self,
        config: SessionConfig,
        settings: EmulatorSettings,
        audio_out: AudioOut,
        on_closed: Callable[[Any], None] | None = None,
        *,
        id_: str | None = None,
    ) -> None:
        self.session_id = ids.session_id()
        self.id = id_ or self.session_id
        self.config = config
        self.dialect = config.dialect
        self.settings = settings
        self.created_at = time.time()
        # OpenAI capped beta sessions at half the GA cap.
        cap = settings.max_session_secs
        self.max_session_secs = cap if config.dialect == "ga" else cap / 2
        self.expires_at = int(self.created_at + self.max_session_secs)
        self.on_closed = on_closed
        self.factory = EventFactory(config.dialect)
        #: Test hook: the failures switched on for this session (:mod:`.faults`).
        self.faults = Faults(settings.faults)
        #: Test hook: the caller's audio as received (see relay.emulator.capture).
        self.received = ReceivedAudio()
        #: Test hook: every client event received (parsed when it was JSON) and every
        #: server event sent, oldest first (bounded).
        self.client_events: deque[Any] = deque(maxlen=MAX_RECORDED_EVENTS)
        self.server_events: deque[Event] = deque(maxlen=MAX_RECORDED_EVENTS)
        #: Sideband connections (``GET /v1/realtime?call_id=``): each gets every event.
        self.listeners: set[Listener] = set()
        self.close_reason: str | None = None
        self.expiry_message = ""
        self.closed = asyncio.Event()
        self._outbox: list[Event] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._input_end_ms = 0.0
        self.dialogue, self.handler = self._conversation_logic(audio_out)

    def _conversation_logic(self, audio_out: AudioOut) -> tuple[Dialogue, ClientEventHandler]:
        out = Outlet(self.factory, self.send, audio_out, self.faults)
        dialogue = Dialogue(
            self.config, out, self.settings.response_delay_secs, Senses.of(self.settings)
        )
        items = ItemCommands(
            dialogue.conversation, out, self.config.dialect, self._max_message_bytes
        )
        handler = ClientEventHandler(
            dialogue,
            items,
            out,
            on_session_updated=self._session_updated,
            on_close=lambda: self._close_soon("session.close"),
        )
        return dialogue, handler

    # -- what a transport provides --

    @property
    def ready(self) -> bool:
        """Whether events can go out now (``session.created`` has been sent)."""
        raise NotImplementedError

    def _transmit(self, text: str) -> bool:
        """Send one event's text; False if the transport could not take it."""
        raise NotImplementedError

    def _max_message_bytes(self) -> int:
        return 1 << 30

    async def _close_transport(self) -> None:
        raise NotImplementedError

    async def _expire_transport(self) -> None:
        """After ``session_expired`` has flushed: end the transport's side."""
        await self.close("session expired")

    # -- events --

    def session_object(self) -> dict[str, Any]:
        return self.config.public(id=self.session_id, expires_at=self.expires_at)

    def _session_updated(self) -> None:
        self.send(self.factory.session_updated(self.session_object()))

    def _start_events(self) -> None:
        """The transport is open: ``session.created`` first, then what was held."""
        self._send_now(self.factory.session_created(self.session_object()))
        outbox, self._outbox = self._outbox, []
        for event in outbox:
            self._send_now(event)

    def on_client_message(self, message: str | bytes) -> None:
        """One client event (from the caller, or a sideband), handled synchronously
        in arrival order."""
        if self._closing:
            return
        try:
            recorded: Any = json.loads(message) if isinstance(message, str) else message
        except ValueError:
            recorded = message
        self.client_events.append(recorded)
        self.handler.handle(message)

    def send(self, event: Event) -> None:
        """Send a server event (held until ``session.created`` has gone out)."""
        if self._closing:
            return
        if not self.ready:
            if len(self._outbox) < MAX_OUTBOX:
                self._outbox.append(event)
            return
        self._send_now(event)

    def _send_now(self, event: Event) -> None:
        try:
            if self._transmit(json.dumps(event)):
                self.server_events.append(event)
        except Exception:  # closed under us, or larger than the peer accepts
            self.server_events.append(event)
            logger.warning("emulator: could not send %s", event.get("type"), exc_info=True)
        for listener in list(self.listeners):
            listener(event)

    # -- caller audio --

    def feed_audio(self, start_ms: float, mono48: np.ndarray) -> None:
        """One frame of caller audio (48 kHz mono int16) at ``start_ms`` on the input
        timeline (a start that goes back in time is moved to the end so far)."""
        duration_ms = mono48.size * 1000.0 / 48000
        if start_ms < self._input_end_ms - duration_ms:
            start_ms = self._input_end_ms
        self._input_end_ms = start_ms + duration_ms
        dbfs = self.received.add(mono48)
        self.dialogue.on_audio(start_ms, duration_ms, mono48, dbfs)

    @property
    def input_end_ms(self) -> float:
        return self._input_end_ms

    # -- lifetime --

    def start_cap(self) -> None:
        self._spawn(self._expire_after(self.max_session_secs))

    async def _expire_after(self, secs: float) -> None:
        await asyncio.sleep(secs)
        value, unit = (secs / 60.0, "minute") if secs >= 60 else (secs, "second")
        span = f"{value:g} {unit}{'' if value == 1 else 's'}"
        self.expiry_message = f"Your session hit the maximum duration of {span}."
        self.send(self.factory.error(ApiError(self.expiry_message, "session_expired")))
        await asyncio.sleep(EXPIRY_FLUSH_SECS)
        await self._expire_transport()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_soon(self, reason: str) -> None:
        if not self._closing:
            self._spawn(self.close(reason))

    async def close(self, reason: str = "closed") -> None:
        """Close everything this session owns; idempotent, and awaits the first close."""
        if self._closing:
            if asyncio.current_task() not in self._tasks:
                await self.closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        current = asyncio.current_task()
        try:
            await self.dialogue.close()
            with contextlib.suppress(Exception):
                await self._close_transport()
            others = [t for t in self._tasks if t is not current]
            for task in others:
                task.cancel()
            for task in others:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            self.closed.set()
            if self.on_closed is not None:
                self.on_closed(self)
