"""The recordings on disk: folder layout, metadata, crash recovery, retention and the
listing the admin API serves. Everything here is synchronous file IO: run it in a
thread (``asyncio.to_thread``), never on the event loop.

Layout: ``<root>/<YYYY-MM-DD>/<call_id>/`` (UTC date of the call's start) holding the
:data:`FILES`."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from relay.taps import CANONICAL_RATE

from .wav import repair_wav

log = logging.getLogger(__name__)

#: The files of a recording: the only names the download route serves (no path from the
#: client reaches the disk).
FILES: Final = ("audio.wav", "events.jsonl", "metadata.json", "transcript.jsonl", "transcript.txt")
AUDIO_FILE, EVENTS_FILE, METADATA_FILE, TRANSCRIPT_JSONL, TRANSCRIPT_TXT = FILES

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_safe_id(call_id: str) -> bool:
    """Whether ``call_id`` can name a folder: no separators, no leading dot."""
    return bool(_SAFE_ID.match(call_id))


def folder_for(root: Path, call_id: str, started_at: float) -> Path:
    """Where the recording of ``call_id``, started at Unix time ``started_at``, goes."""
    day = datetime.datetime.fromtimestamp(started_at, datetime.UTC).strftime("%Y-%m-%d")
    return root / day / call_id


# -- metadata -------------------------------------------------------------------------


def write_json_atomic(path: Path, data: dict[str, Any]) -> int:
    """Write ``data`` to ``path`` via a temporary file, so a crash never leaves half."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str).encode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text)
    os.replace(tmp, path)
    return len(text)


def read_metadata(folder: Path) -> dict[str, Any] | None:
    path = own_file(folder, METADATA_FILE)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def own_file(folder: Path, name: str) -> Path | None:
    """``folder / name`` if it is a regular file of ``folder`` itself: not a symlink,
    and resolving inside ``folder`` (nothing else of the disk is ever served)."""
    path = folder / name
    try:
        if path.is_symlink() or not path.is_file():
            return None
        if path.resolve(strict=True).parent != folder.resolve(strict=True):
            return None
    except (OSError, RuntimeError):  # vanished meanwhile, or a symlink loop
        return None
    return path


def files_of(folder: Path) -> list[dict[str, Any]]:
    """Name and size of each of the :data:`FILES` present in ``folder`` (as
    :func:`own_file` finds them)."""
    found = [own_file(folder, name) for name in FILES]
    return [{"name": path.name, "bytes": path.stat().st_size} for path in found if path]


def writer_identity() -> dict[str, Any]:
    """Who writes a recording (``metadata["writer"]``): recovery leaves those of other
    live processes on this host alone."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


# -- folders ----------------------------------------------------------------------------


def day_folders(root: Path) -> list[Path]:
    """The ``YYYY-MM-DD`` folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    days = (d for d in root.iterdir() if _DAY.match(d.name) and _real_dir(d))
    return sorted(days, reverse=True)


def _real_dir(path: Path) -> bool:
    """A folder, not a symlink to one (a recording is only what the recorder wrote)."""
    return path.is_dir() and not path.is_symlink()


def call_folders(root: Path) -> Iterator[Path]:
    """Every call folder under ``root``, newest day first."""
    for day in day_folders(root):
        yield from (f for f in day.iterdir() if _real_dir(f))


def find(root: Path, call_id: str) -> Path | None:
    """The folder of ``call_id``'s recording, if there is one."""
    if not is_safe_id(call_id):
        return None
    for day in day_folders(root):
        folder = day / call_id
        if _real_dir(folder) and read_metadata(folder) is not None:
            return folder
    return None


def list_recordings(root: Path, limit: int = 100) -> list[dict[str, Any]]:
    """Metadata of the newest ``limit`` recordings, newest first."""
    found: list[dict[str, Any]] = []
    for day in day_folders(root):
        if len(found) >= limit:
            break  # older days cannot hold anything newer
        for folder in day.iterdir():
            metadata = read_metadata(folder) if _real_dir(folder) else None
            if metadata is not None:
                found.append(metadata)
    found.sort(key=lambda m: float(m.get("started_at") or 0.0), reverse=True)
    return found[:limit]


@dataclass(frozen=True)
class RecordingQuery:
    """What the history search looks for. ``text``: words that must all occur in the
    transcript (any case); ``since``/``until``: Unix times the call started between;
    ``outcome``: the metadata's outcome exactly; ``offset``/``limit``: the page."""

    text: str = ""
    since: float | None = None
    until: float | None = None
    outcome: str | None = None
    offset: int = 0
    limit: int = 50


