"""OpenAI-compatible routes: ``/v1/realtime/client_secrets``, ``/v1/realtime/calls``,
hangup, and the original ``/api/realtime/session`` (direct mode, off by default)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from .. import jsontext
from ..auth import (
    DEMO_NOT_SERVED,
    Caller,
    CallOwners,
    bearer_token,
    describe_token,
    from_local_browser,
    local_demo,
    same_secret,
)
from ..call import Call
from ..caller.leg import CallRequest
from ..caller.resume import RESUME_HEADER
from ..emulator.errors import ApiError
from ..emulator.session_config import validate_ga_session
from ..emulator.session_schema import GA_CLIENT_SECRET_REQUEST
from ..errors import InvalidRequest, NotFound, PayloadTooLarge, Unauthorized
from ..policy import (
    DENIED,
    RELAY_FIELD,
    PolicyDenied,
    SessionPolicy,
    normalise_relay_field,
    split_policy,
)
from ..ratelimit import RateLimits
from ..sdp import validate_offer
from ..upstream.session_config import complete_session, merge_sessions
from .shard_routes import client_secret_session, publish_client_secret, register_call
from .state import CLIENT_SECRETS, CONNECTOR, ICE, REGISTRY, SETTINGS, SHARD

logger = logging.getLogger(__name__)

MIN_TTL_SECS, MAX_TTL_SECS = 10, 7200
MAX_JSON_BYTES = 256 * 1024
#: Deeper JSON is refused: session configs (tool schemas included) are far shallower.
MAX_JSON_DEPTH = 64

#: Which client secret opened each of this process's calls.
CALL_OWNERS = web.AppKey("call_owners", CallOwners)
#: Minting and call creation limits (``RATE_LIMITS.refused`` counts the 429s).
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


def setup_realtime_routes(app: web.Application) -> None:
    app[CALL_OWNERS] = CallOwners()
    settings = app[SETTINGS]
    app[RATE_LIMITS] = RateLimits.of(
        mint_per_min=settings.rate_mint_per_min,
        mint_per_address_per_min=settings.rate_mint_per_address_per_min,
        calls_per_min=settings.rate_calls_per_min,
        calls_per_address_per_min=settings.rate_calls_per_address_per_min,
        max_concurrent_calls_per_key=settings.max_calls_per_key,
    )
    app.router.add_post("/v1/realtime/client_secrets", create_client_secret)
    app.router.add_post("/v1/realtime/calls", create_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", hangup_call)
    app.router.add_post("/api/demo/client_secret", create_demo_client_secret)
    app.router.add_post("/api/realtime/session", create_direct_session)


# -- client secrets ------------------------------------------------------------------


async def create_client_secret(request: web.Request) -> web.Response:
    """Mint a short-lived relay token for a browser (authorised by RELAY_API_KEY)."""
    settings = request.app[SETTINGS]
    token = bearer_token(request.headers.get("Authorization"))
    if not (settings.open_mode and token is None) and not (
        token is not None and same_secret(token, settings.relay_api_key)
    ):
        raise _unauthorized(token)
    return await _mint_client_secret(request)


async def create_demo_client_secret(request: web.Request) -> web.Response:
    """The demo page's token URL: in open (development) mode, or for this machine's
    browsers when the relay is a person's own on loopback (:func:`relay.auth.local_demo`)."""
    settings = request.app[SETTINGS]
    local = local_demo(settings) and from_local_browser(request.remote, request.headers)
    if not (settings.open_mode or local):
        raise NotFound(DEMO_NOT_SERVED)
    return await _mint_client_secret(request)


