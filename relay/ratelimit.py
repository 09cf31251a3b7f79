"""Rate limits of the HTTP surface: token buckets per API key and per client address,
and concurrent calls per key. A refusal is a 429 in OpenAI's envelope with
``Retry-After``; every refusal is counted (``RateLimits.refused``)."""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import Overloaded

#: Buckets kept per limit (least recently used ones go first: a new bucket is full).
MAX_KEYS = 10_000


class RateLimited(Overloaded):
    """429: too many requests for this key or address (OpenAI's ``rate_limit_exceeded``)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class TokenBucket:
    """``per_min`` tokens a minute, at most ``per_min`` saved up (a minute's burst)."""

    def __init__(self, per_min: float, now: float) -> None:
        self.capacity = max(per_min, 1.0)
        self.rate = per_min / 60.0
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0


class KeyedBuckets:
    """One bucket per key (API key, client address), bounded in number."""

    def __init__(self, per_min: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_min = per_min
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str) -> float:
        if self.per_min <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.per_min, now)
            if len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


@dataclass
class RateLimits:
    """The relay's limits; ``0`` switches one off. ``refused`` counts 429s by limit
    (``mint``, ``calls``, ``concurrent``): for the metrics."""

    mint_per_key: KeyedBuckets
    mint_per_address: KeyedBuckets
    calls_per_key: KeyedBuckets
    calls_per_address: KeyedBuckets
    max_concurrent_per_key: int = 0
    refused: dict[str, int] = field(
        default_factory=lambda: {"mint": 0, "calls": 0, "concurrent": 0}
    )
    _owners: weakref.WeakKeyDictionary[object, str] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    @classmethod
    def of(
        cls,
        *,
        mint_per_min: float,
        mint_per_address_per_min: float,
        calls_per_min: float,
        calls_per_address_per_min: float,
        max_concurrent_calls_per_key: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> RateLimits:
        return cls(
            KeyedBuckets(mint_per_min, clock),
            KeyedBuckets(mint_per_address_per_min, clock),
            KeyedBuckets(calls_per_min, clock),
            KeyedBuckets(calls_per_address_per_min, clock),
            max_concurrent_calls_per_key,
        )

    def check_mint(self, key: str, address: str) -> None:
        self._check(
            "mint", "client secrets", self.mint_per_key, self.mint_per_address, key, address
        )

    def check_call(self, key: str, address: str) -> None:
        """Rate and concurrency of new calls (raises :class:`RateLimited`)."""
        limit = self.max_concurrent_per_key
        if limit and self.concurrent(key) >= limit:
            self.refused["concurrent"] += 1
            raise RateLimited(
                f"Too many concurrent calls for this key (limit {limit}); end one first.",
                retry_after_secs=5,
            )
        self._check("calls", "calls", self.calls_per_key, self.calls_per_address, key, address)

    def call_opened(self, call: object, key: str) -> None:
        self._owners[call] = key

    def concurrent(self, key: str) -> int:
        return sum(
            1
            for call, owner in list(self._owners.items())
            if owner == key and getattr(call, "state", "ended") != "ended"
        )

    def _check(
        self,
        name: str,
        what: str,
        per_key: KeyedBuckets,
        per_address: KeyedBuckets,
        key: str,
        address: str,
    ) -> None:
        for scope, buckets, subject in (("key", per_key, key), ("address", per_address, address)):
            wait = buckets.take(subject)
            if wait > 0:
                self.refused[name] += 1
                raise RateLimited(
                    f"Rate limit reached for {what} per {scope}: limit {buckets.per_min:g} "
                    f"per minute. Please try again in {math.ceil(wait)}s.",
                    retry_after_secs=max(1, math.ceil(wait)),
                )
