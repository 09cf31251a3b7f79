"""OpenAI's error envelope for every failure the HTTP layer reports."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import Overloaded, RelayError

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes OpenAI's envelope; nothing unexpected escapes as a crash."""
    try:
        return await handler(request)
    except RelayError as exc:
        return relay_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 404:
            message = f"Unknown route: {request.method} {request.path}"
        elif exc.status == 405:
            message = f"Method {request.method} is not allowed on {request.path}."
        return error_response(
            exc.status,
            message,
            code=_HTTP_CODES.get(exc.status),
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "The relay hit an internal error.", type="server_error")
