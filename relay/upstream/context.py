"""What a renewed upstream session needs to know of the call so far, read from the
server events the call already sees (no extra requests to OpenAI):

* :class:`Transcript`: the conversation's items as text (user and agent transcripts,
  typed messages, tool calls and their outputs), in order, and the same items as
  ``conversation.item.create`` payloads within a token budget, most recent first;
* :class:`Activity`: whether the call is at a quiet moment (nobody speaking, no
  response in flight, no user transcript still to come) where a swap goes unnoticed;
* :class:`SessionUpdates`: the ``session.update`` fields the browser or the backend
  changed (within the call's policy), replayed on the new session.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ItemKind = Literal["message", "function_call", "function_call_output"]
_KINDS: tuple[ItemKind, ...] = ("message", "function_call", "function_call_output")

#: Characters per token, OpenAI's rule of thumb for English text.
CHARS_PER_TOKEN = 4
#: Tokens an item costs beyond its text (role, framing).
ITEM_OVERHEAD_TOKENS = 4
#: After the last change of activity, how long it must stay calm before a swap (the
#: server VAD's automatic ``response.created`` follows ``speech_stopped`` within this).
SETTLE_SECS = 0.5
#: A user audio item waits this long at most for its transcript before a swap.
TRANSCRIPT_WAIT_SECS = 3.0
#: Items remembered (the oldest forgotten first): far more than any context budget.
MAX_ITEMS = 1000

_TEXT_EVENTS = {
    "conversation.item.input_audio_transcription.completed": "transcript",
    "response.output_audio_transcript.done": "transcript",
    "response.audio_transcript.done": "transcript",
    "response.output_text.done": "text",
    "response.text.done": "text",
}
_ITEM_EVENTS = (
    "conversation.item.added",
    "conversation.item.created",
    "conversation.item.done",
    "conversation.item.retrieved",
    "response.output_item.done",
)


@dataclass
class _Item:
    kind: ItemKind
    role: str = ""
    text: str = ""
    name: str = ""
    call_id: str = ""

    def payload(self, dialect: str) -> dict[str, Any] | None:
        """The item as a ``conversation.item.create`` item (``None``: nothing to carry)."""
        if self.kind == "function_call":
            return {
                "type": "function_call",
                "name": self.name,
                "call_id": self.call_id,
                "arguments": self.text or "{}",
            }
        if self.kind == "function_call_output":
            return {"type": "function_call_output", "call_id": self.call_id, "output": self.text}
        if not self.text.strip() or self.role not in ("user", "assistant", "system"):
            return None
        part = "input_text" if self.role != "assistant" else "output_text"
        if self.role == "assistant" and dialect == "beta":
            part = "text"
        content = [{"type": part, "text": self.text}]
        return {"type": "message", "role": self.role, "content": content}

    def tokens(self) -> int:
        return (len(self.text) + len(self.name)) // CHARS_PER_TOKEN + ITEM_OVERHEAD_TOKENS


def _text_of(item: dict[str, Any]) -> str:
    parts = item.get("content") if isinstance(item.get("content"), list) else []
    texts = []
    for part in parts or []:
        if isinstance(part, dict):
            text = part.get("text") or part.get("transcript")
            if isinstance(text, str) and text:
                texts.append(text)
    return " ".join(texts)


class Transcript:
    """The conversation's items as text, keyed and ordered by item id."""

    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}

    def __len__(self) -> int:
        return len(self._items)

    def on_server_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind in _ITEM_EVENTS and isinstance(event.get("item"), dict):
            self._upsert(event["item"])
        elif kind in _TEXT_EVENTS:
            item_id, text = event.get("item_id"), event.get(_TEXT_EVENTS[str(kind)])
            if isinstance(item_id, str) and isinstance(text, str):
                role = "user" if "input_audio" in str(kind) else "assistant"
                self._entry(item_id, "message", role).text = text
        elif kind == "conversation.item.deleted":
            self._items.pop(str(event.get("item_id")), None)

    def _upsert(self, item: dict[str, Any]) -> None:
        item_id = item.get("id")
        kind = next((k for k in _KINDS if k == item.get("type")), None)
        if not isinstance(item_id, str) or kind is None:
            return
        entry = self._entry(item_id, kind)
        if kind == "message":
            entry.role = str(item.get("role") or entry.role)
            entry.text = _text_of(item) or entry.text
        elif kind == "function_call":
            entry.name = str(item.get("name") or entry.name)
            entry.call_id = str(item.get("call_id") or entry.call_id)
            entry.text = str(item.get("arguments") or entry.text)
        else:
            entry.call_id = str(item.get("call_id") or entry.call_id)
            entry.text = str(item.get("output") or entry.text)

    def carriable(self, dialect: str) -> set[str]:
        """The ids of the items that have something to carry now."""
        return {i for i, entry in self._items.items() if entry.payload(dialect) is not None}

    def _entry(self, item_id: str, kind: ItemKind, role: str = "") -> _Item:
        entry = self._items.get(item_id)
        if entry is None:
            entry = self._items[item_id] = _Item(kind, role)
            if len(self._items) > MAX_ITEMS:
                del self._items[next(iter(self._items))]
        return entry

    def items(
        self, budget_tokens: int, dialect: str, skip: frozenset[str] = frozenset()
    ) -> list[tuple[str, dict[str, Any]]]:
        """``(item id, payload)`` of the most recent items that fit ``budget_tokens``, in
        conversation order, leaving out the ids in ``skip`` (already carried)."""
        chosen: list[tuple[str, dict[str, Any]]] = []
        used = 0
        for item_id, entry in reversed(self._items.items()):
            payload = entry.payload(dialect)
            if payload is None or item_id in skip:
                continue
            used += entry.tokens()
            if used > budget_tokens:
                break
            chosen.append((item_id, payload))
        chosen.reverse()
        called = {p.get("call_id") for _, p in chosen if p["type"] == "function_call"}
        while chosen and chosen[0][1]["type"] == "function_call_output" and not skip:
            if chosen[0][1].get("call_id") in called:
                break
            chosen.pop(0)  # an output whose call fell out of the budget
        return chosen


