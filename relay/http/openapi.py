"""An OpenAPI 3.1 description of the relay's HTTP surface, served at ``GET /openapi.json``.

It holds no secrets (no key, no host name): anyone may read it. Every route the app
registers has an entry and every entry a route (``tests/test_openapi.py`` checks both
ways and runs Schemathesis against it). WebSocket routes are described as the ``GET``
that upgrades, with a note; aiohttp answers ``HEAD`` wherever there is a ``GET``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from ..ops.monitor import LISTEN_FORMATS, LISTEN_TRACKS
from ..ops.recording import FILES

Schema = dict[str, Any]
#: An operation's ``security``: alternatives, ``{}`` meaning none needed.
Security = list[dict[str, list[str]]]

OPENAPI_PATH: Final = "/openapi.json"

ERROR_SCHEMA: Final[Schema] = {
    "type": "object",
    "description": "OpenAI's error envelope: every refusal and failure has this shape.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code", "param"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}

_ERROR_MEANINGS: Final = {
    400: "Malformed request: invalid JSON (or nested more than 64 levels), invalid offer, "
    "unsupported content type, bad parameter.",
    401: "Missing or wrong key (`invalid_api_key`, `missing_api_key`).",
    403: "The operator API is disabled (no `RELAY_ADMIN_TOKEN`).",
    404: "No such call, recording or file; or a route that is off in this configuration.",
    408: "The request body did not arrive in time.",
    413: "A body, offer or part over its limit.",
    429: "Too many requests for this key or client address (`rate_limit_exceeded`), or too "
    "many concurrent calls for this key; see `Retry-After`.",
    414: "A request path over 2048 characters.",
    502: "OpenAI refused the relay's key (`upstream_auth_failed`) or failed "
    "(`upstream_error`); or the shard that owns the call did not answer.",
    503: "This relay is full or draining (`relay_overloaded`); see `Retry-After`.",
    504: "OpenAI did not answer in time (`upstream_timeout`).",
}
#: What any route may answer whatever it is asked: a path too long, or a segment
#: longer than any file name (404).
_ANY_ROUTE: Final = (404, 414)


def _error(status: int) -> Schema:
    response: Schema = {
        "description": _ERROR_MEANINGS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, media_type: str) -> Schema:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _operation(
    summary: str,
    responses: dict[str, Schema],
    *errors: int,
    security: Security | None = None,
    **extra: Any,
) -> Schema:
    operation: Schema = {"summary": summary, **extra}
    if security is not None:
        operation["security"] = security
    all_responses = dict(responses)
    for status in sorted({*errors, *_ANY_ROUTE}):
        all_responses.setdefault(str(status), _error(status))
    operation["responses"] = all_responses
    return operation


def _websocket(summary: str, *errors: int, **extra: Any) -> Schema:
    """A WebSocket route: the ``GET`` that upgrades (``101``), or ``400`` without the
    upgrade headers."""
    switching = {"101": {"description": "Switching to the WebSocket."}}
    return _operation(summary, switching, 400, *errors, **extra)


def _path_parameter(name: str, description: str, **schema: Any) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _query_parameter(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


#: Who may call: the relay API key or a client secret; nothing at all in open mode.
_CALLER: Final[Security] = [{"relayKey": []}, {}]
_ADMIN: Final[Security] = [{"adminToken": []}]
_CALL_ID: Final = _path_parameter("call_id", "A call id, `rtc_...`.")
_WEBSOCKET_NOTE: Final = (
    " A WebSocket: send `Upgrade: websocket`; browsers, which cannot set headers, send "
    "the admin token as the subprotocol `bearer.<token>` next to `relay-monitor`. "
    "A plain GET gets `400 websocket_required`."
)
_SIDEBAND_NOTE: Final = (
    " A WebSocket in OpenAI's event protocol, authenticated with `Authorization: Bearer "
    "<RELAY_API_KEY>`; a plain GET gets `400 websocket_required`."
)

_SESSION: Final[Schema] = {
    "type": "object",
    "description": "An OpenAI Realtime session config (GA shape); `type` and `model` are "
    "filled in when absent.",
    "additionalProperties": True,
}
_CLIENT_SECRET_REQUEST: Final[Schema] = {
    "type": "object",
    "properties": {
        "session": _SESSION,
        "expires_after": {
            "type": "object",
            "properties": {
                "anchor": {"const": "created_at"},
                "seconds": {"type": "integer", "minimum": 10, "maximum": 7200},
            },
        },
    },
}
_CLIENT_SECRET: Final[Schema] = {
    "type": "object",
    "required": ["value", "expires_at", "session"],
    "properties": {
        "value": {"type": "string", "pattern": "^ek_"},
        "expires_at": {"type": "integer"},
        "session": {"type": "object"},
    },
}
_CALL_SNAPSHOT: Final[Schema] = {
    "type": "object",
    "description": "A live call: state, legs, selected transport, stats, transcripts so far.",
    "required": ["id", "state"],
    "properties": {
        "id": {"type": "string"},
        "state": {"enum": ["setting_up", "active", "ending", "ended"]},
        "outcome": {"type": ["string", "null"]},
        "model": {"type": ["string", "null"]},
        "transcripts": {"type": "array", "items": {"type": "object"}},
    },
}
_LIST: Final[Schema] = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array"}},
}
_REDIRECT: Final[Schema] = {
    "description": "A redirect.",
    "headers": {"Location": {"schema": {"type": "string"}}},
}
_DRAIN: Final[Schema] = {
    "type": "object",
    "required": ["object", "draining", "calls"],
    "properties": {
        "object": {"const": "relay.drain"},
        "draining": {"type": "boolean"},
        "calls": {"type": "integer"},
        "deadline": {"type": ["number", "null"]},
        "shard": {"type": "integer"},
    },
}
_READINESS: Final[Schema] = {
    "type": "object",
    "required": ["status", "calls"],
    "properties": {"status": {"type": "string"}, "calls": {"type": "integer"}},
}


def _paths() -> dict[str, Schema]:
    files = list(FILES)
    return {
        "/": {"get": _operation("The demo voice page.", {"200": _text("HTML.", "text/html")})},
        "/healthz": {
            "get": _operation(
                "Liveness.",
                {"200": _json("Alive.", {"type": "object", "required": ["status"]})},
            )
        },
        "/readyz": {
            "get": _operation(
                "Readiness: 503 while draining, full or lagging.",
                {
                    "200": _json("Ready.", _READINESS),
                    "503": _json("`draining`, `full` or `overloaded`.", _READINESS),
                },
            )
        },
        OPENAPI_PATH: {
            "get": _operation("This document.", {"200": _json("OpenAPI 3.1.", {"type": "object"})})
        },
        "/v1/realtime/client_secrets": {
            "post": _operation(
                "Mint a short-lived client secret (`ek_...`) for a browser.",
                {"200": _json("The client secret and its session.", _CLIENT_SECRET)},
                400,
                401,
                408,
                413,
                429,
                security=_CALLER,
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": _CLIENT_SECRET_REQUEST}},
                },
            )
        },
        "/v1/realtime/calls": {
            "post": _operation(
                "Start a call: an SDP offer in, the SDP answer out once OpenAI's leg is up.",
                {
                    "201": {
                        "description": "The SDP answer.",
                        "headers": {
                            "Location": {
                                "description": "`/v1/realtime/calls/{call_id}`.",
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {"application/sdp": {"schema": {"type": "string"}}},
                    }
                },
                400,
                401,
                408,
                413,
                429,
                502,
                503,
                504,
                security=_CALLER,
                parameters=[
                    _query_parameter("model", "Overrides the session's model.", {"type": "string"}),
                    {
                        "name": "X-Relay-Record",
                        "in": "header",
                        "required": False,
                        "description": "`1`: record this call (policy `opt_in`).",
                        "schema": {"type": "string"},
                    },
                ],
                requestBody={
                    "required": True,
                    "content": {
                        "application/sdp": {"schema": {"type": "string"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["sdp"],
                                "properties": {
                                    "sdp": {"type": "string"},
                                    "session": {
                                        "type": "string",
                                        "description": "A session config, as JSON text.",
                                    },
                                },
                            }
                        },
                    },
                },
            )
        },
        "/v1/realtime/calls/{call_id}/hangup": {
            "post": _operation(
                "End a call: the client secret that opened it, the relay API key or the "
                "admin token (a call another secret opened is not found).",
                {"200": _json("Ended.", {"type": "object"})},
                401,
                408,
                413,
                502,
                security=[{"relayKey": []}, {"adminToken": []}, {}],
                parameters=[_CALL_ID],
            )
        },
        "/v1/realtime/ws": {
            "get": _websocket(
                "A whole call over one WebSocket (for networks that pass only HTTPS): the "
                "client secret as the subprotocol `openai-insecure-api-key.<secret>` next "
                "to `realtime`, or `Authorization: Bearer` from a server. A plain GET gets "
                "`400`.",
                401,
                503,
                security=_CALLER,
                parameters=[
                    _query_parameter("model", "Overrides the session's model.", {"type": "string"}),
                    _query_parameter("record", "`1`: record this call.", {"type": "string"}),
                ],
            )
        },
        "/api/demo/client_secret": {
            "post": _operation(
                "The demo page's token URL (open mode only; 404 otherwise).",
                {"200": _json("A client secret.", _CLIENT_SECRET)},
                400,
                408,
                413,
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": _CLIENT_SECRET_REQUEST}},
                },
            )
        },
        "/api/realtime/session": {
            "post": _operation(
                "Direct mode: an OpenAI ephemeral key for a browser that reaches OpenAI "
                "itself (off, 404, unless `RELAY_ENABLE_DIRECT_SESSION=1`).",
                {
                    "200": _json(
                        "OpenAI's ephemeral key (never the relay's own key).",
                        {
                            "type": "object",
                            "required": ["client_secret", "value", "expires_at"],
                            "properties": {
                                "client_secret": {"type": "object"},
                                "value": {"type": "string"},
                                "expires_at": {"type": "integer"},
                                "model": {"type": ["string", "null"]},
                                "base_url": {"type": "string"},
                                "dialect": {"enum": ["ga", "beta"]},
                            },
                        },
                    )
                },
                400,
                401,
                408,
                413,
                502,
                504,
                security=_CALLER,
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            )
        },
        "/api/turn_credentials": {
            "post": _operation(
                "Short-lived TURN credentials (coturn's REST-API scheme) for whoever may "
                "open a call (404 `turn_not_configured` without `RELAY_TURN_URLS` and "
                "`RELAY_TURN_SECRET`).",
                {
                    "200": _json(
                        "`ice_servers` as `RTCPeerConnection({iceServers})` takes them.",
                        {
                            "type": "object",
                            "required": ["ice_servers", "expires_at"],
                            "properties": {
                                "ice_servers": {"type": "array", "items": {"type": "object"}},
                                "expires_at": {"type": "integer"},
                            },
                        },
                    )
                },
                400,
                401,
                408,
                413,
                security=_CALLER,
            )
        },
        "/admin/drain": {
            "post": _operation(
                "Drain this relay (every shard): new calls get 503, running ones may go "
                "on for `RELAY_DRAIN_TIMEOUT_SECS`. Not undone but by a restart.",
                {"202": _json("Draining.", _DRAIN)},
                401,
                403,
                408,
                413,
                security=_ADMIN,
            ),
            "get": _operation(
                "How far the drain is.",
                {"200": _json("The drain's status.", _DRAIN)},
                401,
                403,
                security=_ADMIN,
            ),
        },
        "/check": {
            "get": _operation("The connectivity check page.", {"200": _text("HTML.", "text/html")})
        },
        "/api/check": {
            "get": _operation(
                "What a network administrator needs to let a call through: ICE and TLS facts.",
                {
                    "200": _json(
                        "The facts.",
                        {
                            "type": "object",
                            "required": ["server_time", "websocket_path", "ice"],
                            "properties": {
                                "server_time": {"type": "number"},
                                "tls": {"type": "boolean"},
                                "websocket_path": {"type": "string"},
                                "ice": {"type": "object"},
                            },
                        },
                    )
                },
            )
        },
        "/api/check/webrtc": {
            "post": _operation(
                "The check page's WebRTC probe: an SDP offer (a data channel only) in, an "
                "answer whose channel echoes text out. No key; closed after a few seconds.",
                {"200": _text("The SDP answer.", "application/sdp")},
                400,
                408,
                413,
                503,
                requestBody={
                    "required": True,
                    "content": {"application/sdp": {"schema": {"type": "string"}}},
                },
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus text format (0.0.4) for every shard.",
                {"200": _text("Metrics.", "text/plain")},
                401,
                security=[{"metricsToken": []}, {}],
            )
        },
        "/api/calls": {
            "get": _operation(
                "Live calls of every shard.",
                {
                    "200": _json(
                        "The calls.",
                        {
                            **_LIST,
                            "properties": {
                                **_LIST["properties"],
                                "data": {"type": "array", "items": _CALL_SNAPSHOT},
                            },
                        },
                    )
                },
                401,
                403,
                security=_ADMIN,
            )
        },
        "/api/calls/{call_id}": {
            "get": _operation(
                "One live call.",
                {"200": _json("The call.", _CALL_SNAPSHOT)},
                401,
                403,
                security=_ADMIN,
                parameters=[_CALL_ID],
            )
        },
        "/v1/realtime": {
            "get": _websocket(
                "Sideband of a call (OpenAI's `?call_id=` WebSocket): every server event of "
                "the call; client events sent here go upstream with no browser policy; "
                "closed with 1000 when the call ends." + _SIDEBAND_NOTE,
                401,
                security=_CALLER,
                parameters=[
                    {
                        **_query_parameter("call_id", "The call, `rtc_...`.", {"type": "string"}),
                        "required": True,
                    },
                ],
            )
        },
        "/v1/realtime/calls/{call_id}/sideband": {
            "get": _websocket(
                "The same sideband on a call path (forwarded to the shard that owns the call)."
                + _SIDEBAND_NOTE,
                401,
                security=_CALLER,
                parameters=[_CALL_ID],
            )
        },
        "/api/calls/{call_id}/events": {
            "get": _websocket(
                "The call's snapshot, then every event, level and its end, as JSON messages."
                + _WEBSOCKET_NOTE,
                401,
                403,
                security=_ADMIN,
                parameters=[_CALL_ID],
            )
        },
        "/api/calls/{call_id}/listen": {
            "get": _websocket(
                "Listen-in: 20 ms frames of 24 kHz PCM16, or Twilio Media Streams JSON."
                + _WEBSOCKET_NOTE,
                401,
                403,
                security=_ADMIN,
                parameters=[
                    _CALL_ID,
                    _query_parameter("track", "Whose audio.", {"enum": list(LISTEN_TRACKS)}),
                    _query_parameter("format", "Frame format.", {"enum": list(LISTEN_FORMATS)}),
                ],
            )
        },
        "/api/recordings": {
            "get": _operation(
                "The newest recordings' metadata.",
                {"200": _json("Recordings.", _LIST)},
                400,
                401,
                403,
                security=_ADMIN,
                parameters=[
                    _query_parameter(
                        "limit", "How many (1-1000, default 100).", {"type": "integer"}
                    )
                ],
            )
        },
        "/api/recordings/{call_id}": {
            "get": _operation(
                "One recording: its metadata and files.",
                {"200": _json("The recording.", {"type": "object", "required": ["files"]})},
                401,
                403,
                security=_ADMIN,
                parameters=[_CALL_ID],
            )
        },
        "/api/recordings/{call_id}/{name}": {
            "get": _operation(
                "Download one file of a recording.",
                {
                    "200": {
                        "description": "The file (an attachment).",
                        "content": {
                            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "object"}},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    }
                },
                401,
                403,
                security=_ADMIN,
                parameters=[_CALL_ID, _path_parameter("name", "A file.", enum=files)],
            )
        },
        "/monitor": {"get": _operation("Redirects to `/monitor/`.", {"302": _REDIRECT})},
        "/monitor/": {
            "get": _operation("The live monitor page.", {"200": _text("HTML.", "text/html")})
        },
        "/monitor/{name}": {
            "get": _operation(
                "The monitor page's script and style.",
                {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    }
                },
                parameters=[_path_parameter("name", "`monitor.js` or `monitor.css`.")],
            )
        },
        "/internal/client_secrets/{value}": {
            "get": _operation(
                "Shard-internal: a sibling shard asks for a client secret's session. "
                "Answers only on the shards' private Unix socket with their token; "
                "everywhere else, 404.",
                {"200": _json("The session.", {"type": "object"})},
                parameters=[_path_parameter("value", "A client secret.")],
            )
            | {"x-relay-internal": True}
        },
    }


def build_document() -> Schema:
    """The OpenAPI 3.1 document (a new dict on each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "realtime-relay",
            "version": "1",
            "description": "A WebRTC relay between browsers and the OpenAI Realtime API, "
            "speaking OpenAI's HTTP dialect (`/v1/realtime/...`). Errors use OpenAI's "
            "envelope. Requests the HTTP parser itself refuses (a method it does not "
            "know, a byte not allowed in a path or header name, a line over 8190 "
            "bytes) get a plain-text `400` before any route runs.",
        },
        "paths": _paths(),
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "relayKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`RELAY_API_KEY` (app backends), or a client secret "
                    "`ek_...` minted by this relay (browsers).",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`RELAY_ADMIN_TOKEN` (operators).",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`RELAY_METRICS_TOKEN` (Prometheus), when set.",
                },
            },
        },
    }


_BODY: Final = json.dumps(build_document(), indent=1).encode()


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")


def setup_openapi_route(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, openapi_document)
