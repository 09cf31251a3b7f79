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
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

from .taps import Role, TappedEvent, TranscriptEntry

logger = logging.getLogger(__name__)

EventTap = Callable[[TappedEvent], None]
MAX_PENDING = 10_000
#: Deepest nesting of JSON arrays and objects accepted in an event (OpenAI's events
#: nest a handful of levels; a deep one is an attack on whoever parses it next).
MAX_EVENT_DEPTH = 64
_EVENT_ID = re.compile(r'"event_id"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"')

#: Server events that complete a turn's transcript: (role, field holding the text).
TRANSCRIPT_EVENTS: dict[str, tuple[Role, str]] = {
    "conversation.item.input_audio_transcription.completed": ("user", "transcript"),
    "response.output_audio_transcript.done": ("agent", "transcript"),
    "response.audio_transcript.done": ("agent", "transcript"),
    "response.output_text.done": ("agent", "text"),
    "response.text.done": ("agent", "text"),
}


def transcript_entry(event: TappedEvent) -> TranscriptEntry | None:
    """The turn ``event`` completes, if it is a server event that completes one."""
    spec = TRANSCRIPT_EVENTS.get(event.type)
    if spec is None or event.direction != "server":
        return None
    text = event.data.get(spec[1])
    if not isinstance(text, str):
        return None
    item_id = event.data.get("item_id")
    return TranscriptEntry(
        spec[0], text, item_id if isinstance(item_id, str) else None, event.wallclock
    )


def _depth(value: object, limit: int) -> int:
    """Nesting depth of parsed JSON, counting no further than ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > limit:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_event(text: str) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """A data-channel message as a JSON object with a string ``type``, or why not.

    Whatever passes can be re-encoded as UTF-8 JSON by any observer: no lone
    surrogates, no nesting deeper than :data:`MAX_EVENT_DEPTH`."""
    try:
        text.encode("utf-8")
        event = json.loads(text)
    except UnicodeEncodeError:
        return None, ("invalid_event", "The event contains text that is not valid Unicode.")
    except RecursionError:
        return None, ("invalid_event", "The event is nested too deeply.")
    except ValueError:
        return None, ("invalid_json", "The event is not valid JSON.")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None, ("invalid_event", "The event must be a JSON object with a string 'type'.")
    if _depth(event, MAX_EVENT_DEPTH) > MAX_EVENT_DEPTH:
        return None, ("invalid_event", f"The event nests deeper than {MAX_EVENT_DEPTH} levels.")
    try:  # a lone surrogate written as a JSON escape ("\\ud800") is caught here
        json.dumps(event, ensure_ascii=False).encode("utf-8")
        return event, ("", "")
    except UnicodeEncodeError:
        return None, ("invalid_event", "The event contains text that is not valid Unicode.")


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
        if isinstance(message, bytes):
            event, problem = (
                None,
                ("invalid_event", "Binary messages are not supported; send JSON text."),
            )
        elif (
            len(message) > self._max_bytes
            or len(message.encode("utf-8", "replace")) > self._max_bytes
        ):
            limit = self._max_bytes
            event, problem = (
                None,
                (
                    "event_too_large",
                    f"The event is larger than the relay's limit of {limit} bytes.",
                ),
            )
        else:
            event, problem = parse_event(message)
        if event is None or isinstance(message, bytes):
            self.rejected += 1
            self.caller.send(error_event(*problem, event_id=_event_id_of(message)))
            return
        self._tap(TappedEvent("client", event["type"], event, message, time.time()))
        self.upstream.send(message)

    def _from_upstream(self, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        event, _ = parse_event(text)
        if event is not None:  # observers see only what they can encode
            self._tap(TappedEvent("server", event["type"], event, text, time.time()))
        self.caller.send(text)


def _event_id_of(message: str | bytes) -> str | None:
    """The ``event_id`` of a refused event, if one can be read cheaply and safely."""
    if not isinstance(message, str) or len(message) > 4096:
        return None
    match = _EVENT_ID.search(message)
    return match.group(1) if match else None
