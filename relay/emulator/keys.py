"""Ephemeral keys (``ek_...``): minted with a standard key, bound to a session
configuration and a dialect, valid until their expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from . import ids
from .errors import ApiError, invalid_api_key
from .session_config import SessionConfig

#: OpenAI: GA default 600 s (10..7200); the beta's keys lived one minute.
GA_DEFAULT_TTL_SECS = 600
BETA_DEFAULT_TTL_SECS = 60
#: Bound on live keys, so a client minting in a loop cannot grow memory without limit.
MAX_KEYS = 10_000


@dataclass
class EphemeralKey:
    value: str
    config: SessionConfig
    created_at: float
    expires_at: float
    calls: int = 0

    @property
    def dialect(self) -> str:
        return self.config.dialect


class KeyStore:
    """Live ephemeral keys. ``clock`` is injectable so expiry is testable."""

    def __init__(self, allow_reuse: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.allow_reuse = allow_reuse
        #: Time source (seconds since the epoch); tests move it to expire keys.
        self.clock = clock
        self._keys: dict[str, EphemeralKey] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def mint(self, config: SessionConfig, ttl_secs: float) -> EphemeralKey:
        now = self.clock()
        self._prune(now)
        if len(self._keys) >= MAX_KEYS:
            # Drop the oldest: a flood of mints must not make the emulator fall over.
            oldest = min(self._keys.values(), key=lambda k: k.created_at)
            del self._keys[oldest.value]
        key = EphemeralKey(ids.ephemeral_key(), config, now, now + ttl_secs)
        self._keys[key.value] = key
        return key

    def is_ephemeral(self, token: str) -> bool:
        return token.startswith("ek_")

    def use(self, token: str) -> EphemeralKey:
        """The key for a new call; raises 401 if unknown, expired or already used
        (when reuse is off)."""
        key = self.check(token)
        if key.calls and not self.allow_reuse:
            raise ApiError(
                "This ephemeral API key has already been used to create a call.",
                "invalid_api_key",
                status=401,
            )
        key.calls += 1
        return key

    def check(self, token: str) -> EphemeralKey:
        """The live key ``token``, without consuming it; 401 if unknown or expired."""
        key = self._keys.get(token)
        if key is None:
            raise invalid_api_key(token)
        if self.clock() >= key.expires_at:
            del self._keys[token]
            raise ApiError(
                "Your ephemeral API key has expired. Create a new client secret.",
                "invalid_api_key",
                status=401,
            )
        return key

    def _prune(self, now: float) -> None:
        for value in [v for v, k in self._keys.items() if now >= k.expires_at]:
            del self._keys[value]
