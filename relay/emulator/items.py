"""The client's ``conversation.item.*`` events: create, retrieve, delete, truncate."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .conversation import Conversation, Entry, validate_client_item, without_audio
from .errors import ApiError
from .outlet import Outlet
from .session_config import Dialect

#: Room left for the rest of a ``conversation.item.retrieved`` event beside its audio.
EVENT_OVERHEAD_BYTES = 2048


def announce_item(out: Outlet, previous_item_id: str | None, item: dict[str, Any]) -> None:
    """A new item: ``conversation.item.added`` (beta: ``.created``) and, in GA, ``.done``."""
    echoed = without_audio(item)
    out.send(out.factory.item_added(previous_item_id, echoed))
    out.send_all(out.factory.item_done(previous_item_id, echoed))


@dataclass
class ItemCommands:
    conversation: Conversation
    out: Outlet
    dialect: Dialect
    #: The largest message the peer accepts on the data channel, as of now.
    max_message_bytes: Callable[[], int]

    def create(self, item: Any, previous_item_id: Any, has_previous: bool) -> None:
        stored, audio = validate_client_item(item, self.dialect)
        audio_ms = int(audio.size / 24) if audio is not None else 0
        entry = Entry(item=stored, audio=audio, audio_ms=audio_ms)
        previous = self.conversation.add(entry, previous_item_id, after=has_previous)
        announce_item(self.out, previous, stored)

    def retrieve(self, item_id: Any) -> None:
        entry = self.conversation.require(item_id)
        item = without_audio(entry.item)
        if entry.audio is not None and entry.audio.size:
            encoded = base64.b64encode(entry.audio.astype("<i2").tobytes()).decode("ascii")
            # The data channel cannot carry more than the peer accepts: leave the audio
            # out rather than fail the event.
            if len(encoded) + EVENT_OVERHEAD_BYTES < self.max_message_bytes():
                audio_part = next(
                    (p for p in item.get("content") or [] if p.get("type") == "input_audio"),
                    None,
                )
                if audio_part is not None:
                    audio_part["audio"] = encoded
        self.out.send(self.out.factory.item_retrieved(item))

    def delete(self, item_id: Any) -> None:
        entry = self.conversation.delete(item_id)
        self.out.send(self.out.factory.item_deleted(entry.id))

    def truncate(self, item_id: Any, content_index: int, audio_end_ms: int) -> None:
        entry = self.conversation.require(item_id)
        _check_truncatable(entry, content_index, audio_end_ms)
        entry.truncate(audio_end_ms)
        self.out.send(self.out.factory.item_truncated(entry.id, content_index, audio_end_ms))


def _check_truncatable(entry: Entry, content_index: int, audio_end_ms: int) -> None:
    content = entry.item.get("content") or []
    if entry.item.get("role") != "assistant" or not content:
        raise ApiError(
            "Only assistant messages with audio can be truncated.", "invalid_value", "item_id"
        )
    if content_index >= len(content) or content[content_index].get("type") not in (
        "audio",
        "output_audio",
    ):
        raise ApiError(
            "Content index does not refer to audio content.", "invalid_value", "content_index"
        )
    if audio_end_ms > entry.audio_ms:
        raise ApiError(
            f"Audio content of {entry.audio_ms}ms is already shorter than {audio_end_ms}ms",
            "invalid_value",
            "audio_end_ms",
        )
