"""Input audio transcription: the emulator's deterministic "transcript" of an
utterance, streamed the way OpenAI's transcription models stream theirs.

With recognition on (:class:`~.voice.Senses`), the transcript is the words the
emulator recognised (:mod:`.hearing`), by a per-call :class:`Listener` (one utterance
at a time, with a timeout). Otherwise, or if nothing was recognised, it is derived from
what was received: ``"I spoke for 2.3 seconds."`` (speech proper, without padding or
trailing silence). ``whisper-1`` sends it as one delta and bills by duration;
``gpt-4o-*`` models send it word by word and bill tokens.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any

import numpy as np

from . import hearing
from .conversation import Entry
from .faults import transcription_error_body
from .outlet import Outlet
from .responses import INPUT_AUDIO_MS_PER_TOKEN, text_tokens

#: Transcription "latency" after commit, and pace of incremental deltas.
TRANSCRIPTION_DELAY_SECS = 0.12
TRANSCRIPTION_DELTA_SECS = 0.03
_WORDS = re.compile(r"\S+\s*")


def describe_speech(speech_ms: int) -> str:
    """The emulator's "transcription" of an utterance."""
    if speech_ms <= 0:
        return ""
    return f"I spoke for {speech_ms / 1000.0:.1f} seconds."


def logprobs_of(text: str) -> list[dict[str, Any]]:
    """Near-certain log probabilities, one per word (``include`` logprobs)."""
    return [
        {"token": token, "logprob": -0.01, "bytes": list(token.encode())}
        for token in _WORDS.findall(text)
    ]


def _usage(model: str, audio_ms: int, transcript: str) -> dict[str, Any]:
    if model == "whisper-1":
        return {"type": "duration", "seconds": round(audio_ms / 1000, 1)}
    audio_tokens = audio_ms // INPUT_AUDIO_MS_PER_TOKEN
    output = text_tokens(transcript)
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "output_tokens": output,
        "total_tokens": audio_tokens + output,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
    }


async def transcribe(
    entry: Entry,
    transcript: str,
    *,
    model: str,
    with_logprobs: bool,
    out: Outlet,
    heard: Awaitable[str | None] | None = None,
) -> None:
    """Stream the transcription events of a committed user item, then store the
    transcript in the item itself. ``heard``: the recognised words (from
    :meth:`Listener.hear`), which replace ``transcript`` unless empty."""
    await asyncio.sleep(TRANSCRIPTION_DELAY_SECS)
    if heard is not None:
        transcript = (await heard) or transcript
    if out.faults.on("transcription_failed"):
        error = transcription_error_body()
        out.send(out.factory.transcription_failed(entry.id, error))
        return
    deltas = [transcript] if model == "whisper-1" else _WORDS.findall(transcript) or [""]
    for delta in deltas:
        logprobs = logprobs_of(delta) if with_logprobs else None
        out.send(out.factory.transcription_delta(entry.id, delta, logprobs))
        if len(deltas) > 1:
            await asyncio.sleep(TRANSCRIPTION_DELTA_SECS)
    for part in entry.item["content"]:
        if part.get("type") == "input_audio":
            part["transcript"] = transcript
    usage = _usage(model, entry.audio_ms, transcript)
    logprobs = logprobs_of(transcript) if with_logprobs else None
    out.send(out.factory.transcription_completed(entry.id, transcript, usage, logprobs))


#: The rate of a committed item's audio (``Entry.audio``).
ENTRY_RATE = 24000


class Listener:
    """One call's ears: recognises its committed utterances one at a time."""

    def __init__(self, timeout_secs: float = 15.0) -> None:
        self.timeout_secs = timeout_secs
        self._turn = asyncio.Lock()

    def hear(self, entry: Entry) -> asyncio.Task[str | None]:
        """Start recognising ``entry``'s audio; the task's result (also stored as
        ``entry.extra["heard"]``) is its words, ``None`` if unavailable or timed out."""
        return asyncio.ensure_future(self._hear(entry, entry.audio))

    async def _hear(self, entry: Entry, audio: np.ndarray | None) -> str | None:
        if audio is None or audio.size == 0:
            return None
        async with self._turn:
            words = await hearing.recognize(audio, ENTRY_RATE, self.timeout_secs)
        if words is not None:
            entry.extra["heard"] = words
        return words
