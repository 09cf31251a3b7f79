"""Client events on ``oai-events``: parsing, validation and dispatch.

Errors never end the session: each becomes an ``error`` event that echoes the
client's ``event_id`` (OpenAI: "GA errors are non-fatal unless a close follows").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .items import ItemCommands
from .outlet import Outlet
from .schema import AnyObject, Int, Nullable, Obj, Spec, Str, invalid_value
from .turns import Dialogue

logger = logging.getLogger(__name__)

GA_TYPES = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
BETA_TYPES = tuple(t for t in GA_TYPES if t != "session.close")

_ID = {"type": Str(), "event_id": Str(max_length=512)}
EVENT_SPECS: dict[str, Spec] = {
    "session.update": Obj({**_ID, "session": AnyObject()}, ["session"]),
    "session.close": Obj(_ID),
    "input_audio_buffer.append": Obj({**_ID, "audio": Str()}, ["audio"]),
    "input_audio_buffer.commit": Obj(_ID),
    "input_audio_buffer.clear": Obj(_ID),
    "conversation.item.create": Obj(
        {**_ID, "item": AnyObject(), "previous_item_id": Nullable(Str())}, ["item"]
    ),
    "conversation.item.truncate": Obj(
        {**_ID, "item_id": Str(), "content_index": Int(0), "audio_end_ms": Int(0)},
        ["item_id", "content_index", "audio_end_ms"],
    ),
    "conversation.item.delete": Obj({**_ID, "item_id": Str()}, ["item_id"]),
    "conversation.item.retrieve": Obj({**_ID, "item_id": Str()}, ["item_id"]),
    "response.create": Obj({**_ID, "response": Nullable(AnyObject())}),
    "response.cancel": Obj({**_ID, "response_id": Str()}),
    "output_audio_buffer.clear": Obj({**_ID, "response_id": Str()}),
}


@dataclass
class ClientEventHandler:
    """Validates each client event and hands it to the dialogue (turns, responses,
    session) or to the conversation's item commands."""

    dialogue: Dialogue
    items: ItemCommands
    out: Outlet
    on_session_updated: Callable[[], None]
    on_close: Callable[[], None]

    @property
    def types(self) -> tuple[str, ...]:
        return GA_TYPES if self.out.factory.dialect == "ga" else BETA_TYPES

    def handle(self, message: str | bytes) -> None:
        event_id: str | None = None
        try:
            event = self._parse(message)
            raw_id = event.get("event_id")
            event_id = raw_id if isinstance(raw_id, str) else None
            self._check_type(event)
            self._dispatch(event)
        except ApiError as error:
            self.out.send(self.out.factory.error(error, event_id))
        except Exception:  # a bug must not take the session down with it
            logger.exception("emulator: failed to handle a client event")
            self.out.send(
                self.out.factory.error(
                    ApiError(
                        "The server had an error while processing your request.",
                        "server_error",
                        type_="server_error",
                    ),
                    event_id,
                )
            )

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        if isinstance(message, bytes):
            raise ApiError(
                "Binary messages are not supported; send events as JSON text.",
                "invalid_event",
            )
        try:
            event = json.loads(message)
        except ValueError as exc:
            raise ApiError(
                f"We could not parse the JSON body of your event: {exc}", "invalid_json"
            ) from exc
        if not isinstance(event, dict):
            raise ApiError("The event must be a JSON object.", "invalid_event")
        return event

    def _check_type(self, event: dict[str, Any]) -> None:
        if "type" not in event:
            raise ApiError("The 'type' field is missing.", "invalid_event", "type")
        kind = event["type"]
        if not isinstance(kind, str) or kind not in self.types:
            raise invalid_value("type", kind, self.types)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        EVENT_SPECS[kind].check(event, "")
        d = self.dialogue
        if kind == "session.update":
            d.update_session(event["session"])
            self.on_session_updated()
        elif kind == "session.close":
            self.on_close()
        elif kind == "input_audio_buffer.append":
            d.append_audio(event["audio"])
        elif kind == "input_audio_buffer.commit":
            d.commit_input()
        elif kind == "input_audio_buffer.clear":
            d.clear_input()
        elif kind == "conversation.item.create":
            # null or absent: append; "root": the beginning; an id: right after it.
            previous = event.get("previous_item_id")
            self.items.create(event["item"], previous, isinstance(previous, str))
        elif kind == "conversation.item.truncate":
            self.items.truncate(event["item_id"], event["content_index"], event["audio_end_ms"])
        elif kind == "conversation.item.delete":
            self.items.delete(event["item_id"])
        elif kind == "conversation.item.retrieve":
            self.items.retrieve(event["item_id"])
        elif kind == "response.create":
            d.create_response(event.get("response"))
        elif kind == "response.cancel":
            d.cancel_response(event.get("response_id"))
        elif kind == "output_audio_buffer.clear":
            d.clear_output()
