"""Turn-taking: the state machine between the caller's audio, the conversation and
the agent's responses.

Caller audio -> :class:`~relay.emulator.vad.EnergyVad` -> ``speech_started`` (barge-in
if the agent is talking) -> ``speech_stopped`` -> ``committed`` -> user item ->
transcription (:mod:`.transcription`, if configured) and, with ``create_response``, a
response (:mod:`.planning` decides what it says, :mod:`.responses` runs it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ids
from .conversation import Conversation, Entry
from .errors import ApiError
from .items import announce_item
from .outlet import Outlet
from .planning import check_response_request, plan_response
from .responses import ResponsePlan, ResponseRun
from .session_config import SessionConfig
from .transcription import Listener, describe_speech, transcribe
from .vad import EnergyVad, SpeechStarted, SpeechStopped, threshold_to_dbfs
from .voice import Senses

#: Input audio kept to cut utterances out of (an utterance longer than this is clipped).
RECENT_AUDIO_SECS = 32.0
MIN_COMMIT_MS = 100.0
#: Response runs remembered (to truncate what a barge-in cut short).
KEEP_RUNS = 32


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
        out: Outlet,
        response_delay_secs: float,
        senses: Senses | None = None,
    ) -> None:
        self.config = config
        self.out = out
        self.response_delay_secs = response_delay_secs
        self.senses = senses or Senses()
        self.listener = (
            Listener(self.senses.recognition_timeout_secs) if self.senses.hears else None
        )
        #: Recognition of the last committed utterance (with ``senses.hears``).
        self._hearing: asyncio.Task[str | None] | None = None
        self.conversation = Conversation()
        self.vad: EnergyVad | None = None
        # The input timeline (ms): received audio so far, and where the buffer starts.
        self.now_ms = 0.0
        self.buffer_start_ms = 0.0
        #: Audio added with ``input_audio_buffer.append`` since the last commit.
        self.appended_ms = 0.0
        #: Where appended audio (24 kHz PCM16 bytes) goes when it is the session's
        #: input (a WebSocket); otherwise it only counts towards the buffer.
        self.on_appended: Callable[[bytes], None] | None = None
        self.speech_item_id: str | None = None
        self._speech_start_ms = 0.0
        self._recent: deque[_Frame] = deque()
        self.active: ResponseRun | None = None
        self._runs: dict[str, ResponseRun] = {}
        self.audio_produced = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.TimerHandle | None = None
        self.closed = False
        out.track.on_started = self._on_playback_started
        out.track.on_stopped = self._on_playback_stopped
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
        self.out.send(self.out.factory.speech_started(event.audio_start_ms, self.speech_item_id))
        td = self.config.turn_detection
        if td is not None and td.interrupt_response:
            self.interrupt("turn_detected")

    def _on_speech_stopped(self, event: SpeechStopped) -> None:
        item_id = self.speech_item_id or ids.item_id()
        self.speech_item_id = None
        self.out.send(self.out.factory.speech_stopped(event.audio_end_ms, item_id))
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
        for cleared in self.out.track.clear():
            self.out.send(self.out.factory.audio_buffer("cleared", cleared.response_id))
            run = self._runs.get(cleared.response_id)
            if run is None or run.plan.function is not None:
                continue
            entry = self.conversation.get(run.item_id)
            if entry is not None and run.plan.in_conversation:
                entry.truncate(cleared.played_ms)
                self.out.send(self.out.factory.item_truncated(run.item_id, 0, cleared.played_ms))

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
        self.out.send(self.out.factory.committed(previous, item_id))
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
        announce_item(self.out, previous, item)
        self.buffer_start_ms = end_ms
        self.appended_ms = 0.0
        heard = None
        if self.listener is not None:
            heard = self._hearing = self.listener.hear(entry)
            self._tasks.add(heard)
            heard.add_done_callback(self._tasks.discard)
        model = self.config.transcription_model
        if model is not None:
            self._spawn(
                transcribe(
                    entry,
                    describe_speech(speech_ms),
                    model=model,
                    with_logprobs=self.config.include_logprobs,
                    out=self.out,
                    heard=heard,
                )
            )
        return entry

    # -- responses --

    def _auto_respond(self) -> None:
        if self.config.kind != "realtime":
            return
        if self.active is not None and self.active.generating:
            return  # interrupt_response off: the current response carries on
        if self._hearing is not None and not self._hearing.done():
            self._spawn(self._respond_when_heard(self._hearing))
            return
        self._start_response(self._plan({}, None))

    async def _respond_when_heard(self, heard: asyncio.Task[str | None]) -> None:
        """An automatic response once the utterance is recognised (its own timeout
        bounds the wait), after what is left of the response delay."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait({heard})
        if self.closed or (self.active is not None and self.active.generating):
            return
        if self.vad is not None and self.vad.in_speech:
            return  # the caller spoke again: the next turn answers
        delay = max(self.response_delay_secs - (loop.time() - started), 0.0)
        self._start_response(self._plan({}, None), delay)

    def _on_playback_started(self, response_id: str) -> None:
        self.out.send(self.out.factory.audio_buffer("started", response_id))

    def _on_playback_stopped(self, response_id: str) -> None:
        self.out.send(self.out.factory.audio_buffer("stopped", response_id))
        self._arm_idle()

    def _on_response_finished(self, run: ResponseRun) -> None:
        if self.active is run:
            self.active = None
        self.audio_produced = self.audio_produced or run.produced_audio

    def _start_response(self, plan: ResponsePlan, delay_secs: float | None = None) -> ResponseRun:
        self._cancel_idle()
        run = ResponseRun(
            plan,
            self.out,
            self.conversation,
            self.response_delay_secs if delay_secs is None else delay_secs,
            self._on_response_finished,
            real_voice=self.senses.speaks,
        )
        self._runs[plan.response_id] = run
        while len(self._runs) > KEEP_RUNS:
            del self._runs[next(iter(self._runs))]
        self.active = run
        run.start()
        if run.task is not None:
            self._tasks.add(run.task)
            run.task.add_done_callback(self._tasks.discard)
        return run

    def _plan(self, params: dict[str, Any], input_entries: list[Entry] | None) -> ResponsePlan:
        entries = self.conversation.entries() if input_entries is None else input_entries
        return plan_response(self.config, params, entries)

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
        if self.on_appended is not None:
            self.on_appended(raw)
            return
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
        self.out.send(self.out.factory.input_cleared())

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
        checked, entries = check_response_request(self.config, self.conversation, params)
        self._start_response(self._plan(checked, entries))

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
        for cleared in self.out.track.clear():
            self.out.send(self.out.factory.audio_buffer("cleared", cleared.response_id))

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
        self.out.send(
            self.out.factory.timeout_triggered(int(self.buffer_start_ms), int(self.now_ms), item_id)
        )
        entry = self._commit(item_id, self.now_ms, speech_ms=0)
        entry.extra["idle"] = True
        self._auto_respond()

    # -- lifecycle --

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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
        # An ended call may be remembered a while (tests read it): keep no audio.
        self._recent.clear()
        self._runs.clear()