class Activity:
    """Whether the call is at a quiet moment, from the server's events."""

    def __init__(self) -> None:
        self.speaking = False
        self.playing = False
        self.playing_response = ""
        self.responses: set[str] = set()
        self.awaiting_transcript: dict[str, float] = {}
        self.changed_at = 0.0

    def on_server_event(self, event: Mapping[str, Any], now: float) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.speech_started":
            self.speaking = True
        elif kind == "input_audio_buffer.speech_stopped":
            self.speaking = False
        elif kind == "response.created":
            self.responses.add(str((event.get("response") or {}).get("id")))
        elif kind == "response.done":
            self.responses.discard(str((event.get("response") or {}).get("id")))
        elif kind == "output_audio_buffer.started":
            self.playing = True
            self.playing_response = str(event.get("response_id") or "")
        elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self.playing = False
        elif kind in ("conversation.item.added", "conversation.item.created"):
            self._user_audio(event.get("item"), now)
            return
        elif str(kind).startswith("conversation.item.input_audio_transcription.") and str(
            kind
        ).endswith(("completed", "failed")):
            self.awaiting_transcript.pop(str(event.get("item_id")), None)
        else:
            return
        self.changed_at = now

    def _user_audio(self, item: Any, now: float) -> None:
        if not isinstance(item, dict) or item.get("role") != "user":
            return
        parts = item.get("content") or []
        if any(isinstance(p, dict) and p.get("type") == "input_audio" for p in parts):
            self.awaiting_transcript[str(item.get("id"))] = now

    def quiet(self, now: float) -> bool:
        waiting = [t for t in self.awaiting_transcript.values() if now - t < TRANSCRIPT_WAIT_SECS]
        return (
            not self.speaking
            and not self.playing
            and not self.responses
            and not waiting
            and now - self.changed_at >= SETTLE_SECS
        )


class SessionUpdates:
    """The session fields changed during the call (``session.update`` events that the
    call's policy let through), merged, to replay on a renewed session."""

    def __init__(self) -> None:
        self.merged: dict[str, Any] = {}

    def on_client_event(self, event: Mapping[str, Any]) -> None:
        session = event.get("session")
        if event.get("type") == "session.update" and isinstance(session, dict):
            _merge(self.merged, copy.deepcopy(session))


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