async def _mint_client_secret(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await _read_json(request, optional=True)
    ttl = settings.client_secret_ttl_secs
    expires_after = body.get("expires_after")
    if expires_after is not None:
        ttl = _ttl_from(expires_after)
    session = _checked_session(body, settings.openai_model)
    request.app[RATE_LIMITS].check_mint(_key_of(request), _address_of(request))
    secret = request.app[CLIENT_SECRETS].mint(session, ttl)
    await publish_client_secret(request.app, secret)
    payload = {
        "value": secret.value,
        "expires_at": secret.expires_at,
        "session": {"object": "realtime.session", **session},
    }
    return web.json_response(payload)


def _checked_session(body: dict[str, Any], default_model: str) -> dict[str, Any]:
    """The session of a mint request, checked as OpenAI checks it (the first problem,
    with its ``param``), completed, and carrying its whole relay policy."""
    given = body.get("session")
    if given is not None and not isinstance(given, dict):
        raise InvalidRequest(
            "Invalid type for 'session': expected an object.", code="invalid_type", param="session"
        )
    given = given or {}
    relay = normalise_relay_field(given)
    openai_part = {k: v for k, v in given.items() if k != RELAY_FIELD}
    try:
        GA_CLIENT_SECRET_REQUEST.check({**body, "session": {}}, "")
        session = complete_session(openai_part, default_model)
        validate_ga_session(session)
    except ApiError as exc:
        raise InvalidRequest(exc.message, code=exc.code, param=exc.param) from None
    return {**session, RELAY_FIELD: relay}


def _key_of(request: web.Request) -> str:
    """The credential a limit counts against: a client secret, the API key, or open."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return "open"
    if same_secret(token, request.app[SETTINGS].relay_api_key):
        return "api_key"
    return "secret:" + token


def _address_of(request: web.Request) -> str:
    return request.remote or "unknown"


def _ttl_from(expires_after: Any) -> int:
    if not isinstance(expires_after, dict):
        raise InvalidRequest("'expires_after' must be an object.", param="expires_after")
    anchor = expires_after.get("anchor", "created_at")
    if anchor != "created_at":
        raise InvalidRequest(
            "'expires_after.anchor' must be 'created_at'.",
            code="invalid_value",
            param="expires_after.anchor",
        )
    seconds = expires_after.get("seconds", 600)
    if not isinstance(seconds, int) or not MIN_TTL_SECS <= seconds <= MAX_TTL_SECS:
        raise InvalidRequest(
            f"'expires_after.seconds' must be an integer from {MIN_TTL_SECS} to {MAX_TTL_SECS}.",
            code="invalid_value",
            param="expires_after.seconds",
        )
    return seconds


# -- calls ---------------------------------------------------------------------------


async def create_call(request: web.Request) -> web.Response:
    """SDP offer in, 201 + SDP answer + Location out, once OpenAI's leg is up."""
    app = request.app
    settings = app[SETTINGS]
    caller = await authorise_call(request)
    offer, session_part = await _read_offer(request, settings.max_sdp_bytes)
    base, policy = split_policy(caller.session)
    model = request.query.get("model")
    override = dict(session_part or {})
    if model:
        override["model"] = model
    if policy is not None:
        try:
            policy.check_session(override, "session")
        except PolicyDenied as denied:
            raise InvalidRequest(denied.message, code=DENIED, param=denied.param) from None
    session = merge_sessions(base, override)
    session, extra_policy = split_policy(session)  # a trusted caller's own "relay" field
    policy = policy or extra_policy
    session = complete_session(session, settings.openai_model)
    if session_part is not None:
        try:
            validate_ga_session(session)
        except ApiError as exc:
            raise InvalidRequest(exc.message, code=exc.code, param=exc.param) from None
    call = admit_call(request, caller, policy)
    await register_call(app, call)
    call_request = CallRequest(
        offer_sdp=offer,
        session=session,
        user_agent=_printable(request.headers.get("User-Agent", "")[:300]),
        record=request.headers.get("X-Relay-Record", "") in ("1", "true"),
    )
    answer = await call.start(call_request)
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        # Only the caller gets the resume token (relay.caller.resume); never logged.
        headers={"Location": f"/v1/realtime/calls/{call.id}", RESUME_HEADER: call.grace.token},
    )


def admit_call(request: web.Request, caller: Caller, policy: SessionPolicy | None) -> Call:
    """A new call for ``caller`` (any transport): rate limits and concurrency checked,
    the caller's policy on its event bridge, its owner noted."""
    app = request.app
    settings = app[SETTINGS]
    limits = app[RATE_LIMITS]
    key = "secret:" + caller.secret if caller.secret is not None else caller.kind
    limits.check_call(key, _address_of(request))
    layout = app[SHARD]
    call = app[REGISTRY].new_call(
        settings, app[CONNECTOR], app[ICE], layout.new_call_id() if layout.sharded else None
    )
    call.bridge.policy = policy
    limits.call_opened(call, key)
    app[CALL_OWNERS].opened(call, caller)
    return call


async def hangup_call(request: web.Request) -> web.Response:
    """End a call: the client secret that opened it may, and so may the relay API key
    and the admin token (any call). Another secret's call is not found."""
    settings = request.app[SETTINGS]
    token = bearer_token(request.headers.get("Authorization"))
    if token is not None and same_secret(token, settings.admin_token):
        caller = Caller("admin", {})
    else:
        caller = await authorise_call(request)
    call = request.app[REGISTRY].get_call(request.match_info["call_id"])
    if call is None or not request.app[CALL_OWNERS].may_end(call, caller):
        raise NotFound("No call found with that id.", code="call_not_found", param="call_id")
    await call.close("hangup")
    return web.json_response({})


