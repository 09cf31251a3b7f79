"""Call recordings: a per-call folder written by one writer thread, crash-safe.

Layout: ``<root>/<YYYY-MM-DD>/<call_id>/`` (UTC date of the call's start) holding

- ``audio.wav``: stereo PCM16 at 24 kHz, caller left and agent right, on the wall
  clock of ``metadata.json``'s ``started_at``: sample ``n`` was heard at
  ``started_at + n / 24000``. Gaps (loss, a silent leg, dropped frames) are silence,
  never squeezed out, so both channels and ``events.jsonl`` stay in step.
- ``events.jsonl``: ``{"t": wallclock, "direction": "client"|"server", "event": {...}}``
  per data-channel event, both directions, same clock.
- ``transcript.jsonl`` (``{"t", "role", "item_id", "text"}``) and ``transcript.txt``.
- ``metadata.json``: written at start with ``status: "recording"``, rewritten at the end
  (``complete``, ``failed``) or by :func:`finalise_unfinished` after a crash
  (``interrupted``).

The event loop never touches the disk: the observer methods append to a bounded queue
(dropping and counting audio/events when the writer falls behind) and one writer thread
per :class:`Recorder` does all file IO. Every ``flush_interval_secs`` the writer renders
audio up to shortly before now, writes it, patches the WAV header's sizes and flushes
every file, so after ``kill -9`` the recording is a valid WAV up to about a second
before the kill. The page cache survives a process crash; ``fsync`` (for power loss) is
deliberately not paid on every flush.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import numpy as np

from relay.events import transcript_entry
from relay.ops.metrics import RelayMetrics
from relay.taps import CANONICAL_RATE, CallView, Direction, Leg

log = logging.getLogger(__name__)

RecordingPolicy = Literal["off", "all", "opt_in"]

AUDIO_FILE: Final = "audio.wav"
EVENTS_FILE: Final = "events.jsonl"
METADATA_FILE: Final = "metadata.json"
TRANSCRIPT_JSONL: Final = "transcript.jsonl"
TRANSCRIPT_TXT: Final = "transcript.txt"
#: The only names the download route serves (no path from the client reaches the disk).
FILES: Final = (AUDIO_FILE, EVENTS_FILE, METADATA_FILE, TRANSCRIPT_JSONL, TRANSCRIPT_TXT)

CHANNELS: Final = 2
SAMPLE_BYTES: Final = 2
WAV_HEADER_BYTES: Final = 44
_CHANNEL_OF: Final[dict[Leg, int]] = {"caller": 0, "agent": 1}
_RENDER_BLOCK: Final = 10 * CANONICAL_RATE

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_safe_id(call_id: str) -> bool:
    """Whether ``call_id`` can name a folder: no separators, no leading dot."""
    return bool(_SAFE_ID.match(call_id))


# -- WAV ------------------------------------------------------------------------------


def _wav_header(data_bytes: int, channels: int = CHANNELS, rate: int = CANONICAL_RATE) -> bytes:
    block = channels * SAMPLE_BYTES
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


class WavWriter:
    """A PCM16 WAV file whose header is kept true at every :meth:`flush`."""

    def __init__(self, path: Path, channels: int = CHANNELS, rate: int = CANONICAL_RATE) -> None:
        self._channels = channels
        self._rate = rate
        self._file = path.open("wb")
        self._file.write(_wav_header(0, channels, rate))
        self.data_bytes = 0

    @property
    def frames(self) -> int:
        return self.data_bytes // (self._channels * SAMPLE_BYTES)

    def write(self, samples: np.ndarray) -> int:
        """Append interleaved int16 samples (shape ``(n, channels)``); returns bytes."""
        data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
        self._file.write(data)
        self.data_bytes += len(data)
        return len(data)

    def flush(self) -> None:
        """Patch the RIFF and data sizes, then push everything to the OS."""
        self._file.seek(4)
        self._file.write(struct.pack("<I", 36 + self.data_bytes))
        self._file.seek(40)
        self._file.write(struct.pack("<I", self.data_bytes))
        self._file.seek(0, os.SEEK_END)
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self.flush()
        finally:
            self._file.close()


def repair_wav(path: Path) -> int:
    """Make ``path``'s header match its data (whole frames only); returns frames."""
    size = path.stat().st_size
    block = CHANNELS * SAMPLE_BYTES
    data_bytes = max(0, size - WAV_HEADER_BYTES) // block * block
    with path.open("r+b") as file:
        if size < WAV_HEADER_BYTES:
            file.truncate(0)
            file.write(_wav_header(0))
            return 0
        file.truncate(WAV_HEADER_BYTES + data_bytes)
        file.seek(4)
        file.write(struct.pack("<I", 36 + data_bytes))
        file.seek(40)
        file.write(struct.pack("<I", data_bytes))
    return data_bytes // block


