"""Short-lived TURN credentials for the relay's own web client, in coturn's REST-API
shared-secret scheme (``use-auth-secret`` + ``static-auth-secret``):

    username   = "<expiry unix time>:<id>"
    credential = base64(HMAC-SHA1(secret, username))

coturn recomputes the credential from the username with the same secret and refuses a
username whose expiry has passed, so the relay and coturn share nothing but the secret
and no per-user state exists anywhere. ``id`` names who asked (never a key itself:
coturn logs usernames)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from .config import Settings


@dataclass(frozen=True)
class TurnCredentials:
    urls: tuple[str, ...]
    username: str
    credential: str
    expires_at: int

    def as_json(self) -> dict[str, Any]:
        """The ``POST /api/turn_credentials`` body: ``ice_servers`` is what a browser
        passes to ``RTCPeerConnection({iceServers})``."""
        server = {"urls": list(self.urls), "username": self.username, "credential": self.credential}
        return {"ice_servers": [server], "expires_at": self.expires_at}


def configured(settings: Settings) -> bool:
    """Whether this relay hands out TURN credentials (URLs and a secret both set)."""
    return bool(settings.turn_urls) and settings.turn_secret is not None


def check(settings: Settings) -> list[str]:
    """What is wrong with the TURN settings (empty: nothing)."""
    problems = []
    if bool(settings.turn_urls) != (settings.turn_secret is not None):
        problems.append("RELAY_TURN_URLS and RELAY_TURN_SECRET go together")
    for url in settings.turn_urls:
        if not url.startswith(("turn:", "turns:")):
            problems.append(f"RELAY_TURN_URLS: {url!r} is not a turn: or turns: URL")
    if settings.turn_ttl_secs < 60:
        problems.append("RELAY_TURN_TTL_SECS must be at least 60")
    return problems


def credential_for(secret: str, username: str) -> str:
    """coturn's REST-API password of ``username``."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def mint(
    secret: str,
    urls: tuple[str, ...],
    ttl_secs: int,
    who: str,
    *,
    now: float | None = None,
) -> TurnCredentials:
    """Credentials for ``who`` (a name without ``:``), valid ``ttl_secs`` from ``now``."""
    expires_at = int(now if now is not None else time.time()) + ttl_secs
    username = f"{expires_at}:{who.replace(':', '_')}"
    return TurnCredentials(urls, username, credential_for(secret, username), expires_at)


def requester_id(kind: str, secret: str | None) -> str:
    """A name for whoever asked, fit for coturn's logs: the kind of caller, and for a
    client secret a digest of it (never the secret)."""
    if secret is None:
        return kind
    return "cs-" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:16]
