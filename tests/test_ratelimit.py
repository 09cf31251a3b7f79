"""Rate limits: minting and call creation per key and per client address (token
buckets), concurrent calls per key; a refusal is a 429 in OpenAI's envelope with
Retry-After, counted, and the limit recovers."""

from __future__ import annotations

from typing import Any

from relay_fixtures import RelayFactory, RelayUnderTest
from support import realtime_client

from relay.config import Secret
from relay.http.realtime_routes import RATE_LIMITS
from relay.ratelimit import KeyedBuckets, TokenBucket

API_KEY = "sk-relay-ratelimit-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_then_refills() -> None:
    bucket = TokenBucket(per_min=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 20.0  # one token every 20 s
    assert bucket.take(10.0) == 10.0
    assert bucket.take(20.0) == 0.0


def test_keyed_buckets_are_independent_and_zero_is_off() -> None:
    clock = Clock()
    buckets = KeyedBuckets(1, clock)
    assert buckets.take("a") == 0 and buckets.take("b") == 0
    assert buckets.take("a") > 0
    assert all(KeyedBuckets(0, clock).take("a") == 0 for _ in range(100))


async def keyed_relay(start_relay: RelayFactory, **overrides: Any) -> RelayUnderTest:
    return await start_relay(open_mode=False, relay_api_key=Secret(API_KEY), **overrides)


async def mint(relay: RelayUnderTest) -> Any:
    return await relay.http.post(
        relay.url("/v1/realtime/client_secrets"), json={"session": {}}, headers=AUTH
    )


async def test_minting_is_limited_per_key_and_recovers(start_relay: RelayFactory) -> None:
    relay = await keyed_relay(start_relay, rate_mint_per_min=2.0, rate_mint_per_address_per_min=0.0)
    clock = Clock()
    limits = relay.app[RATE_LIMITS]
    limits.mint_per_key._clock = clock
    assert [(await mint(relay)).status for _ in range(2)] == [200, 200]
    refused = await mint(relay)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) == 30
    body = await refused.json()
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert "per key" in body["error"]["message"]
    assert limits.refused["mint"] == 1
    clock.now += 30
    assert (await mint(relay)).status == 200
    # bad requests are not charged: they fail before the limit
    bad = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"), json={"session": {"x": 1}}, headers=AUTH
    )
    assert bad.status == 400


async def test_minting_is_limited_per_address(start_relay: RelayFactory) -> None:
    relay = await keyed_relay(start_relay, rate_mint_per_min=0.0, rate_mint_per_address_per_min=1.0)
    assert (await mint(relay)).status == 200
    refused = await mint(relay)
    assert refused.status == 429
    assert "per address" in (await refused.json())["error"]["message"]


async def test_calls_are_limited_per_key(start_relay: RelayFactory) -> None:
    relay = await keyed_relay(start_relay, rate_calls_per_min=1.0)
    secret = (await (await mint(relay)).json())["value"]
    async with realtime_client() as first, realtime_client() as second:
        assert (await first.connect(relay.http, relay.calls_url, secret)).status == 201
        refused = await second.connect(relay.http, relay.calls_url, secret)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "60"
        assert (await refused.json())["error"]["code"] == "rate_limit_exceeded"
    assert relay.app[RATE_LIMITS].refused["calls"] == 1


async def test_concurrent_calls_per_key(start_relay: RelayFactory) -> None:
    relay = await keyed_relay(start_relay, max_calls_per_key=1)
    secret = (await (await mint(relay)).json())["value"]
    async with realtime_client() as first:
        response = await first.connect(relay.http, relay.calls_url, secret)
        assert response.status == 201
        async with realtime_client() as second:
            refused = await second.connect(relay.http, relay.calls_url, secret)
            assert refused.status == 429
            assert "concurrent" in (await refused.json())["error"]["message"]
        # another key (the API key itself) is not affected
        async with realtime_client() as third:
            assert (await third.connect(relay.http, relay.calls_url, API_KEY)).status == 201
        assert first.location is not None
        hangup = await relay.http.post(relay.url(first.location + "/hangup"), headers=AUTH)
        assert hangup.status == 200
    async with realtime_client() as again:
        assert (await again.connect(relay.http, relay.calls_url, secret)).status == 201
    assert relay.app[RATE_LIMITS].refused["concurrent"] == 1