# -- metadata ---------------------------------------------------------------------------


def _write_json_atomic(path: Path, data: dict[str, Any]) -> int:
    """Write ``data`` to ``path`` via a temporary file, so a crash never leaves half."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str).encode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text)
    os.replace(tmp, path)
    return len(text)


def read_metadata(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files_of(folder: Path) -> list[dict[str, Any]]:
    return [
        {"name": name, "bytes": (folder / name).stat().st_size}
        for name in FILES
        if (folder / name).is_file()
    ]


# -- writer-thread state of one call ------------------------------------------------------


@dataclass
class _Track:
    """One channel's frames waiting to be rendered, placed on the sample timeline."""

    segments: list[tuple[int, np.ndarray]] = field(default_factory=list)
    next_pos: int | None = None


@dataclass(frozen=True)
class _Start:
    call_id: str
    folder: Path
    metadata: dict[str, Any]
    started_at: float


@dataclass(frozen=True)
class _Audio:
    call_id: str
    leg: Leg
    pcm: np.ndarray
    wallclock: float


@dataclass(frozen=True)
class _Event:
    call_id: str
    direction: Direction
    event: dict[str, Any]
    wallclock: float


@dataclass(frozen=True)
class _End:
    call_id: str
    outcome: str
    ended_at: float
    dropped: int


_Item = _Start | _Audio | _Event | _End


