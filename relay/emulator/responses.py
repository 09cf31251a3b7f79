"""One model response: its event sequence, its streamed transcript and its audio.

Sequence (protocol notes §3.4): ``response.created`` [beta: ``rate_limits.updated``],
``response.output_item.added``, ``conversation.item.added`` (beta ``.created``),
``response.content_part.added``, transcript/text deltas (audio queued on the track as
each word is "generated"), then ``*.done`` events, ``response.done`` and [GA]
``rate_limits.updated``. Generation runs ahead of playback (``GENERATION_SPEEDUP``), so
``response.done`` usually arrives while the audio is still playing, as with OpenAI.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import ids
from .conversation import Conversation, Entry
from .events import OutputSlot
from .faults import server_error_body
from .outlet import Outlet
from .playout import RATE
from .voice import speak, utter

#: How much faster than real time the emulated model "generates" audio.
GENERATION_SPEEDUP = 2.0
#: Pace of text-only deltas.
TEXT_DELTA_SECS = 0.02
#: Token estimates used in ``usage`` (OpenAI bills ~10 input / ~20 output audio tokens
#: per second, ~4 characters per text token).
INPUT_AUDIO_MS_PER_TOKEN = 100
OUTPUT_AUDIO_MS_PER_TOKEN = 50
CHARS_PER_TOKEN = 4


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class ResponsePlan:
    """What a response will say, decided when it is created."""

    response_id: str
    audio: bool
    text: str
    voice: str
    speed: float
    output_format: Any
    temperature: float
    in_conversation: bool
    max_output_tokens: int | None
    input_text_tokens: int
    input_audio_tokens: int
    metadata: dict[str, Any] | None = None
    #: (name, arguments) when the response calls a function instead of speaking.
    function: tuple[str, str] | None = None


@dataclass
class ResponseRun:
    plan: ResponsePlan
    out: Outlet
    conversation: Conversation
    delay_secs: float
    on_finished: Callable[[ResponseRun], None]
    item_id: str = field(default_factory=ids.item_id)
    task: asyncio.Task[None] | None = None
    created: bool = False
    finished: bool = False
    spoken: str = ""
    audio_ms: int = 0
    #: Set once any assistant audio was produced (``cannot_update_voice``).
    produced_audio: bool = False
    _output_added: bool = False
    _item_added: bool = False
    _part_added: bool = False
    _output_tokens: int = 0
    _previous_item_id: str | None = None
    #: Speak with espeak-ng (:func:`.voice.utter`) rather than the synthetic voice.
    real_voice: bool = False

    @property
    def id(self) -> str:
        return self.plan.response_id

    @property
    def call_id(self) -> str:
        """The function call's id, derived from its item's."""
        return f"call_{self.item_id[5:21]}"

    @property
    def slot(self) -> OutputSlot:
        """Where this response's events point (its one output item)."""
        return OutputSlot(self.plan.response_id, self.item_id)

    @property
    def generating(self) -> bool:
        return not self.finished

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    # -- event helpers --

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        status_details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        plan = self.plan
        return self.out.factory.response(
            plan.response_id,
            status=status,
            output=output,
            conversation_id=self.conversation.id if plan.in_conversation else None,
            audio=plan.audio,
            voice=plan.voice,
            output_format=plan.output_format,
            max_output_tokens=plan.max_output_tokens or "inf",
            temperature=plan.temperature,
            status_details=status_details,
            usage=usage,
            metadata=plan.metadata,
        )

    def _item(self, status: str, with_content: bool) -> dict[str, Any]:
        plan = self.plan
        if plan.function is not None:
            name, arguments = plan.function
            return {
                "id": self.item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": status,
                "name": name,
                "call_id": self.call_id,
                "arguments": arguments if with_content else "",
            }
        content = (
            [self.out.factory.assistant_content(plan.audio, self.spoken)] if with_content else []
        )
        return {
            "id": self.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _emit_created(self) -> None:
        self.created = True
        self.out.send(self.out.factory.response_created(self._response("in_progress", [])))
        if self.out.factory.dialect == "beta":  # beta: before the output items
            self.out.send(self.out.factory.rate_limits(self.plan.input_text_tokens))

    # -- the run --

    async def _run(self) -> None:
        plan = self.plan
        await asyncio.sleep(self.delay_secs)
        faults = self.out.faults
        if faults.on("server_error"):
            self.out.send(self.out.factory.server_error(server_error_body()))
        self._emit_created()
        if faults.on("response_failed"):
            self.finish("failed")
            return
        item = self._item("in_progress", with_content=False)
        self.out.send(self.out.factory.output_item("added", plan.response_id, 0, item))
        self._output_added = True
        if plan.in_conversation:
            self._previous_item_id = self.conversation.add(Entry(item=item))
            self._item_added = True
            self.out.send(self.out.factory.item_added(self._previous_item_id, item))
        if plan.function is not None:
            await self._call_function()
            return
        self.out.send(
            self.out.factory.content_part(
                "added", self.slot, self.out.factory.assistant_part(plan.audio)
            )
        )
        self._part_added = True
        if plan.audio:
            self.out.track.begin(plan.response_id, self.item_id)
        words = (
            await utter(plan.text, plan.voice, plan.speed)
            if plan.audio and self.real_voice
            else speak(plan.text, plan.voice, plan.speed)
        )
        for word in words:
            if plan.audio:
                word_ms = word.pcm.size * 1000 // RATE
                tokens = text_tokens(word.text) + math.ceil(word_ms / OUTPUT_AUDIO_MS_PER_TOKEN)
            else:
                word_ms, tokens = 0, text_tokens(word.text)
            if plan.max_output_tokens is not None and (
                self._output_tokens + tokens > plan.max_output_tokens
            ):
                self.finish("incomplete", "max_output_tokens")
                return
            self._output_tokens += tokens
            self.spoken += word.text
            self.out.send(self.out.factory.text_delta(plan.audio, self.slot, word.text))
            if plan.audio:
                self.out.track.enqueue(plan.response_id, word.pcm)
                self.audio_ms += word_ms
                self.produced_audio = True
                await asyncio.sleep(word_ms / 1000.0 / GENERATION_SPEEDUP)
            else:
                await asyncio.sleep(TEXT_DELTA_SECS)
        self.finish("completed")

    async def _call_function(self) -> None:
        plan = self.plan
        assert plan.function is not None
        name, arguments = plan.function
        call_id = self.call_id
        for start in range(0, len(arguments), 8):
            self.out.send(
                self.out.factory.arguments_delta(self.slot, call_id, arguments[start : start + 8])
            )
            await asyncio.sleep(TEXT_DELTA_SECS)
        self.out.send(self.out.factory.arguments_done(self.slot, call_id, name, arguments))
        self._output_tokens = text_tokens(arguments)
        self.finish("completed")

    def finish(self, status: str, reason: str | None = None) -> None:
        """Emit the closing events now (synchronously, so that a cancellation lands
        exactly between the events around it) and stop the generating task."""
        if self.finished:
            return
        self.finished = True
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        plan = self.plan
        if not self.created:
            self._emit_created()
        item_status = "completed" if status == "completed" else "incomplete"
        if self._part_added:
            if plan.audio:
                self.out.send(self.out.factory.audio_done(self.slot))
            self.out.send(self.out.factory.text_done(plan.audio, self.slot, self.spoken))
            part = self.out.factory.assistant_part(plan.audio, self.spoken)
            self.out.send(self.out.factory.content_part("done", self.slot, part))
        if plan.audio:
            self.out.track.end(plan.response_id)
        item = self._item(item_status, with_content=True)
        if self._item_added:
            entry = self.conversation.get(self.item_id)
            if entry is not None:
                entry.item = item
                entry.audio_ms = self.audio_ms
            self.out.send_all(self.out.factory.item_done(self._previous_item_id, item))
        output = [item] if self._output_added else []
        if self._output_added:
            self.out.send(self.out.factory.output_item("done", plan.response_id, 0, item))
        usage = self.out.factory.usage(
            input_text=plan.input_text_tokens,
            input_audio=plan.input_audio_tokens,
            output_text=text_tokens(self.spoken if plan.function is None else item["arguments"]),
            output_audio=math.ceil(self.audio_ms / OUTPUT_AUDIO_MS_PER_TOKEN),
        )
        details: dict[str, Any] | None = None
        if status == "failed":
            details = {"type": "failed", "error": server_error_body()}
        elif status != "completed":
            details = {"type": status, "reason": reason}
        self.out.send(
            self.out.factory.response_done(self._response(status, output, details, usage))
        )
        if self.out.factory.dialect == "ga":  # GA: after response.done (observed)
            self.out.send(self.out.factory.rate_limits(usage["total_tokens"]))
        self.on_finished(self)
