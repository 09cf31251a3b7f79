"""The sideband WebSocket: ``GET /v1/realtime?call_id=...`` (OpenAI's form, what the
official SDKs' ``realtime.connect(call_id=...)`` opens) and
``GET /v1/realtime/calls/{call_id}/sideband`` (the same, on a path that shard
forwarding routes to the call's owner).

Authenticated with the relay API key (``Authorization: Bearer``; the admin token and
open mode also work). The backend receives every server event of the call as OpenAI
sent it and sends client events as a trusted party: no browser policy applies. The
socket closes with code 1000 and the call's outcome as its reason when the call ends,
whoever ended it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from ..auth import bearer_token, same_secret
from ..call import Call
from ..errors import InvalidRequest, NotFound, Unauthorized
from ..events import error_event, parse_event
from ..sideband import Sideband, SidebandHub, ToolWebhook
from .state import HTTP_CLIENT, REGISTRY, SETTINGS

logger = logging.getLogger(__name__)

SIDEBANDS = web.AppKey("sidebands", SidebandHub)
#: Set when ``RELAY_TOOL_WEBHOOK_URL`` is (``answered`` and ``failed`` count its POSTs).
TOOL_WEBHOOK = web.AppKey("tool_webhook", ToolWebhook)
HEARTBEAT_SECS = 20.0
#: A sideband that does not read for this long while events wait is closed.
SEND_TIMEOUT_SECS = 10.0


def setup_sideband_routes(app: web.Application) -> None:
    hub = SidebandHub()
    app[SIDEBANDS] = hub
    app[REGISTRY].add_observer(hub)
    settings = app[SETTINGS]
    if settings.tool_webhook_url:
        secret = settings.webhook_secret
        app[TOOL_WEBHOOK] = ToolWebhook(
            settings.tool_webhook_url,
            secret=secret.value if secret is not None else None,
            timeout_secs=settings.tool_webhook_timeout_secs,
            find_call=app[REGISTRY].get_call,
            http=lambda: app[HTTP_CLIENT],
        )
        app[REGISTRY].add_observer(app[TOOL_WEBHOOK])
    app.router.add_get("/v1/realtime", sideband)
    app.router.add_get("/v1/realtime/calls/{call_id}/sideband", sideband)


def _authorise(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        if settings.open_mode:
            return
        raise Unauthorized(
            "Missing bearer authentication in header: the sideband needs the relay API key.",
            code="missing_api_key",
        )
    if same_secret(token, settings.relay_api_key) or same_secret(token, settings.admin_token):
        return
    raise Unauthorized("Incorrect API key provided: the sideband needs the relay API key.")


async def sideband(request: web.Request) -> web.StreamResponse:
    _authorise(request)
    call_id = request.match_info.get("call_id") or request.query.get("call_id")
    if not call_id:
        raise InvalidRequest(
            "Missing required parameter: 'call_id'. The relay serves the sideband of its "
            "calls only (GET /v1/realtime?call_id=rtc_...).",
            code="missing_required_parameter",
            param="call_id",
        )
    call = request.app[REGISTRY].get_call(call_id)
    if call is None or call.state != "active":
        raise NotFound(
            "No session found for the provided call_id", code="call_id_not_found", param="call_id"
        )
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECS, max_msg_size=settings.max_event_bytes)
    if not ws.can_prepare(request).ok:
        raise InvalidRequest("This route only speaks WebSocket.", code="websocket_required")
    hub = request.app[SIDEBANDS]
    attached = hub.attach(call_id)
    sender: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        sender = asyncio.ensure_future(_send(ws, attached))
        watcher = asyncio.ensure_future(_watch(call, hub, attached))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                _inject(call, ws, message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_str(
                    error_event("invalid_event", "Binary messages are not supported; send JSON.")
                )
    finally:
        hub.detach(attached)
        if watcher is not None:
            watcher.cancel()
        if sender is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(sender, SEND_TIMEOUT_SECS)
        if ws.prepared:
            await ws.close()
    return ws


def _inject(call: Call, ws: web.WebSocketResponse, text: str) -> None:
    """A client event from the backend: checked for shape only, then sent upstream."""
    event, problem = parse_event(text)
    if event is None:
        _send_soon(ws, error_event(*problem))
        return
    if call.state != "active":
        return
    call.bridge.send_trusted(event, text)


def _send_soon(ws: web.WebSocketResponse, text: str) -> None:
    task = asyncio.ensure_future(ws.send_str(text))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def _watch(call: Call, hub: SidebandHub, attached: Sideband) -> None:
    """However the call ends, the sideband closes (after what is queued)."""
    await call.wait_closed()
    hub.end(attached, call.outcome or "ended")


async def _send(ws: web.WebSocketResponse, attached: Sideband) -> None:
    try:
        while True:
            text = await attached.queue.get()
            if text is None:
                break
            await asyncio.wait_for(ws.send_str(text), SEND_TIMEOUT_SECS)
    except (TimeoutError, ConnectionError, RuntimeError):
        return
    if attached.ended is not None and not ws.closed:
        code = 1008 if attached.fell_behind else 1000
        reason = "sideband fell behind" if attached.fell_behind else f"call ended: {attached.ended}"
        await ws.close(code=code, message=reason.encode())
