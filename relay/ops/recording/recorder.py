"""The observer that records calls, per the policy (off / all / opt_in).

Its methods run on the event loop and only append to the writer's bounded queue
(dropping and counting audio, events and transcript lines when the writer falls behind);
the writer thread (:mod:`.writer`) does all file IO."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from relay.config import RecordingPolicy
from relay.ops.metrics import RelayMetrics
from relay.taps import (
    CANONICAL_RATE,
    SPEAKERS,
    CallEnd,
    CallInfo,
    Observer,
    Speaker,
    TappedEvent,
    TranscriptEntry,
)

from . import store
from .store import AUDIO_FILE, FILES
from .writer import Audio, End, Event, Item, Start, Transcript, Writer, WriterTiming

log = logging.getLogger(__name__)


class Recorder(Observer):
    """The call observer that records calls, and the admin API's view of recordings.

    Owner: the app. ``await open()`` before the first call (it finalises recordings a
    crash left behind, sweeps old ones and starts the writer thread); ``await close()``
    at shutdown (idempotent; finalises what is still open and joins the thread)."""

    name = "recording"

    def __init__(
        self,
        root: Path,
        *,
        policy: RecordingPolicy = "off",
        retention_days: float = 30.0,
        metrics: RelayMetrics | None = None,
        max_queue_items: int = 20_000,
        timing: WriterTiming | None = None,
        retention_sweep_interval_secs: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.policy: RecordingPolicy = policy
        self.retention_days = retention_days
        self._metrics = metrics
        self._max_queue = max_queue_items
        self._sweep_interval = retention_sweep_interval_secs
        self._clock = clock
        self._writer = Writer(timing or WriterTiming(), clock, self._count_bytes, self._io_failed)
        # Loop side: the calls being recorded and their dropped-item counts.
        self._recording: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Repair crashed recordings, sweep old ones, start the writer (idempotent)."""
        if self._writer.running or self.policy == "off" or self._closing is not None:
            return
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(store.finalise_unfinished, self.root)
        if self._writer.running or self._closing is not None:
            return  # opened or closed meanwhile
        self._writer.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="recording-retention")

    async def close(self, timeout_secs: float = 10.0) -> None:
        """Finalise open recordings (outcome ``shutdown``) and join the writer thread,
        waiting at most ``timeout_secs`` for it (an error is logged if it did not stop).

        The join always happens: if the caller is cancelled meanwhile, the close still
        runs to its end (bounded by ``timeout_secs``) before the cancellation goes on.
        Idempotent: a second call waits for the first."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(timeout_secs))
        closing = self._closing
        cancelled = False
        while not closing.done():
            try:
                await asyncio.shield(closing)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        closing.result()

    async def _close(self, timeout_secs: float) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        for call_id in list(self._recording):
            self._end(call_id, "shutdown")
        if not await asyncio.to_thread(self._writer.stop, timeout_secs):
            log.error("recorder thread did not stop within %.1f s", timeout_secs)

    async def _sweep_forever(self) -> None:
        while True:
            active = frozenset(self._recording)
            try:
                deleted = await asyncio.to_thread(
                    store.sweep_retention, self.root, self.retention_days, active
                )
            except OSError:
                log.exception("recording retention sweep failed")
            else:
                if deleted:
                    log.info("retention: deleted %d recording(s)", len(deleted))
            await asyncio.sleep(self._sweep_interval)

    # -- observer ----------------------------------------------------------------------

    def wants_agent_audio(self, call_id: str) -> bool:
        # "all" records every call, so say yes before the call has started too (the
        # call decides about decoding before it tells observers it started).
        return (self.policy == "all" and self._accepting) or call_id in self._recording

    def call_started(self, call: CallInfo) -> None:
        """Start recording ``call`` if the policy says so (``record`` is its opt-in)."""
        call_id = call.call_id
        if call_id in self._recording or not self._should_record(call.record):
            return
        if not store.is_safe_id(call_id):
            log.warning("not recording call %r: its id cannot name a folder", call_id)
            return
        started_at = self._clock()
        metadata = _initial_metadata(call, started_at)
        self._recording[call_id] = 0
        folder = store.folder_for(self.root, call_id, started_at)
        self._writer.put(Start(call_id, folder, metadata), wake=True)
        if self._metrics is not None:
            self._metrics.recordings_active.inc()

    def audio(self, call_id: str, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        if call_id in self._recording:
            # Copy: the array is only valid during the call.
            self._put(call_id, Audio(call_id, speaker, pcm.reshape(-1).copy(), wallclock))

    def event(self, call_id: str, event: TappedEvent) -> None:
        if call_id in self._recording:
            self._put(call_id, Event(call_id, event))  # frozen: nothing to copy

    def transcript(self, call_id: str, entry: TranscriptEntry) -> None:
        if call_id in self._recording:
            self._put(call_id, Transcript(call_id, entry))

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        self._end(call.call_id, end.outcome)

    # -- admin API helpers (synchronous: call them through asyncio.to_thread) -----------

    def list_recordings(self, limit: int = 100) -> list[dict[str, Any]]:
        """Metadata of the newest ``limit`` recordings, newest first."""
        return store.list_recordings(self.root, limit)

    def find(self, call_id: str) -> Path | None:
        """The folder of ``call_id``'s recording, if there is one."""
        return store.find(self.root, call_id)

    def describe(self, call_id: str) -> dict[str, Any] | None:
        """Metadata plus the current file list of one recording."""
        folder = self.find(call_id)
        metadata = store.read_metadata(folder) if folder is not None else None
        if folder is None or metadata is None:
            return None
        return {**metadata, "files": store.files_of(folder)}

    def file_path(self, call_id: str, name: str) -> Path | None:
        """A downloadable file of a recording: only names in :data:`FILES`, and only a
        regular file of the call's own folder (never a symlink: see ``store.own_file``)."""
        if name not in FILES:
            return None
        folder = self.find(call_id)
        return store.own_file(folder, name) if folder is not None else None

    # -- internals (loop side) ---------------------------------------------------------

    @property
    def _accepting(self) -> bool:
        return self._writer.running and self._closing is None

    def _should_record(self, opt_in: bool) -> bool:
        if not self._accepting:
            return False
        return self.policy == "all" or (self.policy == "opt_in" and opt_in)

    def _put(self, call_id: str, item: Item) -> None:
        if len(self._writer.queue) >= self._max_queue:
            self._recording[call_id] += 1
            if self._metrics is not None:
                self._metrics.recording_failures_total.labels("queue_full").inc()
            return
        self._writer.put(item)

    def _end(self, call_id: str, outcome: str) -> None:
        dropped = self._recording.pop(call_id, None)
        if dropped is None:
            return
        self._writer.put(End(call_id, outcome, self._clock(), dropped), wake=True)
        if self._metrics is not None:
            self._metrics.recordings_active.dec()

    def _io_failed(self) -> None:  # on the writer thread: prometheus_client is thread-safe
        if self._metrics is not None:
            self._metrics.recording_failures_total.labels("io").inc()

    def _count_bytes(self, count: int) -> None:  # on the writer thread, as above
        if self._metrics is not None:
            self._metrics.recording_bytes_total.inc(count)


def _initial_metadata(call: CallInfo, started_at: float) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "status": "recording",
        "started_at": started_at,
        "ended_at": None,
        "duration_secs": None,
        "model": call.model,
        "outcome": None,
        "user_agent": call.user_agent,
        "user_id": call.user_id,
        "audio": {
            "file": AUDIO_FILE,
            "format": "wav/pcm_s16le",
            "sample_rate": CANONICAL_RATE,
            "channels": list(SPEAKERS),
            "frames": 0,
        },
        "files": list(FILES),
        "writer": store.writer_identity(),
    }