class _CallRecording:
    """The open files of one call's recording; used by the writer thread only."""

    def __init__(self, start: _Start, tolerance_samples: int, on_bytes: Callable[[int], None]):
        self.folder = start.folder
        self.metadata = start.metadata
        self._t0 = start.started_at
        self._tolerance = tolerance_samples
        self._on_bytes = on_bytes
        self._tracks = {leg: _Track() for leg in _CHANNEL_OF}
        self.late_samples = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        # The stack owns every file from the moment it is opened, so a failure half-way
        # through opening closes what was already open.
        with contextlib.ExitStack() as stack:
            self.wav = WavWriter(self.folder / AUDIO_FILE)
            stack.callback(self.wav.close)
            self._events = stack.enter_context(self._open_text(EVENTS_FILE))
            self._transcript_jsonl = stack.enter_context(self._open_text(TRANSCRIPT_JSONL))
            self._transcript_txt = stack.enter_context(self._open_text(TRANSCRIPT_TXT))
            self._on_bytes(_write_json_atomic(self.folder / METADATA_FILE, self.metadata))
            self._files = stack.pop_all()

    def _open_text(self, name: str) -> TextIO:
        return (self.folder / name).open("a", encoding="utf-8")

    def sample_at(self, wallclock: float) -> int:
        return round((wallclock - self._t0) * CANONICAL_RATE)

    def add_audio(self, leg: Leg, pcm: np.ndarray, wallclock: float) -> None:
        """Place a frame right after the previous one unless its stamp says otherwise.

        Stamps jitter by a few ms; following them exactly would chop the audio. A frame
        within ``tolerance`` of where the last one ended is contiguous; farther means
        a real gap (or overlap), so the frame goes where its stamp says."""
        track = self._tracks[leg]
        stamped = self.sample_at(wallclock)
        pos = track.next_pos
        if pos is None or abs(stamped - pos) > self._tolerance:
            pos = stamped
        track.next_pos = pos + len(pcm)
        track.segments.append((pos, pcm))

    def add_event(self, direction: Direction, event: dict[str, Any], wallclock: float) -> None:
        line = {"t": wallclock, "direction": direction, "event": event}
        self._write(self._events, json.dumps(line, ensure_ascii=False, default=str))
        entry = transcript_entry(event) if direction == "server" else None
        if entry is not None:
            self._add_transcript(wallclock, *entry)

    def _add_transcript(self, wallclock: float, role: str, text: str, item_id: str | None) -> None:
        line = {"t": wallclock, "role": role, "item_id": item_id, "text": text}
        self._write(self._transcript_jsonl, json.dumps(line, ensure_ascii=False))
        offset = max(0.0, wallclock - self._t0)
        stamp = f"{int(offset // 60):02d}:{offset % 60:06.3f}"
        self._write(self._transcript_txt, f"[{stamp}] {role}: {text}")

    def _write(self, file: TextIO, line: str) -> None:
        data = line + "\n"
        file.write(data)
        self._on_bytes(len(data.encode()))

    def render_until(self, end: int) -> None:
        """Write both channels up to sample ``end``; silence where no frame was.

        Rendered in blocks of at most ``_RENDER_BLOCK`` samples so that a long stall of
        the writer never allocates one huge buffer."""
        while self.wav.frames < end:
            start = self.wav.frames
            stop = min(end, start + _RENDER_BLOCK)
            block = np.zeros((stop - start, CHANNELS), dtype=np.int16)
            for leg, track in self._tracks.items():
                track.segments = self._paste(track.segments, block, start, stop, _CHANNEL_OF[leg])
            self._on_bytes(self.wav.write(block))

    def _paste(
        self,
        segments: list[tuple[int, np.ndarray]],
        block: np.ndarray,
        start: int,
        end: int,
        channel: int,
    ) -> list[tuple[int, np.ndarray]]:
        """Copy the parts of ``segments`` inside [start, end) into ``block``; return
        what lies beyond ``end``. Parts before ``start`` arrived too late: counted."""
        remaining: list[tuple[int, np.ndarray]] = []
        for pos, pcm in segments:
            stop = pos + len(pcm)
            if pos < start:
                self.late_samples += min(stop, start) - pos
            lo, hi = max(pos, start), min(stop, end)
            if lo < hi:
                block[lo - start : hi - start, channel] = pcm[lo - pos : hi - pos]
            if stop > end:
                cut = max(pos, end)
                remaining.append((cut, pcm[cut - pos :]))
        return remaining

    def flush(self) -> None:
        self.wav.flush()
        for file in (self._events, self._transcript_jsonl, self._transcript_txt):
            file.flush()

    def finish(self, outcome: str, ended_at: float, dropped: int) -> None:
        """Render everything received up to the end, close the files and write the
        final metadata. Frames stamped after the end (a bogus clock) are cut."""
        ends = [pos + len(pcm) for t in self._tracks.values() for pos, pcm in t.segments]
        last = self.sample_at(ended_at)
        try:
            self.render_until(max(last, min(max(ends, default=0), last + CANONICAL_RATE)))
        finally:
            self.close_files()
        self.metadata.update(
            status="complete",
            outcome=outcome,
            ended_at=ended_at,
            duration_secs=round(self.wav.frames / CANONICAL_RATE, 3),
            dropped_items=dropped,
            late_samples=self.late_samples,
        )
        self.metadata["audio"]["frames"] = self.wav.frames
        self.metadata["files"] = _files_of(self.folder)
        self._on_bytes(_write_json_atomic(self.folder / METADATA_FILE, self.metadata))

    def close_files(self) -> None:
        """Close every file (idempotent); a failing close does not stop the others."""
        with contextlib.suppress(OSError):
            self._files.close()


# -- crash recovery and retention (synchronous: run them in a thread) ---------------------


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _written_by_live_process(metadata: dict[str, Any]) -> bool:
    """A recording another live process on this host is still writing (shared root)."""
    writer = metadata.get("writer")
    if not isinstance(writer, dict) or writer.get("host") != socket.gethostname():
        return False
    return writer.get("pid") != os.getpid() and _pid_alive(writer.get("pid"))


def _day_folders(root: Path) -> list[Path]:
    """The ``YYYY-MM-DD`` folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if _DAY.match(d.name) and d.is_dir()), reverse=True)


def _call_folders(root: Path) -> Iterator[Path]:
    """Every call folder under ``root``, newest day first."""
    for day in _day_folders(root):
        yield from (f for f in day.iterdir() if f.is_dir())


def _cut_torn_line(path: Path) -> bytes:
    """Drop a last line the crash cut short; returns the complete lines' bytes."""
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with path.open("r+b") as file:
            file.truncate(keep)
    return data[:keep]


def _last_event_time(path: Path) -> float | None:
    """The ``t`` of the last complete line of ``events.jsonl``."""
    if not path.is_file():
        return None
    lines = _cut_torn_line(path).splitlines()
    try:
        return float(json.loads(lines[-1])["t"]) if lines else None
    except (ValueError, KeyError, TypeError):
        return None


