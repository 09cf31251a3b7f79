"""The paths a browser's call may take besides WebRTC, and the page that tells which
work from where the browser is.

* ``GET /v1/realtime/ws`` (WebSocket): a whole call on one socket (the caller leg of
  :mod:`relay.caller.websocket`), for networks that pass only HTTPS. Authorised like
  ``POST /v1/realtime/calls``: the client secret as the WebSocket subprotocol
  ``openai-insecure-api-key.<secret>`` next to ``realtime`` (what OpenAI's own browser
  WebSocket does), or ``Authorization: Bearer`` from a server. Never logged.
* ``POST /v1/realtime/calls/{call_id}/resume``: the caller's next leg of a call whose
  connection failed (:mod:`relay.caller.resume`), authorised by the call's resume token
  alone (header ``X-Relay-Resume-Token``; a WebSocket: subprotocol
  ``relay-resume.<token>`` next to ``realtime``): an SDP offer in, ``201`` and the SDP
  answer out; or, opened as a WebSocket, the call continues on that socket. A wrong
  token is a 401 (``invalid_resume_token``), an ended call a 404 (``call_not_found``).
* ``GET /check`` (the page) and ``GET /api/check`` (the relay's ICE and TLS facts;
  opened as a WebSocket, an echo the page times its round trips on), and
  ``POST /api/check/webrtc`` answers an SDP offer with a data channel that echoes (the
  page keeps only the UDP, or only the TCP, candidates of the answer to test each).
  Neither needs a key: they reach no upstream, are few at a time and end on their own."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from .. import aiortc_patches
from ..auth import bearer_token
from ..call import Call
from ..caller.leg import CallerLeg, CallRequest
from ..caller.resume import RESUME_HEADER, RESUME_PROTOCOL
from ..caller.websocket import MAX_AUDIO_BYTES, WebSocketCallerLeg
from ..config import Settings
from ..errors import InvalidRequest, NotFound, Overloaded, RelayError, Unauthorized
from ..events import error_event
from ..ops.components import DEFAULT_WEB_ROOT
from ..policy import DENIED, PolicyDenied, split_policy
from ..sdp import validate_offer
from ..upstream.session_config import complete_session
from .files import file_response
from .realtime_routes import (
    _printable,
    _read_offer,
    admit_call,
    authorise_call,
)
from .shard_routes import register_call
from .state import ICE, REGISTRY, SETTINGS

logger = logging.getLogger(__name__)

SOCKET_PATH = "/v1/realtime/ws"
RESUME_PATH = "/v1/realtime/calls/{call_id}/resume"
KEY_PROTOCOL = "openai-insecure-api-key."
#: The echo socket of the check page: a few round trips, then it closes.
ECHO_MAX_MESSAGES = 50
ECHO_MAX_BYTES = 1024
ECHO_SECS = 15.0
#: Check peer connections alive at once at most (then 503), and how long each lives.
MAX_CHECKS = 8
CHECK_PC_SECS = 15.0
#: The check peer connections alive (closed at shutdown if their time has not come).
CHECK_PCS = web.AppKey("check_pcs", set[RTCPeerConnection])


def setup_media_routes(app: web.Application) -> None:
    app[CHECK_PCS] = set()
    app.on_shutdown.append(_close_checks)
    app.router.add_get(SOCKET_PATH, realtime_socket)
    app.router.add_post(RESUME_PATH, resume_call)
    app.router.add_get(RESUME_PATH, resume_call)
    app.router.add_get("/api/check", check_facts)
    app.router.add_post("/api/check/webrtc", check_webrtc)
    app.router.add_get("/check", check_page)


def _socket_token(request: web.Request) -> str | None:
    """The client secret of a WebSocket request: its subprotocol, or a bearer header."""
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(KEY_PROTOCOL) and len(protocol) > len(KEY_PROTOCOL):
            return protocol[len(KEY_PROTOCOL) :]
    return bearer_token(request.headers.get("Authorization"))


def _with_key(request: web.Request) -> web.Request:
    """``request`` as ``POST /v1/realtime/calls`` would carry the socket's key."""
    token = _socket_token(request)
    if token is None and not request.app[SETTINGS].open_mode:
        raise Unauthorized(
            "Missing key: send the client secret as the WebSocket subprotocol "
            f"'{KEY_PROTOCOL}<client secret>' (with 'realtime').",
            code="missing_api_key",
        )
    headers = request.headers.copy()
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return request.clone(headers=headers)


