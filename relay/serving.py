"""Serving the relay app on its one port (HTTP or HTTPS, and ICE-TCP media; in a fleet,
also on the cluster listener), until SIGTERM/SIGINT; then the relay drains (new calls
refused, running ones may end on their own for up to ``RELAY_DRAIN_TIMEOUT_SECS``; a
second signal cuts that short), the calls left close (on_shutdown) and app resources
are released.

Used by ``realtime-relay serve`` in one process and by each shard of ``--workers N``."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import Settings
from .http.state import ICE, MEDIA_HANDOFF, REGISTRY
from .ice.demux import SharedPortSite

logger = logging.getLogger(__name__)

#: Extra sites a caller adds once the runner is set up (a shard's Unix socket).
ExtraSites = Callable[[web.AppRunner], Awaitable[None]]


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from ``RELAY_TLS_CERT``/``RELAY_TLS_KEY``, if set."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def start_site(
    runner: web.AppRunner, settings: Settings, *, reuse_port: bool = False
) -> SharedPortSite:
    """The listen port's site; the ICE-TCP candidate announces its port from now on.
    A shard hands ICE-TCP connections for its siblings' calls to them."""
    app = runner.app
    ice = app[ICE]
    route = app[MEDIA_HANDOFF].route if MEDIA_HANDOFF in app else None
    site = SharedPortSite(
        runner,
        settings.host,
        settings.port,
        mux=ice.mux,
        ssl_context=tls_context(settings),
        reuse_port=reuse_port,
        route=route,
    )
    await site.start()
    ice.tcp_port = settings.ice_tcp_public_port or site.port
    return site


async def start_cluster_site(
    runner: web.AppRunner, settings: Settings, *, reuse_port: bool = False
) -> web.TCPSite | None:
    """The cluster listener (``RELAY_CLUSTER_PORT``), if set: plain HTTP for the other
    nodes of a fleet only (the shard middleware refuses any request without the cluster
    token there, and serves no other route), so that they need no TLS to a pod address."""
    if not settings.cluster_port:
        return None
    site = web.TCPSite(
        runner,
        settings.cluster_host or settings.host,
        settings.cluster_port,
        reuse_port=reuse_port,
    )
    await site.start()
    logger.info("cluster listener on %s", site.name)
    return site


async def serve(
    app: web.Application,
    settings: Settings,
    *,
    reuse_port: bool = False,
    extra_sites: ExtraSites | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT."""
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout_secs
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = await start_site(runner, settings, reuse_port=reuse_port)
        await start_cluster_site(runner, settings, reuse_port=reuse_port)
        if extra_sites is not None:
            await extra_sites(runner)
        logger.info("serving on %s", site.name)
        await stop.wait()
        await _drain(app, settings, stop)
        logger.info("stopping: closing calls (up to %.0f s)", settings.shutdown_timeout_secs)
    finally:
        await runner.cleanup()


async def _drain(app: web.Application, settings: Settings, stop: asyncio.Event) -> None:
    """Refuse new calls and wait for the running ones to end, up to the drain bound
    (the same drain as ``POST /admin/drain``'s, if one runs); a second signal stops
    waiting. The HTTP server stays up meanwhile: hangups and monitoring still work."""
    stop.clear()
    drain = app[REGISTRY].start_drain(settings.drain_timeout_secs, settings.shutdown_timeout_secs)
    if drain.done():
        return
    logger.info(
        "stopping: draining %d call(s) for up to %.0f s (signal again to end them now)",
        len(app[REGISTRY]),
        settings.drain_timeout_secs,
    )
    again = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([drain, again], return_when=asyncio.FIRST_COMPLETED)
    finally:
        again.cancel()
