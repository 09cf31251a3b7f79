"""Operator routes: live calls, event and listen-in WebSockets, recordings, metrics,
and the monitor page.

Every ``/api/calls*`` and ``/api/recordings*`` route needs the admin token, as
``Authorization: Bearer <token>`` or, for browsers' WebSockets (which cannot set
headers), as the subprotocol ``bearer.<token>`` next to ``relay-monitor``. Failures use
OpenAI's error envelope. ``/metrics`` needs the metrics token only if one is set.

:class:`Ops` bundles the operator components; :func:`setup_ops_routes` registers them
as observers, adds the routes, and gives the app their lifetime (started with the app,
subscribers ended at shutdown, everything closed at cleanup).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

from aiohttp import WSMsgType, web

from ..auth import bearer_token, same_secret
from ..config import Secret
from ..ops.components import Ops
from ..ops.encoding import to_json
from ..ops.monitor import (
    LISTEN_FORMATS,
    LISTEN_TRACKS,
    EventSubscription,
    ListenSubscription,
    ListenTrack,
    MonitorHub,
    TwilioStream,
)
from .errors import SLOW_CLIENTS, error_response
from .files import file_response
from .state import REGISTRY

log = logging.getLogger(__name__)

T = TypeVar("T")

WS_PROTOCOL: Final = "relay-monitor"
BEARER_PROTOCOL_PREFIX: Final = "bearer."
WS_HEARTBEAT_SECS: Final = 20.0
#: The operator console's files (``web/monitor*``), served under ``/monitor/``.
MONITOR_FILES: Final = {
    "monitor.js": "text/javascript",
    "monitor-common.js": "text/javascript",
    "monitor-detail.js": "text/javascript",
    "monitor-history.js": "text/javascript",
    "monitor-listen.js": "text/javascript",
    "monitor.css": "text/css",
}


OPS: Final = web.AppKey("ops", Ops)


class _NoClientSubprotocols(logging.Filter):
    """aiohttp logs the subprotocols a WebSocket client offered when none of them is the
    server's (``Client protocols [...] don't overlap``): a monitor that offers only
    ``bearer.<token>`` would write the admin token to the log. Whatever a client
    offered stays out of the log; only how many it offered is said."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and "Client protocols" in record.msg):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        remote = args[0] if args else None
        offered = args[1] if len(args) > 1 and isinstance(args[1], list | tuple) else ()
        record.msg = "%s: none of the %d WebSocket subprotocol(s) offered is one of %r"
        record.args = (remote, len(offered), (WS_PROTOCOL,))
        return True


#: aiohttp's handshake logger (``aiohttp.web_ws`` logs through it).
logging.getLogger("aiohttp.websocket").addFilter(_NoClientSubprotocols())


def setup_ops_routes(app: web.Application, ops: Ops) -> None:
    """Register ``ops``' observers, routes and lifetime on ``app``, and what the
    registry's admission control and the metrics read from elsewhere (the event loop's
    load, the slow-client count).

    Call it after the handler that closes calls at shutdown is registered, so calls
    end (and are recorded and announced) before the subscribers and writers close."""
    app[OPS] = ops
    ops.register_observers()
    registry = app.get(REGISTRY)
    if registry is not None:  # the relay's app (tests also mount these routes alone)
        registry.limit_loop_load(ops.loop_lag.sustained_load, ops.max_loop_load)
    # Read at each scrape, from the app: whoever bounds slow clients last (tests
    # re-bound them) holds the count.
    ops.metrics.slow_clients_refused_total.read_from(
        lambda: guard.refused if (guard := app.get(SLOW_CLIENTS)) is not None else 0
    )
    router = app.router
    router.add_get("/metrics", metrics_handler)
    router.add_get("/api/calls", list_calls)
    router.add_get("/api/calls/{call_id}", get_call)
    router.add_get("/api/calls/{call_id}/events", call_events)
    router.add_get("/api/calls/{call_id}/listen", call_listen)
    from .history_routes import add_history_routes  # it uses this module's helpers

    add_history_routes(router)
    router.add_get("/monitor", monitor_redirect)
    router.add_get("/monitor/", monitor_page)
    router.add_get("/monitor/{name}", monitor_asset)
    app.cleanup_ctx.append(_ops_lifetime)
    app.on_shutdown.append(_end_subscriptions)


