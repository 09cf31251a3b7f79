"""The relay's aiohttp application: routes, middlewares and app-lifetime resources."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from .. import aiortc_patches
from ..auth import ClientSecretStore
from ..config import Secret, Settings
from ..ops.components import DEFAULT_WEB_ROOT, build_ops
from ..registry import CallRegistry
from ..shards import SINGLE, ShardClient, ShardLayout
from ..upstream.openai import OpenAIConnector
from .cors import cors_middleware
from .errors import error_middleware
from .ops_routes import setup_ops_routes
from .realtime_routes import setup_realtime_routes
from .shard_routes import setup_shard_routes, shard_middleware
from .state import (
    CLIENT_SECRETS,
    CONNECTOR,
    EMULATOR,
    HTTP_CLIENT,
    METRICS,
    REGISTRY,
    SETTINGS,
    SHARD,
    SHARD_CLIENT,
)

logger = logging.getLogger(__name__)



def create_app(
    settings: Settings, *, web_root: Path | None = None, shard: ShardLayout = SINGLE
) -> web.Application:
    """The relay app. Without an OpenAI key it runs the built-in emulator in-process.

    ``shard`` places this process among sibling workers (``serve --workers N``)."""
    aiortc_patches.install()
    aiortc_patches.restrict_host_addresses(settings.ice_addresses)
    # Outermost first: shard routing sees every answer, errors included.
    middlewares = [shard_middleware, error_middleware]
    if settings.cors_origins:
        middlewares.insert(0, cors_middleware(settings.cors_origins))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_sdp_bytes * 2)
    app[SETTINGS] = settings
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
    app.on_shutdown.append(_close_calls)
    setup_realtime_routes(app)
    setup_shard_routes(app)
    _setup_ops(app, settings)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
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
    app[REGISTRY].loop_lag_secs = ops.loop_lag.sustained_lag_secs
    # After _close_calls (on_shutdown): calls end, and are recorded and announced,
    # before subscribers and writers close.
    setup_ops_routes(app, ops)


async def _shard_client(app: web.Application) -> AsyncIterator[None]:
    client = ShardClient(app[SHARD])
    app[SHARD_CLIENT] = client
    try:
        yield
    finally:
        await client.close()


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    """Point the upstream connector at OpenAI, or at an in-process emulator."""
    settings = app[SETTINGS]
    if settings.openai_api_key is not None:
        base_url, key = settings.openai_base_url, settings.openai_api_key
        runner = None
    else:
        runner, base_url, key = await _start_embedded_emulator(settings)
        app[EMULATOR] = runner.app
        logger.info("no OPENAI_API_KEY: using the built-in OpenAI emulator at %s", base_url)
    app[CONNECTOR] = OpenAIConnector(
        app[HTTP_CLIENT],
        base_url=base_url,
        api_key=key,
        dialect=settings.openai_dialect,
        timeout_secs=settings.upstream_timeout_secs,
    )
    try:
        yield
    finally:
        if runner is not None:
            await runner.cleanup()


async def _start_embedded_emulator(settings: Settings) -> tuple[web.AppRunner, str, Secret]:
    from dataclasses import replace

    from ..emulator.app import create_emulator_app

    key = Secret("sk-embedded-" + secrets.token_hex(16))
    emulator_settings = replace(
        settings.emulator,
        host="127.0.0.1",
        port=0,
        api_keys=(key,),
        ice_addresses=settings.ice_addresses,
    )
    runner = web.AppRunner(create_emulator_app(emulator_settings), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1", key


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
        if not index.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    app.router.add_static("/web/", root, follow_symlinks=False)
