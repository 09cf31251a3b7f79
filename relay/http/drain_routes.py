"""Draining a relay before it goes away (a rolling update, a node drain, scale-in).

``POST /admin/drain`` (admin token) does what SIGTERM does first: the relay stops taking
calls (``503 relay_overloaded`` with ``Retry-After``; ``/readyz`` answers ``503
draining``, so a load balancer or Kubernetes sends new calls elsewhere) and lets the
running ones end on their own for up to ``RELAY_DRAIN_TIMEOUT_SECS``; the ones still up
then are ended cleanly (outcome ``shutdown``: recordings finalised, webhooks sent). The
process keeps serving (hangups, monitoring, metrics) until it is stopped; a drain is
not undone (restart the process to take calls again). With ``serve --workers N`` the
shard that gets the request drains its siblings too. ``GET /admin/drain`` tells how far
it is.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..shards import is_internal
from .ops_routes import _admin, _json
from .shard_routes import MISSING_HEADER
from .state import REGISTRY, SETTINGS, SHARD, SHARD_CLIENT

logger = logging.getLogger(__name__)

DRAIN_PATH = "/admin/drain"


def setup_drain_routes(app: web.Application) -> None:
    app.router.add_post(DRAIN_PATH, start_drain)
    app.router.add_get(DRAIN_PATH, drain_status)


@_admin
async def start_drain(request: web.Request) -> web.Response:
    """Start draining this process (and every sibling shard); ``202`` with the status."""
    app = request.app
    settings, registry = app[SETTINGS], app[REGISTRY]
    if not registry.draining:
        logger.info("drain requested: refusing new calls")
    registry.start_drain(settings.drain_timeout_secs, settings.shutdown_timeout_secs)
    layout = app[SHARD]
    missing: list[str] = []
    if layout.sharded and not is_internal(request, layout):
        missing = await _drain_siblings(request)
    response = _json(_status(request), status=202)
    if missing:
        response.headers[MISSING_HEADER] = ",".join(missing)
    return response


@_admin
async def drain_status(request: web.Request) -> web.Response:
    return _json(_status(request))


def _status(request: web.Request) -> dict[str, object]:
    registry = request.app[REGISTRY]
    return {
        "object": "relay.drain",
        "draining": registry.draining,
        "calls": len(registry),
        "deadline": registry.drain_deadline,
        "shard": request.app[SHARD].index,
    }


async def _drain_siblings(request: web.Request) -> list[str]:
    """Replay the request on every sibling shard (which drains only itself); the
    indexes of those that did not accept it."""
    client = request.app[SHARD_CLIENT]
    siblings = client.siblings()
    results = await asyncio.gather(
        *(client.forward(request, i, DRAIN_PATH) for i in siblings),
        return_exceptions=True,
    )
    missing = []
    for index, result in zip(siblings, results, strict=True):
        if isinstance(result, BaseException) or result.status != 202:
            logger.warning("shard %d did not start draining: %r", index, result)
            missing.append(str(index))
    return missing
