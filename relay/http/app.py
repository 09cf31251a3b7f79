"""The relay's aiohttp application: routes, middlewares and app-lifetime resources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from ..auth import ClientSecretStore
from ..config import Secret, Settings
from ..ice.gather import IceSetup
from ..ice.handoff import MediaHandoff
from ..ice.tcp import IceTcpMux
from ..ops.components import DEFAULT_WEB_ROOT, build_ops
from ..registry import CallRegistry
from ..shards import SINGLE, ShardClient, ShardLayout
from ..upstream.openai import OpenAIConnector
from .conversation_routes import setup_conversation_routes
from .cors import cors_middleware
from .drain_routes import setup_drain_routes
from .errors import bound_slow_clients, error_middleware
from .files import file_response, file_under
from .media_routes import setup_media_routes
from .openapi import setup_openapi_route
from .ops_routes import setup_ops_routes
from .realtime_routes import setup_realtime_routes
from .shard_routes import setup_shard_routes, shard_middleware
from .sideband_routes import setup_sideband_routes
from .state import (
    CLIENT_SECRETS,
    CONNECTOR,
    HTTP_CLIENT,
    ICE,
    MEDIA_HANDOFF,
    METRICS,
    REGISTRY,
    SETTINGS,
    SHARD,
    SHARD_CLIENT,
)
from .turn_routes import setup_turn_routes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """Where the relay's OpenAI leg goes: OpenAI, or an emulator."""

    base_url: str
    api_key: Secret


UPSTREAM = web.AppKey("upstream", Upstream)


def create_app(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    web_root: Path | None = None,
    shard: ShardLayout = SINGLE,
) -> web.Application:
    """The relay app, talking to ``upstream`` (default: OpenAI with the settings' key).

    ``shard`` places this process among sibling workers (``serve --workers N``). The
    built-in emulator is started by the entry points (:mod:`relay.embedded`)."""
    if upstream is None:
        if settings.openai_api_key is None:
            raise ValueError("no OpenAI key: use relay.embedded.build_app for the emulator")
        upstream = Upstream(settings.openai_base_url, settings.openai_api_key)
    # Outermost first: shard routing sees every answer, errors included.
    middlewares = [shard_middleware, error_middleware]
    if settings.cors_origins:
        middlewares.insert(0, cors_middleware(settings.cors_origins))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_sdp_bytes * 2)
    bound_slow_clients(app)
    app[SETTINGS] = settings
    app[ICE] = IceSetup(
        host_addresses=settings.ice_addresses,
        public_addresses=settings.ice_public_addresses,
        udp_ports=settings.udp_port_range,
        mux=IceTcpMux() if settings.ice_tcp else None,
        ufrag_prefix=shard.ufrag_prefix,
    )
    app[UPSTREAM] = upstream
    app[REGISTRY] = CallRegistry(
        settings.max_calls, max_loop_lag_secs=settings.max_loop_lag_ms / 1000
    )
    app[SHARD] = shard
    app[CLIENT_SECRETS] = ClientSecretStore(
        new_value=shard.new_secret_value if shard.sharded else None
    )
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_upstream)
    app.cleanup_ctx.append(_shard_client)
    app.cleanup_ctx.append(_calls)
    if shard.sharded and settings.ice_tcp:
        app.cleanup_ctx.append(_media_handoff)
    app.on_shutdown.append(_close_calls)
    setup_realtime_routes(app)
    setup_sideband_routes(app)
    setup_media_routes(app)
    setup_turn_routes(app)
    setup_shard_routes(app)
    _setup_ops(app, settings)
    setup_conversation_routes(app)
    setup_drain_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    setup_openapi_route(app)
    _setup_web(app, web_root or Path(settings.web_root or DEFAULT_WEB_ROOT))
    return app


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP_CLIENT] = session
        yield


def _setup_ops(app: web.Application, settings: Settings) -> None:
    """Metrics, recording, monitoring and webhooks, as observers of every call."""
    ops = build_ops(settings, app[REGISTRY])
    app[METRICS] = ops.metrics
    app[REGISTRY].taps.on_error = ops.metrics.observer_error
    app[REGISTRY].loop_lag_secs = ops.loop_lag.sustained_lag_secs
    # After _close_calls (on_shutdown): calls end, and are recorded and announced,
    # before subscribers and writers close.
    setup_ops_routes(app, ops)


async def _shard_client(app: web.Application) -> AsyncIterator[None]:
    token = app[SETTINGS].cluster_token
    client = ShardClient(app[SHARD], node_token=token.value if token is not None else None)
    app[SHARD_CLIENT] = client
    try:
        yield
    finally:
        await client.close()


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    """The connector to OpenAI (or to whatever ``create_app`` was told to use)."""
    settings, upstream = app[SETTINGS], app[UPSTREAM]
    app[CONNECTOR] = OpenAIConnector(
        app[HTTP_CLIENT],
        base_url=upstream.base_url,
        api_key=upstream.api_key,
        dialect=settings.openai_dialect,
        timeout_secs=settings.upstream_timeout_secs,
    )
    yield


async def _media_handoff(app: web.Application) -> AsyncIterator[None]:
    """ICE-TCP connections another shard accepted for this shard's calls, and back."""
    layout, mux = app[SHARD], app[ICE].mux
    assert mux is not None
    handoff = MediaHandoff(layout.index, layout.media_socket_path, layout.ufrag_owner, mux)
    handoff.start()
    app[MEDIA_HANDOFF] = handoff
    try:
        yield
    finally:
        await handoff.close()


async def _calls(app: web.Application) -> AsyncIterator[None]:
    """The registry's ticker runs for the app's lifetime (calls close at shutdown)."""
    registry = app[REGISTRY]
    registry.start()
    try:
        yield
    finally:
        await registry.stop()


async def _close_calls(app: web.Application) -> None:
    settings = app[SETTINGS]
    await app[REGISTRY].close_all("shutdown", settings.shutdown_timeout_secs)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    if registry.draining:
        return web.json_response({"status": "draining", "calls": len(registry)}, status=503)
    if registry.full:
        return web.json_response({"status": "full", "calls": len(registry)}, status=503)
    if registry.lagging:
        return web.json_response({"status": "overloaded", "calls": len(registry)}, status=503)
    return web.json_response({"status": "ready", "calls": len(registry)})


def _setup_web(app: web.Application, root: Path) -> None:
    """The demo page at ``/`` and the browser client's files under ``/web/``."""
    if not root.is_dir():
        logger.warning("web client folder %s not found: / is not served", root)
        return
    index = root / "index.html"

    async def page(request: web.Request) -> web.FileResponse:
        # The page says when it talks to the built-in emulator rather than OpenAI.
        upstream = "emulator" if request.app[SETTINGS].embedded_emulator else "openai"
        headers = {"Cache-Control": "no-cache", "X-Relay-Upstream": upstream}
        return file_response(request, index, headers)

    async def web_file(request: web.Request) -> web.FileResponse:
        path = file_under(root, request.match_info["path"])
        return file_response(request, path, {"Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    app.router.add_get("/web/{path:.+}", web_file)
