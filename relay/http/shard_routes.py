"""Routing between shards (see :mod:`relay.shards`): forward follow-up requests to
the shard that owns the call, gather answers that cover every shard, and answer
siblings' questions on the private socket."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web
from yarl import URL

from ..shards import SHARD_HEADER, CallRoute, call_route, is_internal, merge_expositions
from .errors import Handler, enveloped, error_response
from .state import CLIENT_SECRETS, SHARD, SHARD_CLIENT

OWNER_HEADER = "X-Relay-Owner-Shard"
#: Set on a gathered answer that lacks some shards' part: their indexes.
MISSING_HEADER = "X-Relay-Missing-Shards"
#: GET routes whose answer covers every shard.
GATHERED = ("/metrics", "/api/calls")
#: The request headers that carry an operator's token (the WebSocket form works on
#: plain HTTP too), passed on to the siblings asked for their part.
_AUTH_HEADERS = ("authorization", "sec-websocket-protocol")


@web.middleware
async def shard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    layout = request.app[SHARD]
    if not layout.sharded or is_internal(request, layout):
        return await handler(request)
    route = call_route(request.rel_url.raw_path, request.rel_url.query.get("call_id", ""))
    if route is not None and route.owner != layout.index and route.owner < layout.count:
        response = await enveloped(request, lambda r: _forward(r, route))
    elif request.method == "GET" and request.path in GATHERED:
        response = await _gather(request, handler)
    else:
        response = await handler(request)
    if not response.prepared:
        response.headers[SHARD_HEADER] = str(layout.index)
    return response


async def _forward(request: web.Request, route: CallRoute) -> web.StreamResponse:
    # Read here, not with the shard's answer awaited: a body that is too big or too
    # slow is the client's error, not a shard that did not answer.
    body = await request.read()
    try:
        response = await request.app[SHARD_CLIENT].forward(request, route, body)
    except aiohttp.WSServerHandshakeError as exc:  # the owner refused the WebSocket
        response = error_response(exc.status, exc.message or "WebSocket refused.")
    except (aiohttp.ClientError, TimeoutError):
        return error_response(
            502, f"Shard {route.owner}, which owns this call, did not answer.", type="server_error"
        )
    if not response.prepared:
        response.headers[OWNER_HEADER] = str(route.owner)
    return response


async def _gather(request: web.Request, handler: Handler) -> web.StreamResponse:
    """This shard's answer, merged with every sibling's."""
    response = await handler(request)
    if response.status != 200 or not isinstance(response, web.Response):
        return response
    auth = {k: v for k, v in request.headers.items() if k.lower() in _AUTH_HEADERS}
    path = str(URL.build(path=request.path).with_query(request.rel_url.query))
    client = request.app[SHARD_CLIENT]
    others = await client.gather(path, auth)
    body = response.body if isinstance(response.body, bytes) else b""
    if request.path == "/metrics":
        texts = {i: str(t) for i, t in others.items()}
        texts[request.app[SHARD].index] = body.decode()
        merged: web.Response = web.Response(
            body=merge_expositions(texts).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
    else:
        listing = json.loads(body or b"{}")
        for other in others.values():
            if isinstance(other, dict):
                listing.setdefault("data", []).extend(other.get("data", []))
        merged = web.json_response(listing)
    missing = [str(i) for i in client.siblings() if i not in others]
    if missing:
        merged.headers[MISSING_HEADER] = ",".join(missing)
    return merged


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
