"""``GET /api/conversations``: a signed-in user's past conversations, for the browser.

The browser authenticates with its client secret (``Authorization: Bearer ek_...``),
looked up as at call creation (this process, a sibling shard, or the fleet's
directory). The answer holds the finished recordings whose ``user_id`` is the secret's
``session.relay.user_id`` (see :mod:`relay.policy`), newest first: transcripts only,
``limit`` of them (default 20, at most 50). A secret minted without a user id gets
``404 user_id_not_set``; unknown or expired ones ``401``; a relay that records nothing
an empty list. Only calls that were recorded are there (``RELAY_RECORDING_POLICY``).

With a call directory, every node answers its part and the node asked merges them
(:data:`relay.http.shard_routes.FLEET_GATHERED`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..auth import bearer_token
from ..errors import InvalidRequest, NotFound, Unauthorized
from ..ops.recording.conversations import (
    DEFAULT_CONVERSATIONS,
    MAX_CONVERSATIONS,
    user_conversations,
)
from ..policy import RELAY_FIELD
from .ops_routes import OPS, _json
from .realtime_routes import _unauthorized
from .shard_routes import client_secret_session

PATH = "/api/conversations"


def setup_conversation_routes(app: web.Application) -> None:
    app.router.add_get(PATH, list_conversations)


async def list_conversations(request: web.Request) -> web.Response:
    """The secret's user's newest conversations (see the module)."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized(
            "Missing bearer authentication in header: send 'Authorization: Bearer "
            "<client secret>'.",
            code="missing_api_key",
        )
    session = await client_secret_session(request.app, token)
    if session is None:
        raise _unauthorized(token)
    relay = session.get(RELAY_FIELD)
    user_id = relay.get("user_id") if isinstance(relay, dict) else None
    if not isinstance(user_id, str):
        raise NotFound(
            "This client secret names no user: the app mints it with "
            "session.relay.user_id to read that user's conversations.",
            code="user_id_not_set",
        )
    limit = _limit(request)
    ops = request.app.get(OPS)
    recorder = ops.recorder if ops is not None else None
    found = {"object": "list", "data": [], "has_more": False}
    if recorder is not None:
        found = await asyncio.to_thread(user_conversations, recorder.root, user_id, limit)
    response = _json(found)
    response.headers["Cache-Control"] = "no-store"
    return response


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_CONVERSATIONS))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_CONVERSATIONS:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {MAX_CONVERSATIONS}.",
            code="invalid_value",
            param="limit",
        )
    return limit
