"""The conversation: ordered items, plus validation of client-created items.

Items are kept in their dialect's wire shape. Audio never travels inside them over
WebRTC; user audio is kept beside the item (bounded) only so that
``conversation.item.retrieve`` can return it, as OpenAI's does.
"""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ids
from .errors import ApiError
from .schema import Enum, Json, ListOf, Obj, Str, Tagged, child, invalid_value
from .session_config import Dialect

#: Items beyond this are dropped from the front (OpenAI truncates old context too).
MAX_ITEMS = 500
#: User audio is kept for the most recent few items only.
KEEP_AUDIO_ITEMS = 20

_STATUS = Enum("completed", "incomplete", "in_progress")
_CONTENT = Obj(
    {
        "type": Enum(
            "input_text",
            "input_audio",
            "input_image",
            "text",
            "output_text",
            "audio",
            "output_audio",
            "item_reference",
        ),
        "text": Str(),
        "audio": Str(),
        "transcript": Str(),
        "image_url": Str(),
        "detail": Enum("auto", "low", "high"),
        "id": Str(),
    },
    ["type"],
)
_COMMON = {
    "id": Str(max_length=32, min_length=1),
    "object": Enum("realtime.item"),
    "status": _STATUS,
}
ITEM = Tagged(
    {
        "message": Obj(
            {
                **_COMMON,
                "type": Enum("message"),
                "role": Enum("user", "assistant", "system"),
                "content": ListOf(_CONTENT),
            },
            ["role", "content"],
        ),
        "function_call": Obj(
            {
                **_COMMON,
                "type": Enum("function_call"),
                "name": Str(min_length=1),
                "arguments": Str(),
                "call_id": Str(),
            },
            ["name", "arguments"],
        ),
        "function_call_output": Obj(
            {
                **_COMMON,
                "type": Enum("function_call_output"),
                "call_id": Str(min_length=1),
                "output": Str(),
            },
            ["call_id", "output"],
        ),
    }
)


def _allowed_content(dialect: Dialect, role: str) -> tuple[str, ...]:
    if role == "user":
        return (
            ("input_text", "input_audio", "input_image")
            if dialect == "ga"
            else ("input_text", "input_audio")
        )
    if role == "system":
        return ("input_text",)
    return ("output_text",) if dialect == "ga" else ("text",)


def validate_client_item(value: Json, dialect: Dialect) -> tuple[dict[str, Any], np.ndarray | None]:
    """A ``conversation.item.create`` item as the server stores it (id, object and
    status filled in; audio split off, decoded to 24 kHz int16 PCM)."""
    item: dict[str, Any] = ITEM.check(value, "item")
    audio: np.ndarray | None = None
    if item["type"] == "message":
        role = item["role"]
        allowed = _allowed_content(dialect, role)
        for index, part in enumerate(item["content"]):
            path = f"item.content[{index}].type"
            kind = part["type"]
            if role == "assistant" and kind in ("audio", "output_audio"):
                raise ApiError(
                    "Cannot populate assistant audio content; use "
                    f"'{allowed[0]}' for assistant messages.",
                    "invalid_value",
                    path,
                )
            if kind not in allowed:
                raise invalid_value(path, kind, allowed)
            if kind in ("input_text", "text", "output_text") and "text" not in part:
                raise ApiError(
                    f"Missing required parameter: '{child(path[:-5], 'text')}'.",
                    "missing_required_parameter",
                    child(path[:-5], "text"),
                )
            if kind == "input_audio" and "audio" in part:
                try:
                    raw = base64.b64decode(part["audio"], validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise ApiError(
                        f"Invalid 'item.content[{index}].audio': expected base64-encoded audio.",
                        "invalid_value",
                        f"item.content[{index}].audio",
                    ) from exc
                pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
                audio = pcm if audio is None else np.concatenate([audio, pcm])
                part.setdefault("transcript", None)
    item.setdefault("id", ids.item_id())
    item["object"] = "realtime.item"
    item.setdefault("status", "completed")
    return item, audio


def without_audio(item: dict[str, Any]) -> dict[str, Any]:
    """The item as echoed in ``added``/``done`` events: no audio bytes."""
    out = copy.deepcopy(item)
    for part in out.get("content") or []:
        part.pop("audio", None)
    return out


@dataclass
class Entry:
    item: dict[str, Any]
    #: User audio (24 kHz mono int16), kept only for recent items.
    audio: np.ndarray | None = None
    #: Length of the audio this item stands for (user speech or assistant reply).
    audio_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.item["id"])

    def truncate(self, audio_end_ms: int) -> None:
        """Drop the unheard part of an assistant item: its audio past ``audio_end_ms``
        and the matching share of its transcript (cut at a word boundary)."""
        heard = min(audio_end_ms / (self.audio_ms or 1), 1.0)
        for part in self.item.get("content") or []:
            text = part.get("transcript")
            if not isinstance(text, str):
                continue
            keep = int(len(text) * heard)
            cut = text[:keep]
            if keep < len(text) and " " in cut:
                cut = cut[: cut.rfind(" ")]
            part["transcript"] = cut
        self.audio_ms = min(self.audio_ms, audio_end_ms)


class Conversation:
    def __init__(self) -> None:
        self.id = ids.conversation_id()
        self._entries: list[Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def last_id(self) -> str | None:
        return self._entries[-1].id if self._entries else None

    def get(self, item_id: str) -> Entry | None:
        return next((e for e in self._entries if e.id == item_id), None)

    def require(self, item_id: Json, param: str = "item_id") -> Entry:
        entry = self.get(item_id) if isinstance(item_id, str) else None
        if entry is None:
            raise ApiError(f"Item with item_id not found: {item_id}", "item_not_found", param)
        return entry

    def add(
        self, entry: Entry, previous_item_id: str | None = None, *, after: bool = False
    ) -> str | None:  # noqa: E501
        """Insert ``entry``; at the end unless ``after`` (then after ``previous_item_id``,
        ``None``/``"root"`` meaning the beginning). Returns the actual previous id."""
        if self.get(entry.id) is not None:
            raise ApiError(f"Item with id '{entry.id}' already exists.", "invalid_value", "item.id")
        if not after:
            index = len(self._entries)
        elif previous_item_id in (None, "root"):
            index = 0
        else:
            found = [i for i, e in enumerate(self._entries) if e.id == previous_item_id]
            if not found:
                raise ApiError(
                    f"Previous item with id '{previous_item_id}' not found.",
                    "item_not_found",
                    "previous_item_id",
                )
            index = found[0] + 1
        previous = self._entries[index - 1].id if index > 0 else None
        self._entries.insert(index, entry)
        if len(self._entries) > MAX_ITEMS:
            del self._entries[0]
        with_audio = [e for e in self._entries if e.audio is not None]
        for old in with_audio[:-KEEP_AUDIO_ITEMS]:
            old.audio = None
        return previous

    def delete(self, item_id: Json) -> Entry:
        entry = self.require(item_id)
        self._entries.remove(entry)
        return entry