def _finalise_one(folder: Path, metadata: dict[str, Any]) -> None:
    frames = repair_wav(folder / AUDIO_FILE) if (folder / AUDIO_FILE).is_file() else 0
    last_event = _last_event_time(folder / EVENTS_FILE)
    for name in (TRANSCRIPT_JSONL, TRANSCRIPT_TXT):
        if (folder / name).is_file():
            _cut_torn_line(folder / name)
    started = float(metadata.get("started_at") or 0.0)
    metadata.update(
        status="interrupted",
        outcome=metadata.get("outcome") or "interrupted",
        ended_at=max(started + frames / CANONICAL_RATE, last_event or 0.0),
        duration_secs=round(frames / CANONICAL_RATE, 3),
    )
    metadata.setdefault("audio", {})["frames"] = frames
    metadata["files"] = _files_of(folder)
    _write_json_atomic(folder / METADATA_FILE, metadata)


def finalise_unfinished(root: Path, active: frozenset[str] = frozenset()) -> list[str]:
    """Repair recordings a crashed process left in ``status: "recording"``.

    The WAV header gets the true sizes, torn JSONL lines are cut, and the metadata
    says ``interrupted`` with an end time from the audio or the last event. Recordings
    of ``active`` calls and of other live processes on this host are left alone.
    Returns the repaired call ids."""
    repaired: list[str] = []
    for folder in _call_folders(root):
        metadata = read_metadata(folder)
        if metadata is None or metadata.get("status") != "recording":
            continue
        if folder.name in active or _written_by_live_process(metadata):
            continue
        try:
            _finalise_one(folder, metadata)
        except OSError:
            log.exception("could not finalise the recording in %s", folder)
            continue
        repaired.append(folder.name)
        log.info("finalised interrupted recording %s", folder.name)
    return repaired


def _day_end(name: str) -> float:
    """The Unix time at which the UTC day ``YYYY-MM-DD`` ends."""
    try:
        day = datetime.datetime.strptime(name, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    except ValueError:  # looks like a date but is not one: never ours to remove
        return float("inf")
    return (day + datetime.timedelta(days=1)).timestamp()


def sweep_retention(
    root: Path,
    retention_days: float,
    active: frozenset[str] = frozenset(),
    now: float | None = None,
) -> list[str]:
    """Delete recordings that started more than ``retention_days`` ago (0: keep all),
    except those of ``active`` calls and those another live process is writing."""
    if retention_days <= 0:
        return []
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    deleted: list[str] = []
    for folder in list(_call_folders(root)):
        metadata = read_metadata(folder)
        if folder.name in active or (metadata and _written_by_live_process(metadata)):
            continue
        started = metadata.get("started_at") if metadata else None
        when = float(started) if isinstance(started, int | float) else folder.stat().st_mtime
        if when < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder.name)
    for day in _day_folders(root):
        # Only days wholly past the retention: a recent day folder may be getting its
        # first call folder right now (the writer thread makes both), a race otherwise.
        if _day_end(day.name) < cutoff and not any(day.iterdir()):
            with contextlib.suppress(OSError):
                day.rmdir()
    return deleted


# -- the observer ---------------------------------------------------------------------------


