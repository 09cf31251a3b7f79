"""HTTP side of the upstream leg: OpenAI's key minting and SDP exchange.

Two dialects: GA (``/realtime/client_secrets`` + ``/realtime/calls``, the default)
and beta (``/realtime/sessions`` + ``/realtime?model=``, switched off upstream in
2026 but kept as an option). Every request is bounded by ``timeout_secs``; failures
become :mod:`relay.errors` whose messages never contain a key."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..config import Dialect, Secret
from ..errors import (
    RelayError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from .session_config import to_beta_session

logger = logging.getLogger(__name__)

_KEY_LIKE = re.compile(r"\b(sk|ek|rk)[-_][A-Za-z0-9_\-*]{4,}")


def redact(text: str) -> str:
    """Remove anything that looks like an API key from upstream text."""
    return _KEY_LIKE.sub("[redacted]", text)


@dataclass(frozen=True)
class UpstreamCall:
    answer_sdp: str
    call_id: str | None


class OpenAIConnector:
    """Mints ephemeral keys with the server key and posts SDP offers."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: Secret,
        dialect: Dialect,
        timeout_secs: float,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._key = api_key
        self.dialect = dialect
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)

    @property
    def base_url(self) -> str:
        return self._base

    async def mint_ephemeral_key(self, session: dict[str, Any]) -> tuple[str, int]:
        """An OpenAI ephemeral key for ``session`` (GA shape), and its expiry."""
        if self.dialect == "beta":
            url, body = f"{self._base}/realtime/sessions", to_beta_session(session)
        else:
            url, body = f"{self._base}/realtime/client_secrets", {"session": session}
        data = await self._request_json("POST", url, json=body, token=self._key.value)
        secret = data.get("client_secret") if self.dialect == "beta" else data
        if not isinstance(secret, dict) or not isinstance(secret.get("value"), str):
            raise UpstreamError("OpenAI's key-minting answer had no key in it.")
        return secret["value"], int(secret.get("expires_at") or 0)

    async def create_call(self, offer_sdp: str, ephemeral_key: str, model: str) -> UpstreamCall:
        """POST the relay's own offer; returns OpenAI's answer and call id."""
        if self.dialect == "beta":
            url, params = f"{self._base}/realtime", {"model": model}
        else:
            url, params = f"{self._base}/realtime/calls", {}
        headers = {"Authorization": f"Bearer {ephemeral_key}", "Content-Type": "application/sdp"}
        async with (
            self._guard("create the upstream call"),
            self._http.post(
                url, data=offer_sdp, headers=headers, params=params, timeout=self._timeout
            ) as response,
        ):
            if response.status not in (200, 201):
                await self._raise_for(response)
            answer = await response.text()
            location = response.headers.get("Location", "")
        if not answer.lstrip().startswith("v=0"):
            raise UpstreamError("OpenAI's answer to the relay's offer was not SDP.")
        call_id = location.rstrip("/").rsplit("/", 1)[-1] or None
        return UpstreamCall(answer_sdp=answer, call_id=call_id)

    async def connect_websocket(
        self, model: str, *, heartbeat_secs: float, max_message_bytes: int
    ) -> aiohttp.ClientWebSocketResponse:
        """OpenAI's WebSocket transport (``wss .../realtime?model=``), authenticated with
        the server's own key (it never leaves the relay). GA only."""
        url = re.sub(r"^http", "ws", self._base) + "/realtime"
        headers = {"Authorization": f"Bearer {self._key.value}"}
        async with self._guard("open the upstream WebSocket"):
            async with asyncio.timeout(self._timeout.total):
                return await self._http.ws_connect(
                    url,
                    params={"model": model},
                    headers=headers,
                    heartbeat=heartbeat_secs,
                    max_msg_size=max_message_bytes,
                    autoping=True,
                )
        raise AssertionError("unreachable")  # the guard re-raises as a relay error

    async def hangup(self, call_id: str) -> None:
        """Tell OpenAI the call is over (GA only; best effort, bounded)."""
        if self.dialect == "beta":
            return
        url = f"{self._base}/realtime/calls/{call_id}/hangup"
        headers = {"Authorization": f"Bearer {self._key.value}"}
        try:
            async with self._http.post(url, headers=headers, timeout=self._timeout) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.info("upstream hangup of %s failed: %s", call_id, type(exc).__name__)

    async def _request_json(
        self, method: str, url: str, *, json: Any, token: str
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            self._guard("mint an OpenAI ephemeral key"),
            self._http.request(
                method, url, json=json, headers=headers, timeout=self._timeout
            ) as response,
        ):
            if response.status != 200:
                await self._raise_for(response)
            try:
                data: dict[str, Any] = await response.json(content_type=None)
                return data
            except ValueError as exc:
                raise UpstreamError("OpenAI answered with invalid JSON.") from exc

    def _guard(self, what: str) -> _UpstreamGuard:
        return _UpstreamGuard(what, self._base)

    async def _raise_for(self, response: aiohttp.ClientResponse) -> None:
        status = response.status
        error: dict[str, Any] = {}
        try:
            body = await response.json(content_type=None)
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                error = body["error"]
        except ValueError:
            pass
        if status in (401, 403):
            raise UpstreamAuthError(
                f"OpenAI rejected the relay's credentials (HTTP {status}); "
                "check the relay's OPENAI_API_KEY."
            )
        if status in (400, 404, 409, 422, 429):
            message = redact(str(error.get("message") or f"OpenAI answered HTTP {status}."))
            raise UpstreamRejected(
                status, message, code=error.get("code"), param=error.get("param")
            )
        raise UpstreamError(f"OpenAI answered HTTP {status}.")


class _UpstreamGuard:
    """Turns transport failures and timeouts into relay errors."""

    def __init__(self, what: str, base: str) -> None:
        self._what = what
        self._host = re.sub(r"^https?://", "", base).split("/", 1)[0]

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, RelayError):
            return
        if isinstance(exc, asyncio.TimeoutError):
            raise UpstreamTimeout(f"Timed out trying to {self._what} at {self._host}.") from None
        if isinstance(exc, aiohttp.ClientError):
            raise UpstreamError(
                f"Could not {self._what} at {self._host}: {type(exc).__name__}."
            ) from None
