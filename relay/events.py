"""The ``oai-events`` bridge: every data-channel event forwarded in order, both ways.

Messages are forwarded as the exact text received (no re-serialisation), after a
cheap check: a browser's message must be a JSON object with a string ``type`` and
no larger than ``max_event_bytes``; otherwise the browser gets an OpenAI-style
``error`` event and nothing is forwarded. Messages that arrive before the other side's
channel is open wait in a bounded queue and are flushed in order when it opens."""

from __future__ import annotations

import collections
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

from .taps import Direction

logger = logging.getLogger(__name__)

EventTap = Callable[[Direction, dict[str, Any], float], None]
MAX_PENDING = 10_000

#: Server events that complete a turn's transcript: (role, field holding the text).
TRANSCRIPT_EVENTS: dict[str, tuple[str, str]] = {
    "conversation.item.input_audio_transcription.completed": ("user", "transcript"),
    "response.output_audio_transcript.done": ("agent", "transcript"),
    "response.audio_transcript.done": ("agent", "transcript"),
    "response.output_text.done": ("agent", "text"),
    "response.text.done": ("agent", "text"),
}


def transcript_entry(event: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """``(role, text, item_id)`` if ``event`` completes a turn's transcript."""
    spec = TRANSCRIPT_EVENTS.get(str(event.get("type")))
    if spec is None:
        return None
    text = event.get(spec[1])
    if not isinstance(text, str):
        return None
    item_id = event.get("item_id")
    return spec[0], text, item_id if isinstance(item_id, str) else None


def error_event(code: str, message: str, event_id: str | None = None) -> str:
    """An ``error`` server event in OpenAI's shape."""
    return json.dumps(
        {
            "type": "error",
            "event_id": "event_relay" + secrets.token_hex(8),
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": None,
                "event_id": event_id,
            },
        }
    )


class _Side:
    """One end of the bridge: a channel that may not be open yet, and its backlog."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channel: RTCDataChannel | None = None
        self.pending: collections.deque[str] = collections.deque()
        self.dropped = 0
        self.sent = 0

    @property
    def is_open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    def send(self, message: str) -> None:
        if self.is_open and not self.pending:
            self._send_now(message)
            return
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
            if self.dropped == 1:  # once: a peer without a channel would flood the log
                logger.warning("%s channel not open: its backlog is full, dropping", self.name)
        self.pending.append(message)
        self.flush()

    def flush(self) -> None:
        while self.is_open and self.pending:
            self._send_now(self.pending.popleft())

    def _send_now(self, message: str) -> None:
        assert self.channel is not None
        self.channel.send(message)
        self.sent += 1


class EventBridge:
    """Forwards events between the browser's and the upstream ``oai-events`` channels."""

    def __init__(self, tap: EventTap, *, max_event_bytes: int) -> None:
        self._tap = tap
        self._max_bytes = max_event_bytes
        self.caller = _Side("caller")
        self.upstream = _Side("upstream")
        self.rejected = 0

    def attach_caller(self, channel: RTCDataChannel) -> None:
        self._attach(self.caller, channel, self._from_caller)

    def attach_upstream(self, channel: RTCDataChannel) -> None:
        self._attach(self.upstream, channel, self._from_upstream)

    def _attach(
        self, side: _Side, channel: RTCDataChannel, handler: Callable[[str | bytes], None]
    ) -> None:
        side.channel = channel
        channel.on("message", handler)
        channel.on("open", side.flush)
        side.flush()  # aiortc may hand over a channel that is already open

    def _from_caller(self, message: str | bytes) -> None:
        event, problem = self._parse_client_event(message)
        if event is None:
            self.rejected += 1
            self.caller.send(error_event(*problem))
            return
        self._tap("client", event, time.time())
        self.upstream.send(message if isinstance(message, str) else message.decode())

    def _from_upstream(self, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if isinstance(event, dict):
            self._tap("server", event, time.time())
        self.caller.send(text)

    def _parse_client_event(
        self, message: str | bytes
    ) -> tuple[dict[str, Any] | None, tuple[str, str, str | None]]:
        if isinstance(message, bytes):
            return None, (
                "invalid_event",
                "Binary messages are not supported; send JSON text.",
                None,
            )
        if len(message.encode()) > self._max_bytes:
            return None, (
                "event_too_large",
                f"The event is larger than the relay's limit of {self._max_bytes} bytes.",
                None,
            )
        try:
            event = json.loads(message)
        except ValueError:
            return None, ("invalid_json", "The event is not valid JSON.", None)
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            event_id = event.get("event_id") if isinstance(event, dict) else None
            return None, (
                "invalid_event",
                "The event must be a JSON object with a string 'type'.",
                event_id if isinstance(event_id, str) else None,
            )
        return event, ("", "", None)
