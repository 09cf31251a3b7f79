"""OpenAI's error envelope for every failure the HTTP layer reports, and the bounds on
how long a client may take to send a request (slow clients are cut off, not waited for)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import Overloaded, RelayError, RequestTimeout

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Longer request paths get a 414; no route needs more than a few hundred characters.
MAX_PATH_CHARS = 2048
#: A path segment longer than a file name can be matches no route or file: a 404.
MAX_SEGMENT_BYTES = 255
#: How much of a path an error message repeats.
SHOWN_PATH_CHARS = 120
#: Slow-client refusals are logged on the first and then once every this many.
REFUSALS_LOG_EVERY = 100


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type, "code": code, "param": param}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def relay_error_response(exc: RelayError) -> web.Response:
    headers = None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after_secs)}
    return error_response(
        exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param, headers=headers
    )


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    412: "precondition_failed",
    413: "payload_too_large",
    416: "range_not_satisfiable",
}
#: Headers of an HTTP error that its enveloped answer keeps.
_KEPT_HEADERS = ("allow", "content-range")


def shown_path(path: str) -> str:
    """A request path as an error message or log line may repeat it: bounded."""
    return path if len(path) <= SHOWN_PATH_CHARS else path[:SHOWN_PATH_CHARS] + "..."


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await enveloped(request, handler)


async def enveloped(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``handler``'s answer, with every failure in OpenAI's envelope (nothing unexpected
    escapes as a crash) and the request body's arrival bounded (see :class:`ClientLimits`)."""
    refused = _refuse_path(request)
    if refused is not None:
        return refused
    guard = request.app.get(SLOW_CLIENTS)
    deadline = _BodyDeadline(request, guard) if guard is not None else None
    try:
        return await handler(request)
    except _BodyTimedOut:
        secs = guard.limits.body_secs if guard is not None else 0
        response = relay_error_response(
            RequestTimeout(f"The request body did not arrive within {secs:g} s.")
        )
        response.force_close()
        return response
    except RelayError as exc:
        return relay_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        own_text = bool(exc.text) and not str(exc.text).startswith(str(exc.status))
        message = str(exc.text) if own_text else exc.reason
        if exc.status == 404 and not own_text:
            message = f"Unknown route: {request.method} {shown_path(request.path)}"
        elif exc.status == 405:
            message = f"Method {request.method} is not allowed on {shown_path(request.path)}."
        return error_response(
            exc.status,
            message,
            code=_HTTP_CODES.get(exc.status),
            headers={k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS},
        )
    except RecursionError:  # input nested deeper than any check expected: not a crash
        logger.warning("%s %s: input nested too deeply", request.method, shown_path(request.path))
        return error_response(400, "The request is nested too deeply.", code="nested_too_deeply")
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, shown_path(request.path))
        return error_response(500, "The relay hit an internal error.", type="server_error")
    finally:
        if deadline is not None:
            deadline.cancel()


def _refuse_path(request: web.Request) -> web.Response | None:
    if len(request.rel_url.raw_path) > MAX_PATH_CHARS:
        message = f"The request path is longer than {MAX_PATH_CHARS} characters."
        return error_response(414, message, code="uri_too_long")
    segments = request.path.split("/")
    if any(len(s.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES for s in segments):
        message = f"Unknown route: {request.method} {shown_path(request.path)}"
        return error_response(404, message, code="not_found")
    return None


# -- slow clients ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientLimits:
    """How long a client may take over a request, in seconds.

    * ``idle_secs``: from when a connection opens, or its previous answer was sent,
      until the next request's headers are complete. It bounds idle keep-alive
      connections and trickled headers alike (it is aiohttp's keep-alive timer, which
      incoming bytes do not reset).
    * ``body_secs``: from complete headers until the body is complete; a body still
      arriving then gets a 408 and the connection is closed. An answer sent before its
      request's body was read drains that body for this long at most.
    """

    idle_secs: float = 30.0
    body_secs: float = 30.0

    def handler_args(self) -> dict[str, object]:
        return {
            "keepalive_timeout": self.idle_secs,
            "lingering_time": self.body_secs,
            "logger": _SERVER_LOGGER,
        }


class SlowClients:
    """The limits in force, and how many requests they cut off (bodies that did not
    arrive in time; connections closed idle or mid-headers are aiohttp's own, uncounted)."""

    def __init__(self, limits: ClientLimits) -> None:
        self.limits = limits
        self.refused = 0

    def refuse(self, request: web.Request) -> None:
        self.refused += 1
        if (self.refused - 1) % REFUSALS_LOG_EVERY == 0:
            logger.warning(
                "cut off %d slow request(s) so far; latest: %s %s from %s, body not complete "
                "after %g s",
                self.refused,
                request.method,
                shown_path(request.path),
                request.remote,
                self.limits.body_secs,
            )


SLOW_CLIENTS = web.AppKey("slow_clients", SlowClients)


def bound_slow_clients(app: web.Application, limits: ClientLimits | None = None) -> SlowClients:
    """Apply ``limits`` (default: :class:`ClientLimits`) to ``app``, whichever runner
    serves it (``run_app``, the shards' ``AppRunner``, tests' ``TestServer``): an app's
    handler arguments override the runner's. Call before the app is served."""
    guard = SlowClients(limits or ClientLimits())
    app[SLOW_CLIENTS] = guard
    # What web.Application(handler_args=...) sets; here so the limits live in one place.
    app._handler_args = {**(app._handler_args or {}), **guard.limits.handler_args()}
    return guard


class _OneLineForBadRequests(logging.Filter):
    """aiohttp logs each request its parser refuses (a line too long, a malformed
    header: a plain 400 it answers itself) with a traceback; one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: {exc.code} {exc.message}"[:300]
            record.args, record.exc_info = (), None
        return True


#: aiohttp's server logger for the relay's connections (see :class:`ClientLimits`).
_SERVER_LOGGER = logging.getLogger("relay.http.server")
_SERVER_LOGGER.addFilter(_OneLineForBadRequests())


class _BodyTimedOut(TimeoutError):
    """Set on a request body that did not arrive in time. A ``TimeoutError``, so that
    aiohttp's drain of an unread body ends quietly (and closes the connection)."""


class _BodyDeadline:
    """Fails the reads of ``request``'s body once ``body_secs`` have passed."""

    def __init__(self, request: web.Request, guard: SlowClients) -> None:
        self._request = request
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        if not request.content.is_eof():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(guard.limits.body_secs, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._request.content.is_eof():
            return
        self._guard.refuse(self._request)
        self._request.content.set_exception(_BodyTimedOut())

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
