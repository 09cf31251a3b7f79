"""Turn-taking: the state machine between the caller's audio, the conversation and
the agent's responses.

Caller audio -> :class:`~relay.emulator.vad.EnergyVad` -> ``speech_started`` (barge-in
if the agent is talking) -> ``speech_stopped`` -> ``committed`` -> user item ->
transcription (if configured) and, with ``create_response``, a response.

The transcript of an utterance is deterministic and derived from what was received:
``"I spoke for 2.3 seconds."`` (speech proper, without padding or trailing silence).
The agent's reply is derived from the last user input: ``"You spoke for 2.3
seconds."``, ``"You said: <text>"``... A response's ``instructions`` containing a line
``Say: <text>`` make it say exactly ``<text>`` (a hook for tests that need a given
reply length).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ids
from .conversation import Conversation, Entry, validate_client_item, without_audio
from .errors import ApiError
from .events import Event, EventFactory
from .playout import AgentAudioTrack
from .responses import (
    INPUT_AUDIO_MS_PER_TOKEN,
    ResponsePlan,
    ResponseRun,
    text_tokens,
)
from .schema import invalid_value
from .session_config import SessionConfig, parse_tool_choice
from .session_schema import BETA_RESPONSE, GA_RESPONSE
from .vad import EnergyVad, SpeechStarted, SpeechStopped, threshold_to_dbfs

#: Input audio kept to cut utterances out of (an utterance longer than this is clipped).
RECENT_AUDIO_SECS = 32.0
MIN_COMMIT_MS = 100.0
MAX_REPLY_CHARS = 400
#: Transcription "latency" after commit, and pace of incremental deltas.
TRANSCRIPTION_DELAY_SECS = 0.12
TRANSCRIPTION_DELTA_SECS = 0.03
_SAY = re.compile(r"^\s*say:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def describe_speech(speech_ms: int) -> str:
    """The emulator's "transcription" of an utterance."""
    if speech_ms <= 0:
        return ""
    return f"I spoke for {speech_ms / 1000.0:.1f} seconds."


@dataclass
class _Frame:
    start_ms: float
    end_ms: float
    dbfs: float
    pcm: np.ndarray


