"""The recorder's writer thread: every file of every recording is written here, never on
the event loop.

The loop appends items to a deque (``append`` and ``popleft`` are atomic, so the deque
needs no lock) and sets an event; the thread applies them in order. Every
``flush_interval_secs`` it renders each call's audio up to ``lag_secs`` before now,
patches the WAV headers and flushes every file, so after ``kill -9`` a recording is a
valid WAV up to about a second before the kill. The page cache survives a process
crash; ``fsync`` (for power loss) is deliberately not paid on every flush."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from relay.taps import CANONICAL_RATE, Speaker, TappedEvent, TranscriptEntry

from .callfiles import CallFiles

log = logging.getLogger(__name__)


class Start(NamedTuple):
    """Open ``folder`` with ``metadata`` (whose ``started_at`` is sample 0)."""

    call_id: str
    folder: Path
    metadata: dict[str, Any]


class Audio(NamedTuple):
    call_id: str
    speaker: Speaker
    pcm: np.ndarray
    wallclock: float


class Event(NamedTuple):
    call_id: str
    event: TappedEvent


class Transcript(NamedTuple):
    call_id: str
    entry: TranscriptEntry


class End(NamedTuple):
    """The call ended: render what is left, close, write the final metadata."""

    call_id: str
    outcome: str
    ended_at: float
    dropped: int


Item = Start | Audio | Event | Transcript | End


@dataclass(frozen=True)
class WriterTiming:
    """When the writer flushes and how it places audio on the timeline."""

    flush_interval_secs: float = 0.5
    #: Audio is rendered up to this long before now: frames still on their way fit in.
    alignment_lag_secs: float = 0.3
    #: A frame this close to where the previous one ended is contiguous with it.
    alignment_tolerance_secs: float = 0.1


class Writer:
    """The writer thread of one recorder, and the queue that feeds it.

    Owner: the :class:`~relay.ops.recording.Recorder`; :meth:`start` once,
    :meth:`stop` (blocking, bounded: call it through ``asyncio.to_thread``) at the end."""

    def __init__(
        self,
        timing: WriterTiming,
        clock: Callable[[], float],
        on_bytes: Callable[[int], None],
        on_failure: Callable[[], None],
    ) -> None:
        self._timing = timing
        self._tolerance = round(timing.alignment_tolerance_secs * CANONICAL_RATE)
        self._clock = clock
        self._on_bytes = on_bytes
        self._on_failure = on_failure
        self.queue: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()

    def put(self, item: Item, *, wake: bool = False) -> None:
        self.queue.append(item)
        if wake:
            self._wake.set()

    def stop(self, timeout_secs: float) -> bool:
        """Drain the queue, finish what is open and join the thread, for at most
        ``timeout_secs`` (blocking). Returns whether the thread is done."""
        thread = self._thread
        if thread is None:
            return True
        self._stopping = True
        self._wake.set()
        thread.join(timeout_secs)
        return not thread.is_alive()

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        open_calls: dict[str, CallFiles] = {}
        interval = self._timing.flush_interval_secs
        next_flush = time.monotonic() + interval
        while True:
            self._wake.wait(timeout=max(0.0, next_flush - time.monotonic()))
            self._wake.clear()
            self._drain(open_calls)
            if time.monotonic() >= next_flush or self._stopping:
                self._flush_all(open_calls)
                next_flush = time.monotonic() + interval
            if self._stopping and not self.queue:
                break
        for call_id in list(open_calls):  # only if an End was lost: never leave files open
            self._finish(open_calls, End(call_id, "shutdown", self._clock(), 0))

    def _drain(self, open_calls: dict[str, CallFiles]) -> None:
        while self.queue:
            item = self.queue.popleft()
            try:
                self._apply(open_calls, item)
            except Exception:  # one call's bad data or full disk must not kill the writer
                self._fail(open_calls, item.call_id)

    def _apply(self, open_calls: dict[str, CallFiles], item: Item) -> None:
        if isinstance(item, Start):
            opened = CallFiles(item.folder, item.metadata, self._tolerance, self._on_bytes)
            open_calls[item.call_id] = opened
            return
        files = open_calls.get(item.call_id)
        if files is None:
            return  # a recording that failed earlier
        if isinstance(item, Audio):
            files.add_audio(item.speaker, item.pcm, item.wallclock)
        elif isinstance(item, Event):
            files.add_event(item.event)
        elif isinstance(item, Transcript):
            files.add_transcript(item.entry)
        else:
            self._finish(open_calls, item)

    def _flush_all(self, open_calls: dict[str, CallFiles]) -> None:
        horizon = self._clock() - self._timing.alignment_lag_secs
        for call_id, files in list(open_calls.items()):
            try:
                files.render_until(files.timeline.sample_at(horizon))
                files.flush()
            except Exception:  # see _drain
                self._fail(open_calls, call_id)

    def _finish(self, open_calls: dict[str, CallFiles], end: End) -> None:
        files = open_calls.pop(end.call_id)
        try:
            files.finish(end.outcome, end.ended_at, end.dropped)
        except Exception:  # see _drain
            self._fail({end.call_id: files}, end.call_id)

    def _fail(self, open_calls: dict[str, CallFiles], call_id: str) -> None:
        """A write failed (disk full, folder removed): stop this call's recording and
        say so in its metadata if the disk still lets us."""
        log.exception("recording of call %s failed", call_id)
        self._on_failure()
        files = open_calls.pop(call_id, None)
        if files is not None:
            files.fail(self._clock())