async def _ops_lifetime(app: web.Application) -> AsyncIterator[None]:
    ops = app[OPS]
    await ops.start()
    try:
        yield
    finally:
        await ops.close()


async def _end_subscriptions(app: web.Application) -> None:
    # WebSocket handlers return once their subscription ends; aiohttp would otherwise
    # wait for them (or cancel them) at shutdown.
    app[OPS].hub.close()


# -- auth and responses -------------------------------------------------------------------


def _offered_token(request: web.Request) -> str | None:
    token = bearer_token(request.headers.get("Authorization"))
    if token is not None:
        return token
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(BEARER_PROTOCOL_PREFIX):
            return protocol[len(BEARER_PROTOCOL_PREFIX) :]
    return None


def _check_token(request: web.Request, expected: Secret | None) -> web.Response | None:
    """``None`` if the request carries ``expected``; otherwise the 401 to send."""
    token = _offered_token(request)
    if token is not None and same_secret(token, expected):
        return None
    message = (
        "Missing bearer authentication in header." if token is None else "Incorrect token provided."
    )
    return error_response(
        401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
    )


def _check_admin(request: web.Request) -> web.Response | None:
    ops = request.app[OPS]
    if ops.admin_token is None:
        return error_response(
            403,
            "The operator API is disabled: set RELAY_ADMIN_TOKEN to enable it.",
            code="admin_api_disabled",
        )
    return _check_token(request, ops.admin_token)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _admin(handler: Handler) -> Handler:
    """Wrap ``handler`` so that it runs only with the admin token."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        refusal = _check_admin(request)
        return refusal if refusal is not None else await handler(request)

    guarded.__doc__ = handler.__doc__
    return guarded


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=to_json(data), status=status, content_type="application/json")


def _not_found(message: str, param: str = "call_id") -> web.Response:
    return error_response(404, message, code="not_found", param=param)


def _choice(request: web.Request, name: str, choices: tuple[T, ...], default: T) -> T | None:
    value = request.query.get(name, str(default))
    for choice in choices:
        if value == choice:
            return choice
    return None


# -- metrics --------------------------------------------------------------------------------


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text exposition; behind the metrics token if one is set."""
    ops = request.app[OPS]
    if ops.metrics_token is not None:
        refusal = _check_token(request, ops.metrics_token)
        if refusal is not None:
            return refusal
    # Rendering takes a few ms; a thread keeps it from holding the loop in one piece.
    body, content_type = await asyncio.to_thread(ops.metrics.render)
    return web.Response(body=body, headers={"Content-Type": content_type})


# -- live calls -----------------------------------------------------------------------------


@_admin
async def list_calls(request: web.Request) -> web.Response:
    """Live calls of this process: state, legs, stats, transcripts so far."""
    calls = request.app[OPS].directory.list()
    return _json({"object": "list", "data": [call.snapshot() for call in calls]})


@_admin
async def get_call(request: web.Request) -> web.Response:
    call = request.app[OPS].directory.get(request.match_info["call_id"])
    if call is None:
        return _not_found("No live call with that id.")
    return _json(call.snapshot())


@_admin
async def call_events(request: web.Request) -> web.StreamResponse:
    """WebSocket: the call's snapshot, then every event, level and the end, as JSON."""
    refusal = _check_upgrade(request)
    if refusal is not None:
        return refusal
    hub = request.app[OPS].hub
    sub = hub.subscribe_events(request.match_info["call_id"])
    if sub is None:
        return _not_found("No live call with that id.")
    return await _stream(request, hub, sub, _send_events)