async def realtime_socket(request: web.Request) -> web.StreamResponse:
    """A call over one WebSocket: refused with an HTTP error before the upgrade
    (unauthorised, overloaded), told with an ``error`` event after it."""
    app = request.app
    ws = _call_socket(app[SETTINGS])
    if not ws.can_prepare(request).ok:
        raise InvalidRequest(
            f"{SOCKET_PATH} is a WebSocket: open it with an Upgrade request.",
            code="websocket_required",
        )
    keyed = _with_key(request)
    caller = await authorise_call(keyed)
    # As POST /v1/realtime/calls: the secret's policy, a model override it allows.
    session, policy = split_policy(caller.session)
    model = request.query.get("model")
    if model:
        if policy is not None:
            try:
                policy.check_session({"model": model}, "session")
            except PolicyDenied as denied:
                raise InvalidRequest(denied.message, code=DENIED, param="model") from None
        session = {**session, "model": model}
    session = complete_session(session, app[SETTINGS].openai_model)
    call = admit_call(keyed, caller, policy)  # as POST /v1/realtime/calls does
    await register_call(request.app, call)  # with a call directory: this node owns it
    try:
        await ws.prepare(request)
    except BaseException:
        await call.close("setup_failed", notify=False)
        raise

    legs: list[WebSocketCallerLeg] = []

    def leg(on_ended: Callable[[str], None]) -> CallerLeg:
        legs.append(WebSocketCallerLeg(ws, call_id=call.id, on_ended=on_ended))
        return legs[-1]

    call_request = CallRequest(
        offer_sdp="",
        session=session,
        user_agent=_printable(request.headers.get("User-Agent", "")[:300]),
        record=request.query.get("record", "") in ("1", "true"),
        caller=leg,
        sends_audio=True,
    )
    try:
        await call.start(call_request)
    except RelayError:
        return ws  # the caller was sent the error event; the call closed the socket
    legs[0].announce(call.grace.token)
    await legs[0].wait_closed()  # the call's end, or the leg lost and replaced
    return ws


def _call_socket(settings: Settings) -> web.WebSocketResponse:
    return web.WebSocketResponse(
        protocols=("realtime",),
        heartbeat=settings.media_timeout_secs,
        max_msg_size=max(settings.max_event_bytes + 64 * 1024, MAX_AUDIO_BYTES),
    )


def _resume_token(request: web.Request) -> str | None:
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(RESUME_PROTOCOL) and len(protocol) > len(RESUME_PROTOCOL):
            return protocol[len(RESUME_PROTOCOL) :]
    return request.headers.get(RESUME_HEADER)


async def resume_call(request: web.Request) -> web.StreamResponse:
    """A new caller leg for a call whose caller was lost (see the module's docstring)."""
    ws = _call_socket(request.app[SETTINGS])
    socket = ws.can_prepare(request).ok
    if request.method == "GET" and not socket:
        raise InvalidRequest(
            "GET resumes over a WebSocket: open it with an Upgrade request, or POST an offer.",
            code="websocket_required",
        )
    call = request.app[REGISTRY].get_call(request.match_info["call_id"])
    if call is None:
        raise NotFound("No call found with that id.", code="call_not_found", param="call_id")
    token = _resume_token(request)
    if token is None or not call.grace.matches(token):
        raise Unauthorized(
            "Missing or wrong resume token: send the X-Relay-Resume-Token the call was "
            "created with.",
            code="invalid_resume_token",
        )
    if socket:
        return await _resume_socket(request, ws, call)
    offer, _ = await _read_offer(request, request.app[SETTINGS].max_sdp_bytes)
    answer = await call.resume(offer)
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call.id}"},
    )