class Dialogue:
    """One session's conversation state and turn-taking."""

    def __init__(
        self,
        config: SessionConfig,
        factory: EventFactory,
        send: Callable[[Event], None],
        track: AgentAudioTrack,
        response_delay_secs: float,
        max_message_bytes: Callable[[], int] = lambda: 262144,
    ) -> None:
        self.config = config
        self.factory = factory
        self.send = send
        self.track = track
        self.response_delay_secs = response_delay_secs
        self.max_message_bytes = max_message_bytes
        self.conversation = Conversation()
        self.vad: EnergyVad | None = None
        self.now_ms = 0.0
        self.buffer_start_ms = 0.0
        self.appended_ms = 0.0
        self.speech_item_id: str | None = None
        self._speech_start_ms = 0.0
        self._recent: deque[_Frame] = deque()
        self.active: ResponseRun | None = None
        self._runs: dict[str, ResponseRun] = {}
        self.audio_produced = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.TimerHandle | None = None
        self.closed = False
        track.on_started = self._on_playback_started
        track.on_stopped = self._on_playback_stopped
        self.configure()

    # -- configuration --

    def configure(self) -> None:
        """(Re)apply the session's turn detection after creation or ``session.update``."""
        td = self.config.turn_detection
        if td is None:
            self.vad = None
            self.speech_item_id = None
        elif self.vad is None:
            self.vad = EnergyVad(td.threshold, td.prefix_padding_ms, td.silence_duration_ms)
        else:
            self.vad.configure(td.threshold, td.prefix_padding_ms, td.silence_duration_ms)
        self._cancel_idle()

    # -- caller audio --

    def on_audio(self, start_ms: float, duration_ms: float, pcm: np.ndarray, dbfs: float) -> None:
        """One received frame (48 kHz mono int16) at ``start_ms`` on the input timeline."""
        if self.closed:
            return
        end_ms = start_ms + duration_ms
        self.now_ms = max(self.now_ms, end_ms)
        self._recent.append(_Frame(start_ms, end_ms, dbfs, pcm))
        while self._recent and self._recent[0].end_ms < self.now_ms - RECENT_AUDIO_SECS * 1000:
            self._recent.popleft()
        if self.vad is None:
            return
        event = self.vad.process(start_ms, duration_ms, dbfs)
        if isinstance(event, SpeechStarted):
            self._on_speech_started(event)
        elif isinstance(event, SpeechStopped):
            self._on_speech_stopped(event)

    def _on_speech_started(self, event: SpeechStarted) -> None:
        self._cancel_idle()
        self.speech_item_id = ids.item_id()
        self._speech_start_ms = event.audio_start_ms
        self.send(self.factory.speech_started(event.audio_start_ms, self.speech_item_id))
        td = self.config.turn_detection
        if td is not None and td.interrupt_response:
            self.interrupt("turn_detected")

    def _on_speech_stopped(self, event: SpeechStopped) -> None:
        item_id = self.speech_item_id or ids.item_id()
        self.speech_item_id = None
        self.send(self.factory.speech_stopped(event.audio_end_ms, item_id))
        self._commit(
            item_id,
            event.audio_end_ms,
            event.speech_end_ms - event.speech_start_ms,
            start_ms=self._speech_start_ms,
        )
        td = self.config.turn_detection
        if td is not None and td.create_response:
            self._auto_respond()

    def interrupt(self, reason: str) -> None:
        """Barge-in: cancel a generating response, clear the agent's audio and
        truncate the assistant item to what was actually played."""
        if self.active is not None and self.active.generating:
            self.active.finish("cancelled", reason)
        for cleared in self.track.clear():
            self.send(self.factory.audio_buffer("cleared", cleared.response_id))
            run = self._runs.get(cleared.response_id)
            if run is None or run.plan.function is not None:
                continue
            entry = self.conversation.get(run.item_id)
            if entry is not None and run.plan.in_conversation:
                self._truncate(entry, cleared.played_ms)
                self.send(self.factory.item_truncated(run.item_id, 0, cleared.played_ms))

    def _truncate(self, entry: Entry, audio_end_ms: int) -> None:
        """Drop the unheard part of an assistant item's transcript."""
        total = entry.audio_ms or 1
        for part in entry.item.get("content") or []:
            if "transcript" in part and isinstance(part["transcript"], str):
                text = part["transcript"]
                keep = int(len(text) * min(audio_end_ms / total, 1.0))
                cut = text[:keep]
                if keep < len(text) and " " in cut:
                    cut = cut[: cut.rfind(" ")]
                part["transcript"] = cut
        entry.audio_ms = min(entry.audio_ms, audio_end_ms)

    # -- commit and transcription --

    def _speech_ms_in(self, start_ms: float, end_ms: float) -> int:
        level = self.vad.level_dbfs if self.vad is not None else threshold_to_dbfs(0.5)
        loud = [
            f
            for f in self._recent
            if f.start_ms >= start_ms and f.end_ms <= end_ms and f.dbfs > level
        ]
        return int(loud[-1].end_ms - loud[0].start_ms) if loud else 0

    def _audio_24k(self, start_ms: float, end_ms: float) -> np.ndarray:
        frames = [f.pcm for f in self._recent if f.end_ms > start_ms and f.start_ms < end_ms]
        if not frames:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(frames)
        pcm = pcm[: pcm.size // 2 * 2].reshape(-1, 2).astype(np.int32)
        out: np.ndarray = ((pcm[:, 0] + pcm[:, 1]) // 2).astype(np.int16)
        return out  # 48 -> 24 kHz, as reported

    def _commit(
        self,
        item_id: str,
        end_ms: float,
        speech_ms: int | None = None,
        start_ms: float | None = None,
    ) -> Entry:
        start = self.buffer_start_ms if start_ms is None else start_ms
        if speech_ms is None:
            speech_ms = self._speech_ms_in(self.buffer_start_ms, end_ms)
        audio_ms = int(max(end_ms - start, 0) + self.appended_ms)
        previous = self.conversation.last_id()
        self.send(self.factory.committed(previous, item_id))
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        entry = Entry(
            item=item,
            audio=self._audio_24k(start, end_ms),
            audio_ms=audio_ms,
            extra={"speech_ms": speech_ms},
        )
        self.conversation.add(entry)
        self.send(self.factory.item_added(previous, without_audio(item)))
        for event in self.factory.item_done(previous, without_audio(item)):
            self.send(event)
        self.buffer_start_ms = end_ms
        self.appended_ms = 0.0
        if self.config.transcription_model is not None:
            self._spawn(self._transcribe(entry, describe_speech(speech_ms)))
        return entry

    async def _transcribe(self, entry: Entry, transcript: str) -> None:
        model = self.config.transcription_model or "whisper-1"
        logprobs = self.config.include_logprobs
        await asyncio.sleep(TRANSCRIPTION_DELAY_SECS)
        words = re.findall(r"\S+\s*", transcript)
        # whisper-1: one delta = the whole transcript; gpt-4o-*: word by word.
        deltas = [transcript] if model == "whisper-1" else words or [""]
        for delta in deltas:
            self.send(
                self.factory.transcription_delta(
                    entry.id, delta, _logprobs(delta) if logprobs else None
                )
            )
            if len(deltas) > 1:
                await asyncio.sleep(TRANSCRIPTION_DELTA_SECS)
        if model == "whisper-1":
            usage: dict[str, Any] = {"type": "duration", "seconds": round(entry.audio_ms / 1000, 1)}
        else:
            audio_tokens = entry.audio_ms // INPUT_AUDIO_MS_PER_TOKEN
            output = text_tokens(transcript)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "output_tokens": output,
                "total_tokens": audio_tokens + output,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            }
        for part in entry.item["content"]:
            if part.get("type") == "input_audio":
                part["transcript"] = transcript
        self.send(
            self.factory.transcription_completed(
                entry.id, transcript, usage, _logprobs(transcript) if logprobs else None
            )
        )

    # -- responses --

    def _auto_respond(self) -> None:
        if self.config.kind != "realtime":
            return
        if self.active is not None and self.active.generating:
            return  # interrupt_response off: the current response carries on
        self._start_response(self._plan({}, None))

    def _on_playback_started(self, response_id: str) -> None:
        self.send(self.factory.audio_buffer("started", response_id))

    def _on_playback_stopped(self, response_id: str) -> None:
        self.send(self.factory.audio_buffer("stopped", response_id))
        self._arm_idle()

    def _on_response_finished(self, run: ResponseRun) -> None:
        if self.active is run:
            self.active = None
        self.audio_produced = self.audio_produced or run.produced_audio

    def _start_response(self, plan: ResponsePlan) -> ResponseRun:
        self._cancel_idle()
        run = ResponseRun(
            plan,
            self.factory,
            self.send,
            self.track,
            self.conversation,
            self.response_delay_secs,
            self._on_response_finished,
        )
        self._runs[plan.response_id] = run
        while len(self._runs) > 32:
            del self._runs[next(iter(self._runs))]
        self.active = run
        run.start()
        if run.task is not None:
            self._tasks.add(run.task)
            run.task.add_done_callback(self._tasks.discard)
        return run

    def _plan(self, params: dict[str, Any], input_entries: list[Entry] | None) -> ResponsePlan:
        config = self.config
        ga = config.dialect == "ga"
        if ga:
            modalities = params.get("output_modalities")
            voice_value = ((params.get("audio") or {}).get("output") or {}).get("voice")
            voice = voice_value.get("id") if isinstance(voice_value, dict) else voice_value
            fmt = ((params.get("audio") or {}).get("output") or {}).get("format")
            max_tokens = params.get("max_output_tokens")
        else:
            modalities = params.get("modalities")
            voice = params.get("voice")
            fmt = params.get("output_audio_format")
            max_tokens = params.get("max_response_output_tokens")
        audio = ("audio" in modalities) if isinstance(modalities, list) else config.audio_output
        conversation = params.get("conversation", "auto")
        entries = input_entries if input_entries is not None else self.conversation.entries()
        tools = params.get("tools", config.data.get("tools")) or []
        tool_choice = params.get("tool_choice", config.data.get("tool_choice", "auto"))
        function = self._function_for(tools, tool_choice, entries)
        text = self._reply_text(str(params.get("instructions") or ""), entries)
        input_text = text_tokens(str(params.get("instructions") or config.instructions))
        input_audio = 0
        for entry in entries:
            if entry.item.get("role") == "user" and any(
                p.get("type") == "input_audio" for p in entry.item.get("content") or []
            ):
                input_audio += entry.audio_ms // INPUT_AUDIO_MS_PER_TOKEN
            else:
                input_text += text_tokens(json.dumps(entry.item.get("content") or ""))
        metadata = params.get("metadata")
        return ResponsePlan(
            response_id=ids.response_id(),
            audio=audio,
            text=text,
            voice=str(voice or config.voice),
            speed=config.speed,
            output_format=fmt if fmt is not None else config.output_format,
            temperature=config.temperature,
            in_conversation=conversation != "none",
            max_output_tokens=(
                max_tokens if isinstance(max_tokens, int) else config.max_output_tokens
            ),
            input_text_tokens=input_text,
            input_audio_tokens=input_audio,
            metadata=metadata if isinstance(metadata, dict) else None,
            function=function,
        )

    @staticmethod
    def _function_for(
        tools: list[Any], tool_choice: Any, entries: list[Entry]
    ) -> tuple[str, str] | None:
        """A forced tool call (``tool_choice`` required or naming a function) unless the
        last input already is a function result; the emulator never chooses on its own."""
        functions = [
            t
            for t in tools
            if isinstance(t, dict) and t.get("type", "function") == "function" and t.get("name")
        ]
        if not functions:
            return None
        if entries and entries[-1].item.get("type") == "function_call_output":
            return None
        named = parse_tool_choice(tool_choice)
        if named is None and tool_choice not in ("required",):
            if isinstance(tool_choice, str) and tool_choice not in ("auto", "none"):
                named = tool_choice  # beta: a function name as a string
            else:
                return None
        tool = next((t for t in functions if t["name"] == named), functions[0])
        return str(tool["name"]), "{}"

    @staticmethod
    def _reply_text(instructions: str, entries: list[Entry]) -> str:
        said = _SAY.search(instructions)
        if said:
            return said.group(1).strip()[:MAX_REPLY_CHARS]
        for entry in reversed(entries):
            item = entry.item
            if item.get("type") == "function_call_output":
                return f"The tool returned: {item.get('output', '')}"[:MAX_REPLY_CHARS]
            if item.get("type") != "message" or item.get("role") != "user":
                continue
            texts = [
                p.get("text", "")
                for p in item.get("content") or []
                if p.get("type") == "input_text"
            ]
            if texts:
                return f"You said: {' '.join(texts)}"[:MAX_REPLY_CHARS]
            if entry.extra.get("idle"):
                return "Are you still there?"
            speech_ms = int(entry.extra.get("speech_ms", entry.audio_ms))
            if speech_ms > 0:
                return f"You spoke for {speech_ms / 1000.0:.1f} seconds."
            return "Sorry, I did not hear anything."
        return "Hello! How can I help you today?"

    # -- client events (validated by relay.emulator.client_events) --

    def update_session(self, session: Any) -> None:
        produced = self.audio_produced or (self.active is not None and self.active.produced_audio)
        patch = self.config.validate_update(session, audio_produced=produced)
        self.config.apply_update(patch)
        self.configure()

    def append_audio(self, audio: str) -> None:
        try:
            raw = base64.b64decode(audio, validate=True)
        except ValueError as exc:
            raise ApiError(
                "Invalid 'audio': expected base64-encoded audio.", "invalid_value", "audio"
            ) from exc
        self.appended_ms += len(raw) / 2 / 24.0  # pcm16 at 24 kHz

    def commit_input(self) -> None:
        buffered = self.now_ms - self.buffer_start_ms + self.appended_ms
        if buffered < MIN_COMMIT_MS:
            raise ApiError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {max(buffered, 0.0):.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
            )
        item_id = self.speech_item_id or ids.item_id()
        self.speech_item_id = None
        if self.vad is not None:
            self.vad.reset()
        self._commit(item_id, self.now_ms)

    def clear_input(self) -> None:
        self.buffer_start_ms = self.now_ms
        self.appended_ms = 0.0
        self.speech_item_id = None
        if self.vad is not None:
            self.vad.reset()
        self.send(self.factory.input_cleared())

    def create_item(self, item: Any, previous_item_id: Any, has_previous: bool) -> None:
        stored, audio = validate_client_item(item, self.config.dialect)
        audio_ms = int(audio.size / 24) if audio is not None else 0
        entry = Entry(item=stored, audio=audio, audio_ms=audio_ms)
        previous = self.conversation.add(entry, previous_item_id, after=has_previous)
        self.send(self.factory.item_added(previous, without_audio(stored)))
        for event in self.factory.item_done(previous, without_audio(stored)):
            self.send(event)

    def retrieve_item(self, item_id: Any) -> None:
        entry = self.conversation.require(item_id)
        item = without_audio(entry.item)
        if entry.audio is not None and entry.audio.size:
            encoded = base64.b64encode(entry.audio.astype("<i2").tobytes()).decode("ascii")
            # The data channel cannot carry more than the peer accepts: leave the audio
            # out rather than fail the event.
            if len(encoded) + 2048 < self.max_message_bytes():
                for part in item.get("content") or []:
                    if part.get("type") == "input_audio":
                        part["audio"] = encoded
                        break
        self.send(self.factory.item_retrieved(item))

    def delete_item(self, item_id: Any) -> None:
        entry = self.conversation.delete(item_id)
        self.send(self.factory.item_deleted(entry.id))

    def truncate_item(self, item_id: Any, content_index: int, audio_end_ms: int) -> None:
        entry = self.conversation.require(item_id)
        item = entry.item
        content = item.get("content") or []
        if item.get("role") != "assistant" or not content:
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
        self._truncate(entry, audio_end_ms)
        self.send(self.factory.item_truncated(entry.id, content_index, audio_end_ms))

    def create_response(self, params: Any) -> None:
        if self.config.kind != "realtime":
            raise ApiError(
                "Responses cannot be created in a transcription session.", "invalid_value", "type"
            )
        if self.active is not None and self.active.generating:
            raise ApiError(
                "Conversation already has an active response in progress: "
                f"{self.active.id}. Wait until the response is finished before creating "
                "a new one.",
                "conversation_already_has_active_response",
            )
        spec = GA_RESPONSE if self.config.dialect == "ga" else BETA_RESPONSE
        checked: dict[str, Any] = spec.check(params or {}, "response")
        conversation = checked.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise invalid_value("response.conversation", conversation, ["auto", "none"])
        modalities = checked.get("output_modalities", checked.get("modalities"))
        if (
            self.config.dialect == "ga"
            and isinstance(modalities, list)
            and len(set(modalities)) > 1
        ):
            raise invalid_value("response.output_modalities", modalities, ["audio", "text"])
        entries = None
        if "input" in checked:
            entries = [self._input_entry(value, i) for i, value in enumerate(checked["input"])]
        self._start_response(self._plan(checked, entries))

    def _input_entry(self, value: dict[str, Any], index: int) -> Entry:
        if value.get("type") == "item_reference":
            return self.conversation.require(value.get("id"), f"response.input[{index}].id")
        item, audio = validate_client_item(value, self.config.dialect)
        return Entry(item=item, audio=audio)

    def cancel_response(self, response_id: Any) -> None:
        run = self.active
        if (
            run is None
            or not run.generating
            or (isinstance(response_id, str) and response_id != run.id)
        ):
            raise ApiError(
                "Cancellation failed: no active response found", "response_cancel_not_active"
            )
        run.finish("cancelled", "client_cancelled")

    def clear_output(self) -> None:
        for cleared in self.track.clear():
            self.send(self.factory.audio_buffer("cleared", cleared.response_id))

    # -- idle timeout (server_vad idle_timeout_ms) --

    def _arm_idle(self) -> None:
        self._cancel_idle()
        td = self.config.turn_detection
        if td is None or td.idle_timeout_ms is None or self.closed:
            return
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(td.idle_timeout_ms / 1000.0, self._idle_fired)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_fired(self) -> None:
        self._idle = None
        if self.closed or (self.vad is not None and self.vad.in_speech) or self.active:
            return
        item_id = ids.item_id()
        self.send(
            self.factory.timeout_triggered(int(self.buffer_start_ms), int(self.now_ms), item_id)
        )
        entry = self._commit(item_id, self.now_ms, speech_ms=0)
        entry.extra["idle"] = True
        self._auto_respond()

    # -- lifecycle --

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self.closed = True
        self._cancel_idle()
        if self.active is not None:
            self.active.finished = True  # no closing events: the channel is going away
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _logprobs(text: str) -> list[dict[str, Any]]:
    return [
        {"token": token, "logprob": -0.01, "bytes": list(token.encode())}
        for token in re.findall(r"\S+\s*", text)
    ]
