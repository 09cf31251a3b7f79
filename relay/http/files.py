"""Files served as they are (the web client, the monitor page, recordings), with every
refusal in OpenAI's error envelope.

aiohttp's :class:`~aiohttp.web.FileResponse` answers a missing file, a failed
``If-Match`` / ``If-Unmodified-Since`` and an unsatisfiable ``Range`` by itself, with an
empty body. :func:`file_response` makes the same decisions first (aiohttp's rules, the
same ETag) and raises them as HTTP errors, which the error middleware puts in the
envelope; what reaches ``FileResponse`` is a request it serves (200, 206 or 304)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

#: The characters a served file's path may use (the web client's own names).
_SAFE_SEGMENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def file_response(
    request: web.Request, path: Path, headers: Mapping[str, str] | None = None
) -> web.FileResponse:
    """``path`` as a response, or an HTTP error raised for the error middleware."""
    try:
        st = path.stat()
    except OSError:
        raise web.HTTPNotFound() from None
    if not stat.S_ISREG(st.st_mode):
        raise web.HTTPNotFound()
    _check_preconditions(request, st)
    _check_range(request, st)
    return web.FileResponse(path, headers=headers)


def file_under(root: Path, relative: str) -> Path:
    """The regular file ``relative`` names under ``root``: plain segments only (no dot
    files, no ``..``) and no symbolic link on the way; else ``HTTPNotFound``."""
    segments = relative.split("/")
    for segment in segments:
        if not segment or segment.startswith(".") or not set(segment) <= _SAFE_SEGMENT:
            raise web.HTTPNotFound()
    path = root
    for segment in segments:
        path = path / segment
        if path.is_symlink():
            raise web.HTTPNotFound()
    return path


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"  # aiohttp's


def _check_preconditions(request: web.Request, st: os.stat_result) -> None:
    if_match = request.if_match
    if if_match is not None:
        if not any(e.value == "*" or (e.value == _etag(st) and not e.is_weak) for e in if_match):
            raise web.HTTPPreconditionFailed(text="The file does not match If-Match.")
        return
    since = request.if_unmodified_since
    if since is not None and st.st_mtime > since.timestamp():
        raise web.HTTPPreconditionFailed(text="The file was modified since If-Unmodified-Since.")


def _check_range(request: web.Request, st: os.stat_result) -> None:
    if_range = request.if_range
    if if_range is not None and st.st_mtime > if_range.timestamp():
        return  # the whole file is served
    size = st.st_size
    unsatisfiable = web.HTTPRequestRangeNotSatisfiable(
        headers={"Content-Range": f"bytes */{size}"},
        text="The requested range is not satisfiable.",
    )
    try:
        start = request.http_range.start
    except ValueError:
        raise unsatisfiable from None
    if start is not None and start >= 0 and start >= size:
        raise unsatisfiable
