"""Routing between shards (see :mod:`relay.shards`): forward follow-up requests to
the shard that owns the call, and answer siblings' questions on the private socket."""

from __future__ import annotations

from aiohttp import web

from ..shards import SHARD_HEADER, call_owner, is_internal

OWNER_HEADER = "X-Relay-Owner-Shard"
from .errors import Handler
from .state import CLIENT_SECRETS, SHARD, SHARD_CLIENT


@web.middleware
async def shard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    layout = request.app[SHARD]
    owner = call_owner(request.path)
    if (
        layout.sharded
        and owner is not None
        and owner != layout.index
        and owner < layout.count
        and not is_internal(request, layout)
    ):
        response = await request.app[SHARD_CLIENT].forward(request, owner)
        if not response.prepared:
            response.headers[OWNER_HEADER] = str(owner)
    else:
        response = await handler(request)
    if layout.sharded and not response.prepared:
        response.headers[SHARD_HEADER] = str(layout.index)
    return response


async def internal_client_secret(request: web.Request) -> web.Response:
    """A sibling asks for the session of a client secret this shard minted."""
    if not is_internal(request, request.app[SHARD]):
        raise web.HTTPNotFound()
    secret = request.app[CLIENT_SECRETS].lookup(request.match_info["value"])
    if secret is None:
        raise web.HTTPNotFound()
    return web.json_response({"session": secret.session, "expires_at": secret.expires_at})


def setup_shard_routes(app: web.Application) -> None:
    app.router.add_get("/internal/client_secrets/{value}", internal_client_secret)
