"""The ``oai-events`` bridge: every data-channel event forwarded in order, both ways.

Messages are forwarded as the exact text received (no re-serialisation), after a
cheap check: a browser's message must be a JSON object with a string ``type`` and
no larger than ``max_event_bytes``; otherwise the browser gets an OpenAI-style
``error`` event and nothing is forwarded. A call opened with a client secret carries its
policy (:mod:`relay.policy`): a browser event it refuses gets an ``error`` event
(``relay_policy_denied``), is counted and tapped as ``relay.policy_denied``, and is never
forwarded; server events it hides never reach the browser (observers still see them).
Messages that arrive before the other side's channel is open wait in a bounded queue and
are flushed in order when it opens."""

from __future__ import annotations

import collections
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCDataChannel

from . import jsontext
from .policy import DENIED, PolicyDenied, SessionPolicy
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


def parse_event(text: str) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """A data-channel message as a JSON object with a string ``type``, or why not.

    Whatever passes can be re-encoded as strict UTF-8 JSON by any observer (see
    :mod:`relay.jsontext`): no NaN, no lone surrogates, no absurd nesting."""
    try:
        text.encode("utf-8")
        event = jsontext.loads(text, MAX_EVENT_DEPTH)
    except UnicodeEncodeError:
        return None, ("invalid_event", "The event contains text that is not valid Unicode.")
    except jsontext.NotStrictJson as exc:
        code = "invalid_json" if str(exc).startswith("not valid JSON") else "invalid_event"
        return None, (code, f"The event is {exc}.")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None, ("invalid_event", "The event must be a JSON object with a string 'type'.")
    return event, ("", "")


def error_event(
    code: str, message: str, event_id: str | None = None, param: str | None = None
) -> str:
    """An ``error`` server event in OpenAI's shape."""
    return json.dumps(
        {
            "type": "error",
            "event_id": "event_relay" + secrets.token_hex(8),
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        }
    )


#: The type of the tapped value that tells observers a client event was refused by
#: the call's policy (direction ``client``; never forwarded to OpenAI).
POLICY_DENIED_EVENT = "relay.policy_denied"
#: Refused events up to this size are shown whole to observers.
_SHOWN_DENIED_BYTES = 4096


class EventChannel(Protocol):
    """What the bridge uses of a channel: an ``RTCDataChannel``, or a caller leg's
    adapter of another carrier (the WebSocket leg's :class:`SocketChannel`)."""

    @property
    def readyState(self) -> str: ...  # RTCDataChannel's name

    def send(self, message: str) -> None: ...

    def on(self, name: str, handler: Callable[..., Any]) -> Any: ...


class _Side:
    """One end of the bridge: a channel that may not be open yet, and its backlog."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.channel: RTCDataChannel | EventChannel | None = None
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
        #: Browser events not forwarded: malformed ones and policy refusals.
        self.rejected = 0
        #: Of those, the ones the call's policy refused.
        self.policy_denied = 0
        #: Server events kept from the browser by the call's policy.
        self.hidden = 0
        #: What the browser may send and see (a client secret's policy); ``None``: all.
        self.policy: SessionPolicy | None = None

    def attach_caller(self, channel: RTCDataChannel | EventChannel) -> None:
        self._attach(self.caller, channel, self._from_caller)

    def attach_upstream(self, channel: RTCDataChannel | EventChannel) -> None:
        self._attach(self.upstream, channel, self._from_upstream)

    def _attach(
        self,
        side: _Side,
        channel: RTCDataChannel | EventChannel,
        handler: Callable[[str | bytes], None],
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
        if self.policy is not None:
            try:
                self.policy.check_client(event)
            except PolicyDenied as denied:
                self._deny(event, message, denied)
                return
        self._tap(TappedEvent("client", event["type"], event, message, time.time()))
        self.upstream.send(message)

    def send_trusted(self, event: dict[str, Any], text: str) -> None:
        """A client event from a trusted party (the app backend's sideband): no policy,
        tapped like the browser's, then forwarded upstream in order."""
        self._tap(TappedEvent("client", event["type"], event, text, time.time()))
        self.upstream.send(text)

    def _deny(self, event: dict[str, Any], message: str, denied: PolicyDenied) -> None:
        """Refuse a browser event: an ``error`` back, counted, and shown to observers."""
        self.rejected += 1
        self.policy_denied += 1
        event_id = event.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        self.caller.send(error_event(DENIED, denied.message, event_id, denied.param))
        data: dict[str, Any] = {
            "type": POLICY_DENIED_EVENT,
            "event_type": event["type"],
            "event_id": event_id,
            "param": denied.param,
            "message": denied.message,
        }
        if len(message) <= _SHOWN_DENIED_BYTES:
            data["event"] = event
        self._tap(TappedEvent("client", POLICY_DENIED_EVENT, data, json.dumps(data), time.time()))

    def _from_upstream(self, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        event, _ = parse_event(text)
        if event is not None:  # observers see only what they can encode
            self._tap(TappedEvent("server", event["type"], event, text, time.time()))
            if self.policy is not None and self.policy.filters_server_events:
                shown = self.policy.server_view(event, text)
                if shown is None:
                    self.hidden += 1
                    return
                text = shown
        self.caller.send(text)


def _event_id_of(message: str | bytes) -> str | None:
    """The ``event_id`` of a refused event, if one can be read cheaply and safely."""
    if not isinstance(message, str) or len(message) > 4096:
        return None
    match = _EVENT_ID.search(message)
    return match.group(1) if match else None
