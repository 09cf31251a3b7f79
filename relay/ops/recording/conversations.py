"""One user's past conversations, from the recordings: what a browser signed in as that
user reads back (transcripts only, never audio or events). Synchronous file IO: run it
in a thread (``asyncio.to_thread``).

A recording is a user's when its metadata's ``user_id`` (the client secret's
``relay.user_id``, see :mod:`relay.policy`) is theirs; recordings still being written
are left out (their call is not over)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Final

from .store import MAX_SCANNED, TRANSCRIPT_JSONL, _newest_first, own_file

#: Conversations one answer holds at most, and by default.
MAX_CONVERSATIONS: Final = 50
DEFAULT_CONVERSATIONS: Final = 20
#: Transcript bytes of one conversation read at most (its first turns: a longer call's
#: later turns are left out, and ``truncated`` says so).
MAX_TRANSCRIPT_BYTES: Final = 128_000
#: Transcript bytes one answer reads at most, all conversations together.
MAX_ANSWER_BYTES: Final = 1_000_000
#: The metadata fields a user gets of their call (no host, process or user agent).
_FIELDS: Final = ("call_id", "started_at", "ended_at", "duration_secs", "outcome", "model")
_TURN: Final = ("role", "text", "item_id", "t")
#: The recording's roles (relay.taps.Role) as OpenAI names them.
_ROLES: Final[dict[Any, str]] = {"user": "user", "agent": "assistant"}


def user_conversations(
    root: Path, user_id: str, limit: int = DEFAULT_CONVERSATIONS
) -> dict[str, Any]:
    """``user_id``'s newest ``limit`` finished conversations, newest first: ``data``
    (each with its ``transcript``) and ``has_more``. At most :data:`MAX_SCANNED`
    recordings are looked at and :data:`MAX_ANSWER_BYTES` of transcripts read."""
    found: list[dict[str, Any]] = []
    budget = MAX_ANSWER_BYTES
    has_more = False
    for scanned, (metadata, folder) in enumerate(_newest_first(root, None, None)):
        if scanned >= MAX_SCANNED:
            break
        if metadata.get("user_id") != user_id or metadata.get("status") == "recording":
            continue
        if len(found) >= limit or budget <= 0:
            has_more = True
            break
        transcript, read, truncated = _transcript(folder, min(budget, MAX_TRANSCRIPT_BYTES))
        budget -= read
        conversation = {key: metadata.get(key) for key in _FIELDS}
        found.append(
            {
                "object": "realtime.conversation",
                **conversation,
                "transcript": transcript,
                "truncated": truncated,
            }
        )
    return {"object": "list", "data": found, "has_more": has_more}


def _transcript(folder: Path, max_bytes: int) -> tuple[list[dict[str, Any]], int, bool]:
    """The turns of ``folder``'s transcript (``role``: ``user`` or ``assistant``,
    ``text``, ``item_id``, ``t``),
    reading at most ``max_bytes``; how much was read; whether turns were left out."""
    path = own_file(folder, TRANSCRIPT_JSONL)
    if path is None:
        return [], 0, False
    try:
        with path.open("rb") as file:
            raw = file.read(max_bytes + 1)
    except OSError:
        return [], 0, False
    truncated = len(raw) > max_bytes
    if truncated:
        raw = raw[: raw.rfind(b"\n", 0, max_bytes) + 1]
    turns = []
    for line in raw.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("text"), str):
                role = _ROLES.get(entry.get("role"))
                if role is not None:
                    turns.append({**{k: entry.get(k) for k in _TURN}, "role": role})
    return turns, len(raw), truncated
