"""``POST /api/turn_credentials``: short-lived TURN credentials (coturn's REST-API
scheme, :mod:`relay.turn`) for whoever may open a call: a client secret, the relay API
key, or anyone in open mode.

Without TURN configured the answer is ``404 turn_not_configured``, or ``204`` when the
request says ``?optional=1``: the relay's web client asks before every call, and a
relay without TURN should not make it print a failed request."""

from __future__ import annotations

from aiohttp import web

from .. import turn
from ..errors import NotFound
from .realtime_routes import authorise_call
from .state import SETTINGS


def setup_turn_routes(app: web.Application) -> None:
    app.router.add_post("/api/turn_credentials", create_turn_credentials)


async def create_turn_credentials(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    caller = await authorise_call(request)
    if not turn.configured(settings) or settings.turn_secret is None:
        if request.query.get("optional") == "1":
            return web.Response(status=204, headers={"Cache-Control": "no-store"})
        raise NotFound(
            "This relay has no TURN server configured (RELAY_TURN_URLS, RELAY_TURN_SECRET).",
            code="turn_not_configured",
        )
    minted = turn.mint(
        settings.turn_secret.value,
        settings.turn_urls,
        settings.turn_ttl_secs,
        turn.requester_id(caller.kind, caller.secret),
    )
    return web.json_response(minted.as_json(), headers={"Cache-Control": "no-store"})
