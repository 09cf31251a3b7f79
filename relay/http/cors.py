"""CORS for pages on another origin (OpenAI's JS SDK in a browser, say)."""

from __future__ import annotations

from aiohttp import web

from .errors import Handler

EXPOSED = "Location, Retry-After, X-Relay-Resume-Token"
METHODS = "GET, POST, OPTIONS"


def cors_middleware(allowed: tuple[str, ...]) -> web.middleware:  # type: ignore[valid-type]
    allow_any = "*" in allowed

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not origin or not (allow_any or origin in allowed):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = METHODS
            requested = request.headers.get("Access-Control-Request-Headers")
            if requested:
                response.headers["Access-Control-Allow-Headers"] = requested
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
        response.headers["Vary"] = "Origin"
        return response

    return middleware