class Recorder:
    """The CallObserver that records calls, per the policy (off / all / opt_in).

    Owner: the app. ``await open()`` before the first call (it finalises recordings a
    crash left behind, sweeps old ones and starts the writer thread); ``await close()``
    at shutdown (idempotent; finalises what is still open and joins the thread)."""

    def __init__(
        self,
        root: Path,
        *,
        policy: RecordingPolicy = "off",
        retention_days: float = 30.0,
        metrics: RelayMetrics | None = None,
        max_queue_items: int = 20_000,
        flush_interval_secs: float = 0.5,
        alignment_lag_secs: float = 0.3,
        alignment_tolerance_secs: float = 0.1,
        retention_sweep_interval_secs: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.policy: RecordingPolicy = policy
        self.retention_days = retention_days
        self._metrics = metrics
        self._max_queue = max_queue_items
        self._flush_interval = flush_interval_secs
        self._lag_secs = alignment_lag_secs
        self._tolerance = round(alignment_tolerance_secs * CANONICAL_RATE)
        self._sweep_interval = retention_sweep_interval_secs
        self._clock = clock
        # Loop side: the calls being recorded and their dropped-item counts.
        self._recording: dict[str, int] = {}
        # deque.append/popleft are atomic: the loop appends, the writer thread pops.
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Repair crashed recordings, sweep old ones, start the writer (idempotent)."""
        if self._thread is not None or self.policy == "off" or self._closed:
            return
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(finalise_unfinished, self.root)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="recording-retention")

    async def close(self, timeout_secs: float = 10.0) -> None:
        """Finalise open recordings (outcome ``shutdown``) and join the writer."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for call_id in list(self._recording):
            self._end(call_id, "shutdown")
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(thread.join, timeout_secs)
        if thread.is_alive():
            log.error("recorder thread did not stop within %.1f s", timeout_secs)

    async def _sweep_forever(self) -> None:
        while True:
            active = frozenset(self._recording)
            try:
                deleted = await asyncio.to_thread(
                    sweep_retention, self.root, self.retention_days, active
                )
            except OSError:
                log.exception("recording retention sweep failed")
            else:
                if deleted:
                    log.info("retention: deleted %d recording(s)", len(deleted))
            await asyncio.sleep(self._sweep_interval)

    # -- CallObserver --------------------------------------------------------------

    def wants_agent_audio(self, call_id: str) -> bool:
        # "all" records every call, so say yes before the call has started too (the
        # call decides about decoding before it tells observers it started).
        return (self.policy == "all" and self._thread is not None) or call_id in self._recording

    def call_started(self, call: CallView) -> None:
        """Start recording per the policy, reading the opt-in flag, model and user
        agent from the call's snapshot (``record``, ``model``, ``user_agent``)."""
        if call.id in self._recording:
            return
        snap = call.snapshot()
        self.start(
            call,
            opt_in=bool(snap.get("record")),
            user_agent=str(snap.get("user_agent") or ""),
            model=str(snap.get("model") or ""),
        )

    def start(self, call: CallView, *, opt_in: bool, user_agent: str, model: str) -> bool:
        """Start recording ``call`` if the policy says so; returns whether it did."""
        if call.id in self._recording or not self._should_record(opt_in):
            return call.id in self._recording
        if not is_safe_id(call.id):
            log.warning("not recording call %r: its id cannot name a folder", call.id)
            return False
        started_at = self._clock()
        day = datetime.datetime.fromtimestamp(started_at, datetime.UTC).strftime("%Y-%m-%d")
        metadata = self._initial_metadata(call.id, started_at, model, user_agent)
        self._recording[call.id] = 0
        self._queue.append(_Start(call.id, self.root / day / call.id, metadata, started_at))
        self._wake.set()
        if self._metrics is not None:
            self._metrics.recordings_active.inc()
        return True

    def audio(self, call: CallView, leg: Leg, pcm: np.ndarray, wallclock: float) -> None:
        if call.id in self._recording:
            # Copy: the call may reuse its buffer once we return.
            self._put(call.id, _Audio(call.id, leg, pcm.reshape(-1).copy(), wallclock))

    def event(
        self, call: CallView, direction: Direction, event: dict[str, Any], wallclock: float
    ) -> None:
        # The event dict is not copied: taps treat events as immutable once tapped.
        if call.id in self._recording:
            self._put(call.id, _Event(call.id, direction, event, wallclock))

    def call_ended(self, call: CallView, outcome: str) -> None:
        self._end(call.id, outcome)

    # -- internals (loop side) -----------------------------------------------------

    def _should_record(self, opt_in: bool) -> bool:
        if self._thread is None or self._closed:
            return False
        return self.policy == "all" or (self.policy == "opt_in" and opt_in)

    def _initial_metadata(
        self, call_id: str, started_at: float, model: str, user_agent: str
    ) -> dict[str, Any]:
        return {
            "call_id": call_id,
            "status": "recording",
            "started_at": started_at,
            "ended_at": None,
            "duration_secs": None,
            "model": model,
            "outcome": None,
            "user_agent": user_agent,
            "audio": {
                "file": AUDIO_FILE,
                "format": "wav/pcm_s16le",
                "sample_rate": CANONICAL_RATE,
                "channels": ["caller", "agent"],
                "frames": 0,
            },
            "files": list(FILES),
            "writer": {"host": socket.gethostname(), "pid": os.getpid()},
        }

    def _put(self, call_id: str, item: _Item) -> None:
        if len(self._queue) >= self._max_queue:
            self._recording[call_id] += 1
            if self._metrics is not None:
                self._metrics.recording_failures_total.labels("queue_full").inc()
            return
        self._queue.append(item)

    def _end(self, call_id: str, outcome: str) -> None:
        dropped = self._recording.pop(call_id, None)
        if dropped is None:
            return
        self._queue.append(_End(call_id, outcome, self._clock(), dropped))
        self._wake.set()
        if self._metrics is not None:
            self._metrics.recordings_active.dec()

    # -- the writer thread ---------------------------------------------------------

    def _run(self) -> None:
        open_calls: dict[str, _CallRecording] = {}
        next_flush = time.monotonic() + self._flush_interval
        while True:
            self._wake.wait(timeout=max(0.0, next_flush - time.monotonic()))
            self._wake.clear()
            self._drain(open_calls)
            if time.monotonic() >= next_flush or self._stopping:
                self._flush_all(open_calls)
                next_flush = time.monotonic() + self._flush_interval
            if self._stopping and not self._queue:
                break
        for call_id in list(open_calls):  # only if an _End was lost: never leave files open
            self._finish(open_calls, call_id, "shutdown", self._clock(), 0)

    def _drain(self, open_calls: dict[str, _CallRecording]) -> None:
        while self._queue:
            item = self._queue.popleft()
            try:
                self._apply(open_calls, item)
            except Exception:  # one call's bad data or full disk must not kill the writer
                self._fail(open_calls, item.call_id)

    def _apply(self, open_calls: dict[str, _CallRecording], item: _Item) -> None:
        if isinstance(item, _Start):
            open_calls[item.call_id] = _CallRecording(item, self._tolerance, self._count_bytes)
            return
        recording = open_calls.get(item.call_id)
        if recording is None:
            return  # a recording that failed earlier
        if isinstance(item, _Audio):
            recording.add_audio(item.leg, item.pcm, item.wallclock)
        elif isinstance(item, _Event):
            recording.add_event(item.direction, item.event, item.wallclock)
        else:
            self._finish(open_calls, item.call_id, item.outcome, item.ended_at, item.dropped)

    def _flush_all(self, open_calls: dict[str, _CallRecording]) -> None:
        horizon = self._clock() - self._lag_secs
        for call_id, recording in list(open_calls.items()):
            try:
                recording.render_until(recording.sample_at(horizon))
                recording.flush()
            except Exception:  # see _drain
                self._fail(open_calls, call_id)

    def _finish(
        self,
        open_calls: dict[str, _CallRecording],
        call_id: str,
        outcome: str,
        ended_at: float,
        dropped: int,
    ) -> None:
        recording = open_calls.pop(call_id)
        try:
            recording.finish(outcome, ended_at, dropped)
        except Exception:  # see _drain
            self._fail({call_id: recording}, call_id)

    def _fail(self, open_calls: dict[str, _CallRecording], call_id: str) -> None:
        """A write failed (disk full, folder removed): stop this call's recording and
        say so in its metadata if the disk still lets us."""
        log.exception("recording of call %s failed", call_id)
        if self._metrics is not None:
            self._metrics.recording_failures_total.labels("io").inc()
        recording = open_calls.pop(call_id, None)
        if recording is None:
            return
        recording.close_files()
        recording.metadata.update(status="failed", ended_at=self._clock())
        with contextlib.suppress(OSError):
            _write_json_atomic(recording.folder / METADATA_FILE, recording.metadata)

    def _count_bytes(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.recording_bytes_total.inc(count)

    # -- admin API helpers (synchronous: call them through asyncio.to_thread) ---------

    def list_recordings(self, limit: int = 100) -> list[dict[str, Any]]:
        """Metadata of the newest ``limit`` recordings, newest first."""
        found: list[dict[str, Any]] = []
        for day in _day_folders(self.root):
            if len(found) >= limit:
                break  # older days cannot hold anything newer
            for folder in day.iterdir():
                metadata = read_metadata(folder)
                if metadata is not None:
                    found.append(metadata)
        found.sort(key=lambda m: float(m.get("started_at") or 0.0), reverse=True)
        return found[:limit]

    def find(self, call_id: str) -> Path | None:
        """The folder of ``call_id``'s recording, if there is one."""
        if not is_safe_id(call_id):
            return None
        for day in _day_folders(self.root):
            if (day / call_id / METADATA_FILE).is_file():
                return day / call_id
        return None

    def describe(self, call_id: str) -> dict[str, Any] | None:
        """Metadata plus the current file list of one recording."""
        folder = self.find(call_id)
        metadata = read_metadata(folder) if folder is not None else None
        if folder is None or metadata is None:
            return None
        return {**metadata, "files": _files_of(folder)}

    def file_path(self, call_id: str, name: str) -> Path | None:
        """A downloadable file of a recording; only names in :data:`FILES`."""
        if name not in FILES:
            return None
        folder = self.find(call_id)
        path = folder / name if folder is not None else None
        return path if path is not None and path.is_file() else None
