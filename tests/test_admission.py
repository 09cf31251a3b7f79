"""Admission control: a full or lagging shard turns new calls away (503 + Retry-After)
and says so on /readyz, so the calls it already carries keep their audio."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client

from relay.embedded import EMULATOR
from relay.emulator.app import SESSIONS


async def frames_received(relay: RelayUnderTest) -> dict[str, int]:
    calls = relay.app[EMULATOR][SESSIONS].calls()
    return {c.id: c.received.frames for c in calls if not c.closed.is_set()}


async def test_a_full_shard_refuses_calls_and_keeps_the_running_ones(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    relay = await start_relay(max_calls=2)
    running = [RealtimeClient(PacedAudioSource(speech_48k, loop=True)) for _ in range(2)]
    try:
        for client in running:
            response = await client.connect(relay.http, relay.calls_url, "")
            assert response.status == 201
            await client.wait_for("session.created", timeout=10)
        before = await frames_received(relay)
        assert len(before) == 2
        started = time.monotonic()

        async def overflow_call() -> tuple[int, str | None]:
            async with realtime_client() as extra:
                response = await extra.connect(relay.http, relay.calls_url, "")
                return response.status, response.headers.get("Retry-After")

        refused = await asyncio.gather(*(overflow_call() for _ in range(6)))
        assert all(status == 503 and retry for status, retry in refused), refused
        ready = await relay.http.get(relay.url("/readyz"))
        assert ready.status == 503 and (await ready.json())["status"] == "full"
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
        elapsed = time.monotonic() - started
        after = await frames_received(relay)
        for call_id, count in before.items():
            delivered = (after[call_id] - count) / (elapsed * 50)
            assert delivered > 0.8, f"{call_id}: {delivered:.0%} of its audio arrived"
        assert len(relay.registry) == 2
    finally:
        for client in running:
            await client.close()
    await asyncio.sleep(0.2)
    assert (await relay.http.get(relay.url("/readyz"))).status == 200


async def test_a_lagging_event_loop_turns_calls_away(start_relay: RelayFactory) -> None:
    """When the shard's event loop keeps lagging past RELAY_MAX_LOOP_LAG_MS, new calls get
    503 and /readyz says overloaded; a single stall does not; once the loop recovers,
    calls are accepted again."""
    relay = await start_relay(max_loop_lag_ms=50.0)
    await asyncio.sleep(0.5)
    time.sleep(0.4)  # noqa: ASYNC251  # one stall, as a burst of set-ups makes
    await asyncio.sleep(0.3)
    assert (await relay.http.get(relay.url("/readyz"))).status == 200

    async def hog() -> None:  # an overloaded shard: the loop is late all the time
        while True:
            time.sleep(0.12)  # noqa: ASYNC251
            await asyncio.sleep(0)

    hogging = asyncio.ensure_future(hog())
    try:
        await asyncio.sleep(1.5)
        ready = await relay.http.get(relay.url("/readyz"))
        assert ready.status == 503 and (await ready.json())["status"] == "overloaded"
        async with realtime_client() as client:
            response = await client.connect(relay.http, relay.calls_url, "")
            assert response.status == 503
            error = (await response.json())["error"]
            assert error["code"] == "relay_overloaded" and "lagging" in error["message"]
            assert response.headers["Retry-After"]
    finally:
        hogging.cancel()
        await asyncio.gather(hogging, return_exceptions=True)
    await asyncio.sleep(2.5)  # the window passes
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
