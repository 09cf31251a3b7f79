"""The emulator's HTTP surface (OpenAI's Realtime endpoints) and its app state.

GA dialect:
    ``POST /v1/realtime/client_secrets``  standard key -> ``{value: "ek_...", expires_at, session}``
    ``POST /v1/realtime/calls``           ``application/sdp`` (ek or standard key) or
                                          ``multipart/form-data`` (``sdp`` + ``session``)
                                          -> 201 answer + ``Location``
    ``POST /v1/realtime/calls/{id}/hangup``
Beta dialect:
    ``POST /v1/realtime/sessions``         standard key -> flat session + ``client_secret``
    ``POST /v1/realtime?model=...``        SDP -> 201 answer
``GET /healthz``.

App state (typed ``web.AppKey``s): ``SETTINGS``, ``KEYS`` (ephemeral keys) and
``SESSIONS`` (a :class:`~relay.emulator.registry.CallRegistry`, the test hook: each
call's ``received`` audio, ``client_events`` and ``server_events``).

Every error uses OpenAI's envelope; nothing malformed leaves a peer connection open.
``create_emulator_app`` changes no process-wide state, and needs none changed: its ICE
settings apply to its own peer connections only (:mod:`.ice`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from . import ids
from .appstate import (
    KEYS,
    SESSIONS,
    SETTINGS,
    bearer,
    check_key_dialect,
    ga_config,
    is_standard_key,
    require_standard_key,
)
from .errors import ApiError, invalid_api_key, invalid_offer
from .keys import BETA_DEFAULT_TTL_SECS, GA_DEFAULT_TTL_SECS, EphemeralKey, KeyStore
from .registry import CallRegistry
from .schema import invalid_type, invalid_value, unknown_parameter
from .sdp import check_offer
from .session import EmulatedCall
from .session_config import SessionConfig, validate_beta_session, validate_ga_session
from .session_schema import BETA_MODELS, GA_CLIENT_SECRET_REQUEST
from .settings import BETA_MODEL, GA_MODEL, EmulatorSettings
from .websocket import realtime_websocket

logger = logging.getLogger(__name__)


#: Largest request body (JSON sessions with tools and long instructions fit easily).
MAX_BODY_BYTES = 1024 * 1024
MAX_SDP_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: aiohttp's own HTTP errors in OpenAI's words: (message, code); ``{where}`` is the
#: request's method and path.
_HTTP_ERRORS: dict[int, tuple[str, str | None]] = {
    404: ("Invalid URL ({where})", None),
    405: ("Method not allowed ({where})", None),
    413: ("Request body too large.", "request_too_large"),
}
_SERVER_ERROR = ApiError(
    "The server had an error while processing your request.",
    None,
    type_="server_error",
    status=500,
)


def _api_error_of(request: web.Request, exc: web.HTTPException) -> ApiError:
    known = _HTTP_ERRORS.get(exc.status)
    if known is None:
        return ApiError(exc.reason or "Bad request", None, status=exc.status)
    message, code = known
    return ApiError(
        message.format(where=f"{request.method} {request.path}"), code, status=exc.status
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure in OpenAI's envelope: 404/405/413 from aiohttp included."""
    error: ApiError
    try:
        return await handler(request)
    except ApiError as api_error:
        error = api_error
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _api_error_of(request, exc)
    except Exception:
        logger.exception("emulator: %s %s failed", request.method, request.path)
        error = _SERVER_ERROR
    return web.json_response(error.body(), status=error.status)


#: On every response to a browser: OpenAI's API lets pages on any origin call it (the
#: ephemeral-key flow) and read the ``Location`` of a new call.
_CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Location"}


def _preflight_response(request: web.Request) -> web.Response:
    headers = {"Access-Control-Allow-Methods": "GET, POST, OPTIONS"}
    asked_for = request.headers.get("Access-Control-Request-Headers")
    if asked_for:
        headers["Access-Control-Allow-Headers"] = asked_for
    headers["Access-Control-Max-Age"] = "86400"
    return web.Response(status=204, headers=headers)


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if "Origin" not in request.headers:
        return await handler(request)
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    response = _preflight_response(request) if preflight else await handler(request)
    response.headers.update(_CORS_HEADERS)
    return response


# --- bodies ---


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
            "invalid_json",
        ) from exc


def _sdp_text(raw: bytes) -> str:
    if len(raw) > MAX_SDP_BYTES:
        raise ApiError("SDP offer too large.", "request_too_large", "sdp", status=413)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_offer() from exc


async def _offer_and_session(request: web.Request) -> tuple[str, Any | None]:
    """The offer SDP and the optional ``session`` JSON, from either request form."""
    content_type = request.content_type
    if content_type == "multipart/form-data":
        sdp: str | None = None
        session: Any | None = None
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise ApiError(
                        "Nested multipart bodies are not supported.", "invalid_multipart"
                    )
                data = await part.read()
                if part.name == "sdp":
                    sdp = _sdp_text(bytes(data))
                elif part.name == "session":
                    try:
                        session = json.loads(bytes(data))
                    except ValueError as exc:
                        raise ApiError(
                            "The 'session' part is not valid JSON.", "invalid_json", "session"
                        ) from exc
                else:
                    raise unknown_parameter(part.name or "")
        except (ValueError, AssertionError) as exc:  # aiohttp's parser on garbage
            raise ApiError(
                f"Could not parse the multipart body: {exc}", "invalid_multipart"
            ) from exc
        if sdp is None:
            raise ApiError(
                "Missing required parameter: 'sdp'.", "missing_required_parameter", "sdp"
            )
        return sdp, session
    if content_type in ("application/sdp", "text/plain", "application/octet-stream", ""):
        return _sdp_text(await request.read()), None
    raise ApiError(
        f"Unsupported content type '{content_type}': send application/sdp or multipart/form-data.",
        "unsupported_content_type",
        status=415,
    )


