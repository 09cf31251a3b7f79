"""Operator routes of the call history: search the recordings, one recording's metadata,
its waveform, and its files to play or download. All need the admin token (see
:mod:`.ops_routes`); failures use OpenAI's error envelope.

``GET /api/recordings`` searches: ``q`` (words all in the transcript), ``since`` and
``until`` (when the call started: Unix seconds or ISO 8601, ``until`` exclusive),
``outcome``, ``limit`` (1-1000, default 100) and ``offset``; answers one page, newest
first, with ``has_more`` and ``next_offset``. A search reads at most
``store.MAX_SCANNED`` recordings and ``store.MAX_SEARCH_BYTES`` of transcripts
(``truncated`` says it stopped there).
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Final

from aiohttp import web

from ..ops.recording import AUDIO_FILE, FILES, Recorder
from ..ops.recording.store import RecordingQuery, search_recordings
from ..ops.recording.wav import peaks
from .errors import error_response
from .files import file_response
from .ops_routes import OPS, _admin, _json, _not_found

MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
MAX_OFFSET: Final = 100_000
#: Waveform points: what a wide screen draws, at most.
MAX_POINTS: Final = 4000
DEFAULT_POINTS: Final = 1000
_DOWNLOAD_TYPES: Final = {
    ".wav": "audio/wav",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".txt": "text/plain",
}


class BadParam(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def add_history_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/recordings", list_recordings)
    router.add_get("/api/recordings/{call_id}", get_recording)
    # Before the files' route: ``waveform`` is not one of the FILES.
    router.add_get("/api/recordings/{call_id}/waveform", recording_waveform)
    router.add_get("/api/recordings/{call_id}/{name}", download_recording_file)


def _recorder(request: web.Request) -> Recorder | None:
    return request.app[OPS].recorder


def _bad(exc: BadParam) -> web.Response:
    return error_response(400, str(exc), code="invalid_value", param=exc.param)


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        raise BadParam(name, f"{name} must be an integer.") from None
    return min(high, max(low, value))


def _time(request: web.Request, name: str) -> float | None:
    """A Unix time from ``name``: seconds, or an ISO 8601 date or date-time (UTC
    unless it says otherwise)."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw) if raw.replace(".", "", 1).isdigit() else _iso(raw)
    except (ValueError, OverflowError):
        raise BadParam(
            name, f"{name} must be Unix seconds or an ISO 8601 date, e.g. 2026-11-30."
        ) from None


def _iso(raw: str) -> float:
    when = datetime.datetime.fromisoformat(raw)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _query(request: web.Request) -> RecordingQuery:
    return RecordingQuery(
        text=request.query.get("q", "")[:200],
        since=_time(request, "since"),
        until=_time(request, "until"),
        outcome=request.query.get("outcome", "").strip() or None,
        offset=_int(request, "offset", 0, 0, MAX_OFFSET),
        limit=_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


@_admin
async def list_recordings(request: web.Request) -> web.Response:
    """One page of the recordings a search finds, newest first (see the module)."""
    try:
        query = _query(request)
    except BadParam as exc:
        return _bad(exc)
    recorder = _recorder(request)
    if recorder is None:
        return _json({"object": "list", "data": [], "has_more": False, "next_offset": None})
    page = await asyncio.to_thread(search_recordings, recorder.root, query)
    return _json({"object": "list", **page})


@_admin
async def get_recording(request: web.Request) -> web.Response:
    """One recording's metadata and its files (name, bytes)."""
    recorder = _recorder(request)
    call_id = request.match_info["call_id"]
    described = await asyncio.to_thread(recorder.describe, call_id) if recorder else None
    if described is None:
        return _not_found("No recording of that call.")
    return _json(described)


@_admin
async def recording_waveform(request: web.Request) -> web.Response:
    """The loudest sample of each channel per slice of the audio (``points``)."""
    try:
        points = _int(request, "points", DEFAULT_POINTS, 1, MAX_POINTS)
    except BadParam as exc:
        return _bad(exc)
    recorder = _recorder(request)
    call_id = request.match_info["call_id"]
    path = await asyncio.to_thread(recorder.file_path, call_id, AUDIO_FILE) if recorder else None
    if path is None:
        return _not_found("No recording of that call.")
    waveform = await asyncio.to_thread(peaks, path, points)
    return _json({"object": "recording.waveform", "call_id": call_id, **waveform})


@_admin
async def download_recording_file(request: web.Request) -> web.StreamResponse:
    """One file of a recording. Only the names a recording has (``FILES``) are
    served, so nothing from the URL reaches a path."""
    recorder = _recorder(request)
    call_id, name = request.match_info["call_id"], request.match_info["name"]
    if name not in FILES:
        return _not_found(f"A recording has no file {name!r}.", param="name")
    path = await asyncio.to_thread(recorder.file_path, call_id, name) if recorder else None
    if path is None:
        return _not_found("No recording of that call.")
    return file_response(
        request,
        path,
        {
            "Content-Type": _DOWNLOAD_TYPES.get(path.suffix, "application/octet-stream"),
            "Content-Disposition": f'attachment; filename="{call_id}-{name}"',
        },
    )
