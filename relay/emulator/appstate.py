"""The emulator app's state (typed ``web.AppKey``s) and its API-key checks, shared by
its HTTP routes (:mod:`.app`) and its WebSocket transport (:mod:`.websocket`)."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .errors import ApiError, invalid_api_key
from .keys import EphemeralKey, KeyStore
from .registry import CallRegistry
from .session_config import SessionConfig, validate_ga_session
from .settings import GA_MODEL, EmulatorSettings

SETTINGS = web.AppKey("emulator_settings", EmulatorSettings)
KEYS = web.AppKey("emulator_keys", KeyStore)
SESSIONS = web.AppKey("emulator_sessions", CallRegistry)


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_standard_key(request: web.Request, token: str) -> bool:
    keys = request.app[SETTINGS].api_keys
    # str.encode reads the characters themselves, even of a str subclass that hides
    # them from str() and repr().
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


def require_standard_key(request: web.Request) -> None:
    token = bearer(request)
    if token is None or not is_standard_key(request, token):
        raise invalid_api_key(token)


#: Why an ephemeral key of the other dialect is refused, by the dialect asked for.
_OTHER_DIALECTS_KEY = {
    "ga": "This ephemeral key belongs to the beta Realtime API; use it with "
    "POST /v1/realtime?model=...",
    "beta": "This ephemeral key belongs to the GA Realtime API; use it with "
    "POST /v1/realtime/calls.",
}


def check_key_dialect(key: EphemeralKey | None, dialect: str) -> None:
    if key is not None and key.dialect != dialect:
        raise ApiError(_OTHER_DIALECTS_KEY[dialect], "invalid_api_key", status=401)


def ga_config(key: EphemeralKey | None, session: Any | None, model: str | None) -> SessionConfig:
    check_key_dialect(key, "ga")
    if session is not None:
        request_session = validate_ga_session(session)
        if key is not None:
            config = key.config.copy()
            config.apply_update(request_session)
        else:
            config = SessionConfig.ga(request_session, GA_MODEL)
    else:
        config = key.config.copy() if key is not None else SessionConfig.ga(None, GA_MODEL)
    if model and config.kind == "realtime" and not (session or {}).get("model"):
        config.data["model"] = model
    return config