async def _resume_socket(
    request: web.Request, ws: web.WebSocketResponse, call: Call
) -> web.WebSocketResponse:
    await ws.prepare(request)
    legs: list[WebSocketCallerLeg] = []

    def leg(on_ended: Callable[[str], None]) -> CallerLeg:
        legs.append(WebSocketCallerLeg(ws, call_id=call.id, on_ended=on_ended))
        legs[-1].announce()  # first on the socket, before the events kept for it
        return legs[-1]

    try:
        await call.resume("", leg)
    except RelayError as exc:
        await ws.send_str(error_event(exc.code or "call_not_found", exc.message))
        await ws.close()
        return ws
    await legs[0].wait_closed()
    return ws


async def check_facts(request: web.Request) -> web.StreamResponse:
    """What a network administrator needs to let a call through to this relay; opened
    as a WebSocket, an echo the check page times its round trips on."""
    if web.WebSocketResponse().can_prepare(request).ok:
        return await check_echo(request)
    settings = request.app[SETTINGS]
    ice = request.app[ICE]
    facts: dict[str, Any] = {
        "server_time": time.time(),
        "tls": bool(settings.tls_cert),
        "websocket_path": SOCKET_PATH,
        "ice": {
            "udp": True,
            "udp_ports": list(ice.udp_ports) if ice.udp_ports else None,
            "tcp": ice.mux is not None,
            "tcp_port": ice.tcp_port if ice.mux is not None else None,
            "announced_addresses": list(ice.public_addresses),
        },
    }
    return web.json_response(facts, headers={"Cache-Control": "no-store"})


async def check_echo(request: web.Request) -> web.StreamResponse:
    """Echoes a few small text messages (the check page's round trips), then closes."""
    ws = web.WebSocketResponse(max_msg_size=ECHO_MAX_BYTES, receive_timeout=ECHO_SECS)
    await ws.prepare(request)
    started, count = time.monotonic(), 0
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT or count >= ECHO_MAX_MESSAGES:
                break
            if time.monotonic() - started > ECHO_SECS:
                break
            count += 1
            await ws.send_str(message.data)
    except TimeoutError:
        pass
    await ws.close()
    return ws


async def check_webrtc(request: web.Request) -> web.Response:
    """An SDP offer (a data channel only) -> an answer whose channel echoes text."""
    settings = request.app[SETTINGS]
    checks = request.app[CHECK_PCS]
    if len(checks) >= MAX_CHECKS:
        raise Overloaded("Too many connectivity checks at once; try again shortly.")
    offer = validate_offer(
        (await request.content.read(settings.max_sdp_bytes + 1)).decode("utf-8", "replace"),
        max_bytes=settings.max_sdp_bytes,
    )
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    checks.add(pc)
    closing = asyncio.get_running_loop().call_later(CHECK_PC_SECS, _close_check, checks, pc)

    @pc.on("datachannel")
    def echo(channel: Any) -> None:
        channel.on("message", lambda message: channel.send(message))

    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        aiortc_patches.adopt(pc, request.app[ICE].caller_plan())
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        closing.cancel()
        _close_check(checks, pc)
        raise InvalidRequest(f"The check's offer could not be answered: {exc}") from None
    return web.Response(text=pc.localDescription.sdp, content_type="application/sdp")


def _close_check(checks: set[RTCPeerConnection], pc: RTCPeerConnection) -> None:
    if pc in checks:
        checks.discard(pc)
        task = asyncio.ensure_future(pc.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


async def _close_checks(app: web.Application) -> None:
    checks = app[CHECK_PCS]
    pcs = list(checks)
    checks.clear()
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)


async def check_page(request: web.Request) -> web.StreamResponse:
    """The page (one of the browser client's files, also under ``/web/``)."""
    page = Path(request.app[SETTINGS].web_root or DEFAULT_WEB_ROOT) / "check.html"
    return file_response(request, page, {"Cache-Control": "no-cache"})
