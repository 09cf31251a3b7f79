"""Identifiers in the shapes OpenAI uses (protocol notes §3.1).

Server ids are a prefix plus 21 base62 characters. The first 7 encode the time in
milliseconds, so ids sort roughly by creation time as OpenAI's do; the rest are random.
"""

from __future__ import annotations

import secrets
import string
import time

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def base62_id(prefix: str) -> str:
    """``prefix_`` + 21 base62 characters, e.g. ``event_BaU74gazRYNO8gV1WlPvK``."""
    stamp = _base62(int(time.time() * 1000), 7)
    rest = "".join(secrets.choice(_BASE62) for _ in range(14))
    return f"{prefix}_{stamp}{rest}"


def event_id() -> str:
    return base62_id("event")


def audio_buffer_event_id() -> str:
    """``output_audio_buffer.*`` events use 16 lowercase hex digits instead (observed)."""
    return f"event_{secrets.token_hex(8)}"


def session_id() -> str:
    return base62_id("sess")


def response_id() -> str:
    return base62_id("resp")


def item_id() -> str:
    return base62_id("item")


def conversation_id() -> str:
    return base62_id("conv")


def ephemeral_key() -> str:
    return f"ek_{secrets.token_hex(16)}"


def call_id() -> str:
    return f"rtc_{secrets.token_hex(16)}"