async def authorise_call(request: web.Request) -> Caller:
    settings = request.app[SETTINGS]
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        if settings.open_mode:
            return Caller("open", {})
        raise Unauthorized(
            "Missing bearer authentication in header: "
            "send 'Authorization: Bearer <client secret>'.",
            code="missing_api_key",
        )
    session = await client_secret_session(request.app, token)
    if session is not None:
        return Caller("client_secret", session, secret=token)
    if same_secret(token, settings.relay_api_key):
        return Caller("api_key", {})
    raise _unauthorized(token)


def _printable(header: str) -> str:
    """A header value as text every observer can encode: undecodable bytes (kept by
    aiohttp as surrogates) become U+FFFD."""
    return header.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _unauthorized(token: str | None) -> Unauthorized:
    if token is None:
        return Unauthorized("Missing bearer authentication in header.", code="missing_api_key")
    return Unauthorized(
        f"Incorrect or expired key provided: {describe_token(token)}. Mint a new client "
        "secret with POST /v1/realtime/client_secrets."
    )


async def _read_offer(request: web.Request, max_bytes: int) -> tuple[str, dict[str, Any] | None]:
    """The offer (and optional session) from ``application/sdp`` or multipart bodies."""
    if request.content_length is not None and request.content_length > max_bytes + 64 * 1024:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    ctype = request.content_type
    if ctype == "multipart/form-data":
        sdp, session = await _read_multipart_offer(request, max_bytes)
    elif ctype in ("application/sdp", "text/plain", "application/octet-stream"):
        raw = await _read_limited(request, max_bytes)
        sdp, session = raw.decode("utf-8", "replace"), None
    else:
        raise InvalidRequest(
            f"Unsupported Content-Type '{ctype}': send the SDP offer as application/sdp, "
            "or multipart/form-data with 'sdp' and 'session' parts.",
            code="unsupported_content_type",
        )
    return validate_offer(sdp, max_bytes=max_bytes), session


async def _read_multipart_offer(
    request: web.Request, max_bytes: int
) -> tuple[str, dict[str, Any] | None]:
    sdp: str | None = None
    session: dict[str, Any] | None = None
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name not in ("sdp", "session"):
                continue
            data = await part.read(decode=False)
            if len(data) > max_bytes:
                raise PayloadTooLarge(f"The '{part.name}' part is larger than {max_bytes} bytes.")
            if part.name == "sdp":
                sdp = bytes(data).decode("utf-8", "replace")
            else:
                session = _parse_session_part(bytes(data))
    except (ValueError, AssertionError, BadHttpMessage) as exc:
        raise InvalidRequest(f"Malformed multipart body: {exc}", code="invalid_body") from None
    if sdp is None:
        raise InvalidRequest("The multipart body has no 'sdp' part.", param="sdp")
    return sdp, session


def _parse_session_part(data: bytes) -> dict[str, Any]:
    try:
        session = _loads(data)
    except ValueError as exc:
        raise InvalidRequest(f"The 'session' part is {exc}.", param="session") from None
    if not isinstance(session, dict):
        raise InvalidRequest("The 'session' part must be a JSON object.", param="session")
    return session


async def _read_limited(request: web.Request, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(16384):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The SDP offer is larger than {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await _read_limited(request, MAX_JSON_BYTES)
    if not raw.strip():
        if optional:
            return {}
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = _loads(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: it is {exc}.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def _loads(data: bytes) -> Any:
    """Parsed strict JSON, or a ``ValueError`` saying what it is instead."""
    return jsontext.loads(data, MAX_JSON_DEPTH)


# -- the original direct mode ----------------------------------------------------------


async def create_direct_session(request: web.Request) -> web.Response:
    """The original ``POST /api/realtime/session``: an OpenAI ephemeral key for a
    browser that may reach OpenAI itself. Off unless RELAY_ENABLE_DIRECT_SESSION."""
    settings = request.app[SETTINGS]
    if not settings.enable_direct_session:
        raise NotFound(
            "Direct mode is disabled on this relay (RELAY_ENABLE_DIRECT_SESSION=1 enables it)."
        )
    if not settings.open_mode:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or (
            await client_secret_session(request.app, token) is None
            and not same_secret(token, settings.relay_api_key)
        ):
            raise _unauthorized(token)
    body = await _read_json(request, optional=True)
    session = complete_session(body.get("session", body or None), settings.openai_model)
    session.pop("expires_after", None)
    connector = request.app[CONNECTOR]
    value, expires_at = await connector.mint_ephemeral_key(session)
    return web.json_response(
        {
            "client_secret": {"value": value, "expires_at": expires_at},
            "value": value,
            "expires_at": expires_at,
            "model": session.get("model"),
            "base_url": connector.base_url,
            "dialect": connector.dialect,
        }
    )
