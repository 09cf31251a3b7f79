"""Relay client secrets: short-lived tokens a browser uses instead of any OpenAI key.

They look like OpenAI's ephemeral keys (``ek_`` + 32 hex) because OpenAI's JS SDK
refuses other keys in a browser. Each carries the session config the app backend
asked for; the relay mints the real OpenAI ephemeral key only when a call starts."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import Secret, Settings
from .errors import Unauthorized


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int
    session: dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """Who is calling, and with what session config (from their client secret)."""

    kind: str  # "client_secret" | "api_key" | "admin" | "open"
    session: dict[str, Any]
    #: The client secret itself, for a ``client_secret`` caller.
    secret: str | None = field(default=None, repr=False)


class CallOwners:
    """Which client secret opened each live call, so that a secret ends only its own.

    Keyed by the call object (held weakly: an ended call leaves nothing behind). Calls
    opened with the relay API key, or in open mode, have no owning secret."""

    def __init__(self) -> None:
        self._secrets: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()

    def opened(self, call: object, caller: Caller) -> None:
        if caller.secret is not None:
            self._secrets[call] = caller.secret

    def may_end(self, call: object, caller: Caller) -> bool:
        """The relay API key, the admin token and open mode end any call; a client
        secret only the call it opened."""
        if caller.kind != "client_secret":
            return True
        owner = self._secrets.get(call)
        return owner is not None and caller.secret is not None and _same(caller.secret, owner)


class ClientSecretStore:
    """In-memory, expiring store of the client secrets this process minted."""

    def __init__(
        self, max_secrets: int = 100_000, new_value: Callable[[], str] | None = None
    ) -> None:
        self._secrets: dict[str, ClientSecret] = {}
        self._max = max_secrets
        self._new_value = new_value or (lambda: "ek_" + secrets.token_hex(16))

    def mint(self, session: dict[str, Any], ttl_secs: int) -> ClientSecret:
        self._sweep()
        if len(self._secrets) >= self._max:
            raise Unauthorized("Too many live client secrets; try again later.", code="rate_limit")
        secret = ClientSecret(
            value=self._new_value(),
            expires_at=int(time.time()) + ttl_secs,
            session=session,
        )
        self._secrets[secret.value] = secret
        return secret

    def lookup(self, value: str) -> ClientSecret | None:
        secret = self._secrets.get(value)
        if secret is None:
            return None
        if secret.expires_at <= time.time():
            del self._secrets[value]
            return None
        return secret

    def forget(self, value: str) -> None:
        """Drop a secret (one the fleet's directory could not take)."""
        self._secrets.pop(value, None)

    def _sweep(self) -> None:
        now = time.time()
        for value in [v for v, s in self._secrets.items() if s.expires_at <= now]:
            del self._secrets[value]

    def __len__(self) -> int:
        return len(self._secrets)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def same_secret(given: str, expected: Secret | None) -> bool:
    """Constant-time comparison with a configured secret."""
    return expected is not None and _same(given, expected.value)


def _same(given: str, expected: str) -> bool:
    # Header values may hold undecodable bytes (aiohttp keeps them as surrogates).
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def describe_token(token: str) -> str:
    """A token as it may appear in an error message: never more than its ends."""
    if len(token) <= 8:
        return "***"
    return f"{token[:3]}***{token[-2:]}"


# -- the demo page's token route ---------------------------------------------------------

#: Why ``POST /api/demo/client_secret`` answered 404, and what to set (log and page).
DEMO_NOT_SERVED = (
    "The demo page's token route is served only in open mode (RELAY_OPEN=1, development "
    "only) or, when the relay listens on a loopback address (RELAY_HOST=127.0.0.1) without "
    "RELAY_API_KEY, to a browser on the same machine. With RELAY_API_KEY, point the page's "
    "tokenUrl (window.REALTIME_RELAY_CONFIG) at your backend's token route."
)
#: Headers a reverse proxy adds: a request carrying one did not come from this machine.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")


def is_loopback_host(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` (a hostname, bracketed or not)."""
    host = host.strip().strip("[]").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")


def local_demo(settings: Settings) -> bool:
    """Whether the demo token route serves this machine's browsers without open mode: a
    relay on loopback for a person (no app backend key), e.g. ``make run`` with
    ``OPENAI_API_KEY``. Never on any other address."""
    return settings.relay_api_key is None and is_loopback_host(settings.host)


def from_local_browser(remote: str | None, headers: Mapping[str, str]) -> bool:
    """A request from this machine that names it: loopback peer, loopback ``Host`` (a page
    reached through DNS rebinding names another host), a loopback ``Origin`` if any, and no
    reverse-proxy header."""
    if remote is None or not is_loopback_host(remote):
        return False
    if any(name in headers for name in _FORWARDING_HEADERS):
        return False
    host = _hostname(headers.get("Host", ""))
    origin = headers.get("Origin")
    if origin is not None:
        _, _, rest = origin.partition("://")
        if not rest or not is_loopback_host(_hostname(rest)):
            return False
    return bool(host) and is_loopback_host(host)


def _hostname(authority: str) -> str:
    """``host`` of ``host:port`` / ``[v6]:port`` (no userinfo in a Host header)."""
    authority = authority.strip()
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else ""
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