# --- handlers ---


async def create_client_secret(request: web.Request) -> web.Response:
    require_standard_key(request)
    body = await _json_body(request)
    checked = GA_CLIENT_SECRET_REQUEST.check(body, "")
    session = checked.get("session")
    request_session = validate_ga_session(session) if session is not None else None
    ttl = (checked.get("expires_after") or {}).get("seconds", GA_DEFAULT_TTL_SECS)
    config = SessionConfig.ga(request_session, GA_MODEL)
    key = request.app[KEYS].mint(config, ttl)
    return web.json_response(
        {
            "value": key.value,
            "expires_at": int(key.expires_at),
            "session": config.public(id=ids.session_id(), expires_at=0),
        }
    )


async def create_beta_session(request: web.Request) -> web.Response:
    require_standard_key(request)
    body = await _json_body(request)
    checked = validate_beta_session(body, "", request=True)
    expires_after = (checked.get("client_secret") or {}).get("expires_after") or {}
    ttl = expires_after.get("seconds", BETA_DEFAULT_TTL_SECS)
    config = SessionConfig.beta(checked, BETA_MODEL)
    key = request.app[KEYS].mint(config, ttl)
    out = config.public(id=ids.session_id(), expires_at=0)
    out["client_secret"] = {"value": key.value, "expires_at": int(key.expires_at)}
    return web.json_response(out)


def _peek_key(request: web.Request) -> str:
    """Authenticate a call request: a standard key, or a live ephemeral key (checked
    now, consumed only once the offer is known to be good)."""
    token = bearer(request)
    if token is None:
        raise invalid_api_key(None)
    if is_standard_key(request, token):
        return token
    if request.app[KEYS].is_ephemeral(token):
        request.app[KEYS].check(token)  # unknown or expired: 401 before reading the body
        return token
    raise invalid_api_key(token)


def _beta_config(key: EphemeralKey | None, session: Any | None, model: str | None) -> SessionConfig:
    check_key_dialect(key, "beta")
    if model is not None and model not in BETA_MODELS:
        raise invalid_value("model", model, BETA_MODELS)
    config = key.config.copy() if key is not None else SessionConfig.beta(None, BETA_MODEL)
    if session is not None:
        config.apply_update(validate_beta_session(session))
    if model:
        config.data["model"] = model
    return config


async def _start_call(request: web.Request, dialect: str) -> web.Response:
    token = _peek_key(request)
    sdp, session = await _offer_and_session(request)
    model = request.query.get("model")
    if model is not None and not model:
        raise invalid_type("model", "a non-empty string", model)
    offer = check_offer(sdp)
    key = request.app[KEYS].use(token) if request.app[KEYS].is_ephemeral(token) else None
    if dialect == "ga":
        config = ga_config(key, session, model)
    else:
        config = _beta_config(key, session, model)
    registry = request.app[SESSIONS]
    call = EmulatedCall(config, request.app[SETTINGS], on_closed=registry.discard)
    registry.add(call)
    try:
        answer = await call.answer(offer)
    except BaseException as exc:  # includes cancellation: never leave the PC open
        await call.close("offer rejected")
        if isinstance(exc, Exception):
            logger.info("emulator: offer rejected: %r", exc)
            raise invalid_offer() from exc
        raise
    headers = {"Location": f"/v1/realtime/calls/{call.id}"}
    # body= (not text=): OpenAI's Content-Type is exactly application/sdp, no charset.
    return web.Response(
        status=201, body=answer.encode(), content_type="application/sdp", headers=headers
    )


async def create_call(request: web.Request) -> web.Response:
    return await _start_call(request, "ga")


async def create_beta_call(request: web.Request) -> web.Response:
    return await _start_call(request, "beta")


async def hangup(request: web.Request) -> web.Response:
    token = bearer(request)
    if token is None or not (
        is_standard_key(request, token)
        or (request.app[KEYS].is_ephemeral(token) and _known_key(request, token))
    ):
        raise invalid_api_key(token)
    call_id = request.match_info["call_id"]
    call = request.app[SESSIONS].active.get(call_id)
    if call is None:
        raise ApiError(f"Call not found: {call_id}", "call_not_found", "call_id", status=404)
    await call.close("hangup")
    return web.Response(status=200)


def _known_key(request: web.Request, token: str) -> bool:
    try:
        request.app[KEYS].check(token)
    except ApiError:
        return False
    return True


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "calls": len(request.app[SESSIONS])})


async def _close_all(app: web.Application) -> None:
    await app[SESSIONS].close_all()


#: (method, path, handler): OpenAI's GA endpoints, the beta ones, and a health check.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/realtime/client_secrets", create_client_secret),
    ("POST", "/v1/realtime/calls", create_call),
    ("POST", "/v1/realtime/calls/{call_id}/hangup", hangup),
    ("POST", "/v1/realtime/sessions", create_beta_session),
    ("POST", "/v1/realtime", create_beta_call),
    ("GET", "/v1/realtime", realtime_websocket),
    ("GET", "/healthz", healthz),
)


def create_emulator_app(settings: EmulatorSettings) -> web.Application:
    """The emulator as an aiohttp app (see the module docstring)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_cors, _errors])
    app[SETTINGS] = settings
    app[KEYS] = KeyStore(allow_reuse=settings.allow_secret_reuse)
    app[SESSIONS] = CallRegistry()
    app.router.add_routes([web.route(method, path, handler) for method, path, handler in ROUTES])
    app.on_shutdown.append(_close_all)
    return app
