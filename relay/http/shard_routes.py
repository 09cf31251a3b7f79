"""Routing between shards (see :mod:`relay.shards`): forward follow-up requests to
the shard that owns the call, gather answers that cover every shard, and answer
siblings' questions on the private socket."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from ..shards import SHARD_HEADER, call_owner, is_internal, merge_expositions
from .errors import Handler, error_response
from .state import CLIENT_SECRETS, SHARD, SHARD_CLIENT

OWNER_HEADER = "X-Relay-Owner-Shard"
#: GET routes whose answer covers every shard.
GATHERED = ("/metrics", "/api/calls")


@web.middleware
async def shard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    layout = request.app[SHARD]
    if not layout.sharded or is_internal(request, layout):
        return await handler(request)
    owner = call_owner(request.path)
    if owner is not None and owner != layout.index and owner < layout.count:
        response = await _forward(request, owner)
    elif request.method == "GET" and request.path in GATHERED:
        response = await _gather(request, handler)
    else:
        response = await handler(request)
    if not response.prepared:
        response.headers[SHARD_HEADER] = str(layout.index)
    return response


async def _forward(request: web.Request, owner: int) -> web.StreamResponse:
    try:
        response = await request.app[SHARD_CLIENT].forward(request, owner)
    except aiohttp.WSServerHandshakeError as exc:  # the owner refused the WebSocket
        response = error_response(exc.status, exc.message or "WebSocket refused.")
    except (aiohttp.ClientError, TimeoutError):
        return error_response(
            502, f"Shard {owner}, which owns this call, did not answer.", type="server_error"
        )
    if not response.prepared:
        response.headers[OWNER_HEADER] = str(owner)
    return response


async def _gather(request: web.Request, handler: Handler) -> web.StreamResponse:
    """This shard's answer, merged with every sibling's."""
    response = await handler(request)
    if response.status != 200 or not isinstance(response, web.Response):
        return response
    auth = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
    others = await request.app[SHARD_CLIENT].gather(request.path_qs, auth)
    body = response.body if isinstance(response.body, bytes) else b""
    if request.path == "/metrics":
        texts = {i: str(t) for i, t in others.items()}
        texts[request.app[SHARD].index] = body.decode()
        return web.Response(
            body=merge_expositions(texts).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
    listing = json.loads(body or b"{}")
    for other in others.values():
        if isinstance(other, dict):
            listing.setdefault("data", []).extend(other.get("data", []))
    return web.json_response(listing)


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