#: Recordings one search reads at most (metadata, and transcript when ``text`` is set).
MAX_SCANNED: Final = 5000
#: Transcript bytes of one recording a search reads at most (an hour of talk is ~100 KB).
MAX_TRANSCRIPT_BYTES: Final = 1_000_000
#: Transcript bytes one search reads at most, all recordings together.
MAX_SEARCH_BYTES: Final = 64_000_000
#: Matching transcript lines returned per recording.
MAX_MATCHES: Final = 3


def search_recordings(root: Path, query: RecordingQuery) -> dict[str, Any]:
    """One page of the recordings ``query`` finds, newest first: ``data`` (metadata plus
    ``matches``, the transcript lines holding a searched word), ``has_more``,
    ``next_offset``, and ``truncated`` when :data:`MAX_SCANNED` recordings were read
    or :data:`MAX_SEARCH_BYTES` of transcripts before the page was full (narrow the
    dates to search further back)."""
    words = query.text.lower().split()
    wanted = query.offset + query.limit + 1
    found: list[dict[str, Any]] = []
    scanned = 0
    budget = [MAX_SEARCH_BYTES]  # transcript bytes left to read
    stopped = False
    for metadata, folder in _newest_first(root, query.since, query.until):
        if len(found) >= wanted:
            break
        if scanned >= MAX_SCANNED or budget[0] <= 0:
            stopped = True
            break
        scanned += 1
        if query.outcome and metadata.get("outcome") != query.outcome:
            continue
        started = float(metadata.get("started_at") or 0.0)
        if (query.since is not None and started < query.since) or (
            query.until is not None and started >= query.until
        ):
            continue
        matches = _transcript_matches(folder, words, budget) if words else []
        if words and not matches:
            continue
        found.append({**metadata, "matches": matches[:MAX_MATCHES]})
    page = found[query.offset : query.offset + query.limit]
    has_more = len(found) > query.offset + query.limit
    return {
        "data": page,
        "has_more": has_more,
        "next_offset": query.offset + len(page) if has_more else None,
        "truncated": stopped and not has_more,
    }


def _newest_first(
    root: Path, since: float | None, until: float | None
) -> Iterator[tuple[dict[str, Any], Path]]:
    """(metadata, folder) of each recording, newest first, skipping whole days outside
    ``since``..``until``."""
    for day in day_folders(root):
        end = _day_end(day.name)
        if since is not None and end <= since:
            return  # this day and every older one ended before ``since``
        if until is not None and end - 86400 >= until:
            continue
        recordings = []
        for folder in day.iterdir():
            metadata = read_metadata(folder) if _real_dir(folder) else None
            if metadata is not None:
                recordings.append((metadata, folder))
        recordings.sort(key=lambda r: float(r[0].get("started_at") or 0.0), reverse=True)
        yield from recordings


def _transcript_matches(folder: Path, words: list[str], budget: list[int]) -> list[dict[str, Any]]:
    """The transcript lines of ``folder`` holding one of ``words``, if the transcript
    holds every one of them (else ``[]``). What is read is taken from ``budget[0]``."""
    path = own_file(folder, TRANSCRIPT_JSONL)
    if path is None:
        return []
    try:
        with path.open("rb") as file:
            raw = file.read(max(0, min(MAX_TRANSCRIPT_BYTES, budget[0])))
    except OSError:
        return []
    budget[0] -= len(raw)
    lines = []
    for line in raw.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("text"), str):
                lines.append(entry)
    text = " ".join(entry["text"] for entry in lines).lower()
    if not all(word in text for word in words):
        return []
    return [e for e in lines if any(word in e["text"].lower() for word in words)]


# -- crash recovery ---------------------------------------------------------------------


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
    metadata["files"] = files_of(folder)
    write_json_atomic(folder / METADATA_FILE, metadata)


def finalise_unfinished(root: Path, active: frozenset[str] = frozenset()) -> list[str]:
    """Repair recordings a crashed process left in ``status: "recording"``.

    The WAV header gets the true sizes, torn JSONL lines are cut, and the metadata
    says ``interrupted`` with an end time from the audio or the last event. Recordings
    of ``active`` calls and of other live processes on this host are left alone.
    Returns the repaired call ids."""
    repaired: list[str] = []
    for folder in call_folders(root):
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


# -- retention ----------------------------------------------------------------------------


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
    for folder in list(call_folders(root)):
        metadata = read_metadata(folder)
        if folder.name in active or (metadata and _written_by_live_process(metadata)):
            continue
        started = metadata.get("started_at") if metadata else None
        when = float(started) if isinstance(started, int | float) else folder.stat().st_mtime
        if when < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder.name)
    for day in day_folders(root):
        # Only days wholly past the retention: a recent day folder may be getting its
        # first call folder right now (the writer thread makes both), a race otherwise.
        if _day_end(day.name) < cutoff and not any(day.iterdir()):
            with contextlib.suppress(OSError):
                day.rmdir()
    return deleted