@_admin
async def call_listen(request: web.Request) -> web.StreamResponse:
    """WebSocket: listen-in audio (``track`` caller|agent|both, ``format`` pcm16|twilio)."""
    refusal = _check_upgrade(request)
    if refusal is not None:
        return refusal
    track = _choice(request, "track", LISTEN_TRACKS, "both")
    if track is None:
        return error_response(
            400, "track must be caller, agent or both.", code="invalid_value", param="track"
        )
    fmt = _choice(request, "format", LISTEN_FORMATS, "pcm16")
    if fmt is None:
        return error_response(
            400, "format must be pcm16 or twilio.", code="invalid_value", param="format"
        )
    hub = request.app[OPS].hub
    sub = hub.subscribe_listen(request.match_info["call_id"], track, fmt)
    if sub is None:
        return _not_found("No live call with that id.")
    sender = _send_twilio if fmt == "twilio" else _send_pcm16
    return await _stream(request, hub, sub, sender)


Sub = TypeVar("Sub", EventSubscription, ListenSubscription)


def _new_ws() -> web.WebSocketResponse:
    return web.WebSocketResponse(protocols=(WS_PROTOCOL,), heartbeat=WS_HEARTBEAT_SECS)


def _check_upgrade(request: web.Request) -> web.Response | None:
    """``None`` if ``request`` is a WebSocket upgrade; otherwise the 400 to send."""
    if _new_ws().can_prepare(request).ok:
        return None
    return error_response(400, "This route only speaks WebSocket.", code="websocket_required")


async def _stream(
    request: web.Request,
    hub: MonitorHub,
    sub: Sub,
    send: Callable[[web.WebSocketResponse, Sub], Awaitable[None]],
) -> web.WebSocketResponse:
    """Run one subscriber's WebSocket: ``send`` drains ``sub`` into it while a reader
    notices the client leaving. Either end stops both; the subscription is always
    returned to the hub."""
    ws = _new_ws()
    reader: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        reader = asyncio.create_task(_read_until_closed(ws))
        reader.add_done_callback(lambda _task: hub.unsubscribe(sub))
        with contextlib.suppress(ConnectionError):
            await send(ws, sub)
    finally:
        hub.unsubscribe(sub)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if ws.prepared:
            await ws.close()
    return ws


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    """Consume (and ignore) what the client sends, until it goes away."""
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            return


async def _send_events(ws: web.WebSocketResponse, sub: EventSubscription) -> None:
    while (message := await sub.get()) is not None:
        dropped = sub.take_drops()
        if dropped:
            await ws.send_str(json.dumps({"type": "relay.dropped", "count": dropped}))
        await ws.send_str(to_json(message))


async def _send_pcm16(ws: web.WebSocketResponse, sub: ListenSubscription) -> None:
    while (item := await sub.get()) is not None:
        await ws.send_bytes(item[1].astype("<i2").tobytes())


async def _send_twilio(ws: web.WebSocketResponse, sub: ListenSubscription) -> None:
    tracks = ["inbound", "outbound"] if sub.track == "both" else [_twilio_track(sub.track)]
    stream = TwilioStream(sub.call_id, tracks)
    await ws.send_json(stream.connected())
    await ws.send_json(stream.start())
    while (item := await sub.get()) is not None:
        speaker, pcm, wallclock = item
        await ws.send_json(stream.media(speaker, pcm, wallclock))
    await ws.send_json(stream.stop())


def _twilio_track(track: ListenTrack) -> str:
    return "outbound" if track == "agent" else "inbound"


# -- the monitor page -------------------------------------------------------------------------


async def monitor_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/monitor/")


async def monitor_page(request: web.Request) -> web.StreamResponse:
    return _web_file(request, "monitor.html", "text/html")


async def monitor_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = MONITOR_FILES.get(name)
    if content_type is None:
        return _not_found(f"No monitor file {name!r}.", param="name")
    return _web_file(request, name, content_type)


def _web_file(request: web.Request, name: str, content_type: str) -> web.StreamResponse:
    path = request.app[OPS].web_root / name
    if not path.is_file():
        return _not_found(f"{name} is not installed.", param="name")
    return file_response(request, path, {"Content-Type": content_type, "Cache-Control": "no-cache"})
