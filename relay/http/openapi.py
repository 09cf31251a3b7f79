"""The OpenAPI 3.1 description of the relay's HTTP surface (``openapi.json`` beside
this module), served at ``GET /openapi.json``.

It holds no secrets (no key, no host name): anyone may read it. Every route the app
registers has an entry and every entry a route (``tests/test_openapi.py`` checks both
ways and runs Schemathesis against it). WebSocket routes are described as the ``GET``
that upgrades, with a note; aiohttp answers ``HEAD`` wherever there is a ``GET``.
When a route changes, edit ``openapi.json`` with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from aiohttp import web

OPENAPI_PATH: Final = "/openapi.json"
_DOCUMENT: Final = Path(__file__).with_name("openapi.json")
_BODY: Final = _DOCUMENT.read_bytes()


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a new dict on each call)."""
    document: dict[str, Any] = json.loads(_BODY)
    return document


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")


def setup_openapi_route(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, openapi_document)
