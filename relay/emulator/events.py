"""Server events and the objects inside them, in the GA or the beta dialect.

Beta -> GA renames (protocol notes §3.3): ``conversation.item.created`` became
``conversation.item.added`` + ``conversation.item.done``; ``response.text.*`` became
``response.output_text.*``; ``response.audio*`` became ``response.output_audio*``;
assistant content ``text``/``audio`` became ``output_text``/``output_audio``. GA delta
events also carry an ``obfuscation`` padding string.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from . import ids
from .errors import ApiError
from .session_config import Dialect

Event = dict[str, Any]

#: Shown in ``rate_limits.updated`` (values seen in real traces).
REQUESTS_LIMIT = 20_000
TOKENS_LIMIT = 15_000_000


@dataclass(frozen=True)
class OutputSlot:
    """Where a response event points: the response, its output item (at
    ``output_index``) and, for content events, the item's only content part."""

    response_id: str
    item_id: str
    output_index: int = 0

    def of_item(self) -> dict[str, Any]:
        return {
            "response_id": self.response_id,
            "item_id": self.item_id,
            "output_index": self.output_index,
        }

    def of_content(self) -> dict[str, Any]:
        return {**self.of_item(), "content_index": 0}


class EventFactory:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        ga = dialect == "ga"
        self.text_delta_type = "response.output_text.delta" if ga else "response.text.delta"
        self.text_done_type = "response.output_text.done" if ga else "response.text.done"
        self.transcript_delta_type = (
            "response.output_audio_transcript.delta" if ga else "response.audio_transcript.delta"
        )
        self.transcript_done_type = (
            "response.output_audio_transcript.done" if ga else "response.audio_transcript.done"
        )
        self.audio_done_type = "response.output_audio.done" if ga else "response.audio.done"
        self.audio_delta_type = "response.output_audio.delta" if ga else "response.audio.delta"
        self.assistant_audio = "output_audio" if ga else "audio"
        self.assistant_text = "output_text" if ga else "text"

    @staticmethod
    def event(type_: str, **fields: Any) -> Event:
        return {"type": type_, "event_id": ids.event_id(), **fields}

    def _delta(self, type_: str, **fields: Any) -> Event:
        event = self.event(type_, **fields)
        if self.dialect == "ga":
            event["obfuscation"] = secrets.token_urlsafe(9)[: 4 + secrets.randbelow(10)]
        return event

    # -- session and errors --

    def error(self, error: ApiError, client_event_id: str | None = None) -> Event:
        body = error.body()["error"]
        body["event_id"] = client_event_id
        return self.event("error", error=body)

    def session_created(self, session: dict[str, Any]) -> Event:
        return self.event("session.created", session=session)

    def session_updated(self, session: dict[str, Any]) -> Event:
        return self.event("session.updated", session=session)

    # -- input audio buffer --

    def _buffer_event(self, name: str, item_id: str | None = None, **fields: Any) -> Event:
        """``input_audio_buffer.<name>``, about the user item ``item_id`` if any."""
        if item_id is not None:
            fields["item_id"] = item_id
        return self.event(f"input_audio_buffer.{name}", **fields)

    def speech_started(self, audio_start_ms: int, item_id: str) -> Event:
        return self._buffer_event("speech_started", item_id, audio_start_ms=audio_start_ms)

    def speech_stopped(self, audio_end_ms: int, item_id: str) -> Event:
        return self._buffer_event("speech_stopped", item_id, audio_end_ms=audio_end_ms)

    def committed(self, previous_item_id: str | None, item_id: str) -> Event:
        return self._buffer_event("committed", item_id, previous_item_id=previous_item_id)

    def input_cleared(self) -> Event:
        return self._buffer_event("cleared")

    def timeout_triggered(self, audio_start_ms: int, audio_end_ms: int, item_id: str) -> Event:
        span = {"audio_start_ms": audio_start_ms, "audio_end_ms": audio_end_ms}
        return self._buffer_event("timeout_triggered", item_id, **span)

    def audio_buffer(self, kind: str, response_id: str) -> Event:
        """``output_audio_buffer.started|stopped|cleared``; ids are 16 hex (observed)."""
        return {
            "type": f"output_audio_buffer.{kind}",
            "event_id": ids.audio_buffer_event_id(),
            "response_id": response_id,
        }

    # -- conversation --

    def item_added(self, previous_item_id: str | None, item: dict[str, Any]) -> Event:
        type_ = "conversation.item.added" if self.dialect == "ga" else "conversation.item.created"
        return self.event(type_, previous_item_id=previous_item_id, item=item)

    def item_done(self, previous_item_id: str | None, item: dict[str, Any]) -> list[Event]:
        """GA confirms the final item; the beta has no such event."""
        if self.dialect != "ga":
            return []
        return [self.event("conversation.item.done", previous_item_id=previous_item_id, item=item)]

    def item_retrieved(self, item: dict[str, Any]) -> Event:
        return self.event("conversation.item.retrieved", item=item)

    def item_deleted(self, item_id: str) -> Event:
        return self.event("conversation.item.deleted", item_id=item_id)

    def item_truncated(self, item_id: str, content_index: int, audio_end_ms: int) -> Event:
        where = {"item_id": item_id, "content_index": content_index}
        return self.event("conversation.item.truncated", **where, audio_end_ms=audio_end_ms)

    def _transcription(
        self, stage: str, item_id: str, logprobs: list[dict[str, Any]] | None, **fields: Any
    ) -> Event:
        """``conversation.item.input_audio_transcription.<stage>`` of a user item's
        audio (content part 0); deltas carry GA's obfuscation padding."""
        make = self._delta if stage == "delta" else self.event
        event = make(
            f"conversation.item.input_audio_transcription.{stage}",
            item_id=item_id,
            content_index=0,
            **fields,
        )
        if logprobs is not None:
            event["logprobs"] = logprobs
        return event

    def transcription_delta(
        self, item_id: str, delta: str, logprobs: list[dict[str, Any]] | None
    ) -> Event:
        return self._transcription("delta", item_id, logprobs, delta=delta)

    def transcription_completed(
        self,
        item_id: str,
        transcript: str,
        usage: dict[str, Any],
        logprobs: list[dict[str, Any]] | None,
    ) -> Event:
        return self._transcription(
            "completed", item_id, logprobs, transcript=transcript, usage=usage
        )

    def transcription_failed(self, item_id: str, error: dict[str, Any]) -> Event:
        return self.event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error=error,
        )

    def server_error(self, error: dict[str, Any]) -> Event:
        return self.event("error", error={**error, "event_id": None})

    # -- responses --

    def response_created(self, response: dict[str, Any]) -> Event:
        return self.event("response.created", response=response)

    def response_done(self, response: dict[str, Any]) -> Event:
        return self.event("response.done", response=response)

    def output_item(
        self, kind: str, response_id: str, output_index: int, item: dict[str, Any]
    ) -> Event:
        return self.event(
            f"response.output_item.{kind}",
            response_id=response_id,
            output_index=output_index,
            item=item,
        )

    def content_part(self, kind: str, slot: OutputSlot, part: dict[str, Any]) -> Event:
        return self.event(f"response.content_part.{kind}", **slot.of_content(), part=part)

    def text_delta(self, audio: bool, slot: OutputSlot, delta: str) -> Event:
        type_ = self.transcript_delta_type if audio else self.text_delta_type
        return self._delta(type_, **slot.of_content(), delta=delta)

    def text_done(self, audio: bool, slot: OutputSlot, text: str) -> Event:
        """The final transcript (audio responses) or text (text-only ones)."""
        type_, key = (
            (self.transcript_done_type, "transcript") if audio else (self.text_done_type, "text")
        )
        return self.event(type_, **slot.of_content(), **{key: text})

    def audio_delta(self, slot: OutputSlot, audio_b64: str) -> Event:
        """Agent audio as base64 PCM16 (WebSocket only; WebRTC plays it on the track)."""
        return self._delta(self.audio_delta_type, **slot.of_content(), delta=audio_b64)

    def audio_done(self, slot: OutputSlot) -> Event:
        return self.event(self.audio_done_type, **slot.of_content())

    def arguments_delta(self, slot: OutputSlot, call_id: str, delta: str) -> Event:
        return self._delta(
            "response.function_call_arguments.delta", **slot.of_item(), call_id=call_id, delta=delta
        )

    def arguments_done(self, slot: OutputSlot, call_id: str, name: str, arguments: str) -> Event:
        event = self.event(
            "response.function_call_arguments.done",
            **slot.of_item(),
            call_id=call_id,
            arguments=arguments,
        )
        if self.dialect == "ga":
            event["name"] = name
        return event

    def rate_limits(self, tokens_used: int) -> Event:
        tokens = {
            "name": "tokens",
            "limit": TOKENS_LIMIT,
            "remaining": max(TOKENS_LIMIT - tokens_used, 0),
            "reset_seconds": round(tokens_used * 60 / TOKENS_LIMIT, 3),
        }
        if self.dialect == "ga":  # GA traces carry only the tokens entry
            return self.event("rate_limits.updated", rate_limits=[tokens])
        requests = {
            "name": "requests",
            "limit": REQUESTS_LIMIT,
            "remaining": REQUESTS_LIMIT - 1,
            "reset_seconds": 0.003,
        }
        return self.event("rate_limits.updated", rate_limits=[requests, tokens])

    # -- object shapes --

    def assistant_part(self, audio: bool, text: str = "") -> dict[str, Any]:
        """``part`` of ``response.content_part.*``: still ``audio``/``text`` in GA."""
        return {"type": "audio", "transcript": text} if audio else {"type": "text", "text": text}

    def assistant_content(self, audio: bool, text: str) -> dict[str, Any]:
        if audio:
            return {"type": self.assistant_audio, "transcript": text}
        return {"type": self.assistant_text, "text": text}

    def response(
        self,
        response_id: str,
        *,
        status: str,
        output: list[dict[str, Any]],
        conversation_id: str | None,
        audio: bool,
        voice: str,
        output_format: Any,
        max_output_tokens: int | str,
        temperature: float,
        status_details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": status_details,
            "output": output,
            "conversation_id": conversation_id,
            "max_output_tokens": max_output_tokens,
            "usage": usage,
            "metadata": metadata,
        }
        if self.dialect == "ga":
            out["output_modalities"] = ["audio"] if audio else ["text"]
            out["audio"] = {"output": {"format": output_format, "voice": voice}}
        else:
            out["modalities"] = ["audio", "text"] if audio else ["text"]
            out["voice"] = voice
            out["output_audio_format"] = output_format
            out["temperature"] = temperature
        return out

    def usage(
        self,
        *,
        input_text: int,
        input_audio: int,
        output_text: int,
        output_audio: int,
        cached: int = 0,
    ) -> dict[str, Any]:
        input_details: dict[str, Any] = {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0},
        }
        if self.dialect == "ga":
            input_details["image_tokens"] = 0
            input_details["cached_tokens_details"]["image_tokens"] = 0
        return {
            "total_tokens": input_text + input_audio + output_text + output_audio,
            "input_tokens": input_text + input_audio,
            "output_tokens": output_text + output_audio,
            "input_token_details": input_details,
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }
