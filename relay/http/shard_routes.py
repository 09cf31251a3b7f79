"""Routing between shards and nodes (see :mod:`relay.shards`, :mod:`relay.cluster`):
forward follow-up requests to the shard or node that owns the call, gather answers
that cover every shard (and, with a call directory, every node), and answer siblings'
questions on the private socket."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from ..auth import ClientSecret
from ..call import Call
from ..cluster.directory import CallDirectory, DirectoryUnavailable
from ..cluster.node import ClusterNode
from ..config import Settings
from ..shards import (
    SHARD_HEADER,
    CallRoute,
    Target,
    call_route,
    from_node,
    is_internal,
    merge_expositions,
    on_cluster_listener,
)
from .errors import Handler, enveloped, error_response, relay_error_response
from .state import CLIENT_SECRETS, METRICS, REGISTRY, SETTINGS, SHARD, SHARD_CLIENT

logger = logging.getLogger(__name__)

OWNER_HEADER = "X-Relay-Owner-Shard"
#: Set on a gathered answer that lacks some shards' part: their indexes.
MISSING_HEADER = "X-Relay-Missing-Shards"
#: Set on a fleet's answer that lacks some nodes' part: how many.
MISSING_NODES_HEADER = "X-Relay-Missing-Nodes"
#: GET routes whose answer covers every shard.
GATHERED = ("/metrics", "/api/calls")
#: GET routes whose answer covers every node of a fleet (``/metrics`` is per node:
#: Prometheus scrapes each).
FLEET_GATHERED = ("/api/calls", "/api/recordings", "/api/conversations")
#: Gathered listings that are kept newest first: their default and top ``limit``.
_NEWEST_FIRST = {"/api/recordings": (100, 1000), "/api/conversations": (20, 50)}
#: The request headers that carry an operator's token (the WebSocket form works on
#: plain HTTP too), passed on to the siblings asked for their part.
_AUTH_HEADERS = ("authorization", "sec-websocket-protocol")
#: Only tokens shaped like a client secret are looked up in the directory.
_SECRET_SHAPE = re.compile(r"ek_[0-9a-f]{32}")

#: This node in the fleet's call directory (set when ``RELAY_REDIS_URL`` is).
CLUSTER = web.AppKey("cluster", ClusterNode)


@web.middleware
async def shard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    app, layout = request.app, request.app[SHARD]
    cluster = app.get(CLUSTER)
    port = app[SETTINGS].cluster_port
    if port and on_cluster_listener(request, port):
        refused = _cluster_listener_refusal(request)
        if refused is not None:
            return refused
    if is_internal(request, layout) or (not layout.sharded and cluster is None):
        return await handler(request)
    # Another node's request goes at most to a sibling shard, never to a third node.
    fleet = cluster is not None and not from_node(request, _cluster_token(app), port)
    route = call_route(request.rel_url.raw_path, request.rel_url.query.get("call_id", ""))
    target: Target | None = None
    if route is not None:
        try:
            target = await _owner(app, route, fleet)
        except DirectoryUnavailable as exc:
            return relay_error_response(exc)
    if route is not None and target is not None:
        owner = target
        response = await enveloped(request, lambda r: _forward(r, route, owner))
    elif request.method == "GET" and _gathered(request.path, layout.sharded, fleet):
        response = await _gather(request, handler, fleet)
    else:
        response = await handler(request)
    if not response.prepared and layout.sharded:
        response.headers[SHARD_HEADER] = str(layout.index)
    return response


def _cluster_listener_refusal(request: web.Request) -> web.Response | None:
    """The cluster listener serves only another node's requests (the cluster token),
    and of those only what a node sends: a call's follow-up, a fleet listing."""
    if not from_node(request, _cluster_token(request.app)):
        return error_response(
            401,
            "This port serves only the relay's other nodes (a valid cluster token).",
            code="cluster_token_required",
        )
    route = call_route(request.rel_url.raw_path, request.rel_url.query.get("call_id", ""))
    gathered = request.method == "GET" and request.path in FLEET_GATHERED
    if route is None and not gathered:
        return error_response(404, "Not a route of the cluster listener.", code="not_found")
    return None


def _gathered(path: str, sharded: bool, fleet: bool) -> bool:
    return (sharded and path in GATHERED) or (fleet and path in FLEET_GATHERED)


def _cluster_token(app: web.Application) -> str | None:
    token = app[SETTINGS].cluster_token
    return token.value if token is not None else None


async def _owner(app: web.Application, route: CallRoute, fleet: bool) -> Target | None:
    """Where a request about ``route``'s call goes (``None``: here). A call of this
    shard is served here; else the directory names its node (another node's); else its
    id names its shard (the in-machine fast path)."""
    if app[REGISTRY].get(route.call_id) is not None:
        return None
    cluster = app.get(CLUSTER)
    if cluster is not None and fleet:
        node = await cluster.owner(route.call_id)
        if node is not None:
            return node
    layout = app[SHARD]
    shard = route.shard
    if layout.sharded and shard is not None and shard != layout.index and shard < layout.count:
        return shard
    return None


async def _forward(request: web.Request, route: CallRoute, target: Target) -> web.StreamResponse:
    # Read here, not with the owner's answer awaited: a body that is too big or too
    # slow is the client's error, not an owner that did not answer.
    body = await request.read()
    try:
        response = await request.app[SHARD_CLIENT].forward(request, target, route.path, body)
    except aiohttp.WSServerHandshakeError as exc:  # the owner refused the WebSocket
        response = error_response(exc.status, exc.message or "WebSocket refused.")
    except (aiohttp.ClientError, TimeoutError):
        who = f"Shard {target}" if isinstance(target, int) else "The relay node"
        return error_response(
            502, f"{who}, which owns this call, did not answer.", type="server_error"
        )
    if not response.prepared and isinstance(target, int):
        response.headers[OWNER_HEADER] = str(target)
    return response


async def _gather(request: web.Request, handler: Handler, fleet: bool) -> web.StreamResponse:
    """This shard's answer, merged with every sibling's (and every other node's)."""
    response = await handler(request)
    if response.status != 200 or not isinstance(response, web.Response):
        return response
    auth = {k: v for k, v in request.headers.items() if k.lower() in _AUTH_HEADERS}
    path = str(URL.build(path=request.path).with_query(request.rel_url.query))
    client, layout = request.app[SHARD_CLIENT], request.app[SHARD]
    siblings: list[Target] = list(client.siblings()) if request.path in GATHERED else []
    nodes: list[Target] = []
    missing_nodes = 0
    if fleet and request.path in FLEET_GATHERED:
        try:
            nodes = list(await request.app[CLUSTER].peers())
        except DirectoryUnavailable:
            missing_nodes = -1  # unknown: the directory did not say
    others = await client.gather(path, auth, siblings + nodes)
    body = response.body if isinstance(response.body, bytes) else b""
    if request.path == "/metrics":
        texts = {int(i): str(t) for i, t in others.items()}
        texts[layout.index] = body.decode()
        merged: web.Response = web.Response(
            body=merge_expositions(texts).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
    else:
        merged = web.json_response(_merge_listings(request, body, others.values()))
    missing = [str(i) for i in siblings if i not in others]
    if missing:
        merged.headers[MISSING_HEADER] = ",".join(missing)
    if missing_nodes == 0:
        missing_nodes = sum(1 for n in nodes if n not in others)
    if missing_nodes:
        merged.headers[MISSING_NODES_HEADER] = str(missing_nodes) if missing_nodes > 0 else "?"
    return merged


def _merge_listings(request: web.Request, body: bytes, others: Any) -> dict[str, Any]:
    """One list of every part's ``data``; recordings newest first, ``limit`` of them."""
    listing: dict[str, Any] = json.loads(body or b"{}")
    data: list[Any] = listing.setdefault("data", [])
    for other in others:
        if isinstance(other, dict) and isinstance(other.get("data"), list):
            data.extend(other["data"])
    if request.path in _NEWEST_FIRST:
        default, top = _NEWEST_FIRST[request.path]
        data.sort(key=lambda m: float(m.get("started_at") or 0.0), reverse=True)
        # the handler checked ?limit= already (each part answered 200)
        limit = min(top, max(1, int(request.query.get("limit", str(default)))))
        if len(data) > limit or any(isinstance(o, dict) and o.get("has_more") for o in others):
            listing["has_more"] = True
        listing["data"] = data[:limit]
    return listing


# -- client secrets and calls in the directory ----------------------------------------


async def client_secret_session(app: web.Application, token: str) -> dict[str, Any] | None:
    """The session of a client secret minted by this shard, by any node of the fleet
    (the directory), or by a sibling shard; ``None`` for anything else."""
    secret = app[CLIENT_SECRETS].lookup(token)
    if secret is not None:
        return secret.session
    cluster = app.get(CLUSTER)
    if cluster is not None:
        if not _SECRET_SHAPE.fullmatch(token):
            return None
        stored = await cluster.directory.get_secret(token)
        return stored.session if stored is not None and stored.expires_at > time.time() else None
    layout = app[SHARD]
    owner = layout.secret_owner(token) if layout.sharded else None
    if owner is None or owner == layout.index:
        return None
    try:
        found = await app[SHARD_CLIENT].get_json(owner, f"/internal/client_secrets/{token}")
    except (aiohttp.ClientError, TimeoutError):
        logger.warning("shard %d did not answer a client-secret lookup", owner)
        return None
    return found.get("session") if isinstance(found, dict) else None


async def publish_client_secret(app: web.Application, secret: ClientSecret) -> None:
    """Make a new client secret valid on every node (with a directory): else it is
    forgotten here too and :class:`DirectoryUnavailable` says why."""
    cluster = app.get(CLUSTER)
    if cluster is None:
        return
    try:
        await cluster.directory.put_secret(secret.value, secret.session, secret.expires_at)
    except DirectoryUnavailable:
        app[CLIENT_SECRETS].forget(secret.value)
        raise


async def register_call(app: web.Application, call: Call) -> None:
    """Name this node as a new call's owner before it starts (with a directory): else
    the call is closed and :class:`DirectoryUnavailable` says why."""
    cluster = app.get(CLUSTER)
    if cluster is None:
        return
    try:
        await cluster.register(call.id)
    except DirectoryUnavailable:
        await call.close("setup_failed")
        raise


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
    if app[SETTINGS].redis_url is not None:
        app.cleanup_ctx.append(_cluster_node)


async def _cluster_node(app: web.Application) -> AsyncIterator[None]:
    """This node's place in the directory, heartbeating for the app's lifetime."""
    settings, layout = app[SETTINGS], app[SHARD]
    assert settings.redis_url is not None
    node = ClusterNode(
        CallDirectory(
            settings.redis_url.value,
            timeout_secs=settings.redis_timeout_secs,
            on_answer=app[METRICS].directory_answered,
        ),
        app[REGISTRY],
        url=settings.node_url or _default_node_url(settings),
        shard=layout.index,
        ttl_secs=settings.cluster_call_ttl_secs,
    )
    app[CLUSTER] = node
    node.start()
    try:
        yield
    finally:
        await node.close()


def _default_node_url(settings: Settings) -> str:
    if settings.cluster_port:
        return f"http://{settings.cluster_host or settings.host}:{settings.cluster_port}"
    return f"http://{settings.host}:{settings.port}"
