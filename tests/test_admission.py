"""Admission control: a full or lagging shard turns new calls away (503 + Retry-After)
and says so on /readyz, so the calls it already carries keep their audio."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client

from relay.config import Settings
from relay.embedded import EMULATOR
from relay.emulator.app import SESSIONS


async def frames_received(relay: RelayUnderTest) -> dict[str, int]:
    calls = relay.app[EMULATOR][SESSIONS].calls()
    return {c.id: c.received.frames for c in calls if not c.closed.is_set()}


async def test_a_full_shard_refuses_calls_and_keeps_the_running_ones(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    relay = await start_relay(max_calls=2, max_loop_load=0.0)  # the count alone
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


async def test_a_call_that_would_overload_the_loop_is_refused(
    start_relay: RelayFactory,
) -> None:
    """Admission by the event loop's load, deterministically (the probe's reading is
    replaced): with no call, the load itself is compared with RELAY_MAX_LOOP_LOAD; with
    calls, the load they would make with one more (the load plus a call's average share)."""
    relay = await start_relay(max_loop_load=0.7)
    load = {"now": 0.75}
    relay.registry.limit_loop_load(lambda: load["now"], 0.7)
    ready = await relay.http.get(relay.url("/readyz"))
    assert ready.status == 503 and (await ready.json())["status"] == "overloaded"
    async with realtime_client() as refused:
        response = await refused.connect(relay.http, relay.calls_url, "")
        assert response.status == 503 and response.headers["Retry-After"]
        assert (await response.json())["error"]["code"] == "relay_overloaded"
    load["now"] = 0.3
    async with realtime_client() as first:
        assert (await first.connect(relay.http, relay.calls_url, "")).status == 201
        assert relay.registry.projected_loop_load() == pytest.approx(0.6)
        assert (await relay.http.get(relay.url("/readyz"))).status == 200
        load["now"] = 0.4  # one call at 0.4: two would make 0.8
        ready = await relay.http.get(relay.url("/readyz"))
        assert ready.status == 503 and (await ready.json())["status"] == "overloaded"
        async with realtime_client() as second:
            assert (await second.connect(relay.http, relay.calls_url, "")).status == 503


#: Between two calls: longer than the 2 s over which the relay's load is taken.
RAMP_SECS = 2.5
#: After the refusal, before and while the admitted calls' audio is counted (long, so
#: that a stall from the other work on a shared machine is averaged, not decisive).
SETTLE_SECS = 1.0
MEASURE_SECS = 6.0
MOST_CALLS = 24


async def test_admission_turns_calls_away_before_the_agent_audio_suffers(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    """Calls are added one by one to one relay (its emulator, and the callers, in the
    same process and event loop) with the production admission settings, until the
    relay refuses one (503 + Retry-After, /readyz overloaded). The calls it took still
    get at least 90 % of the agent's audio, counted at each caller."""
    defaults = Settings()
    relay = await start_relay(
        max_loop_lag_ms=defaults.max_loop_lag_ms, max_loop_load=defaults.max_loop_load
    )
    admitted: list[RealtimeClient] = []
    refusal: tuple[int, str | None, int] | None = None
    try:
        for _ in range(MOST_CALLS):
            await asyncio.sleep(RAMP_SECS)  # the load of the calls so far shows
            client = RealtimeClient(PacedAudioSource(speech_48k, loop=True))
            response = await client.connect(relay.http, relay.calls_url, "")
            if response.status != 201:
                ready = await relay.http.get(relay.url("/readyz"))
                refusal = response.status, response.headers.get("Retry-After"), ready.status
                await client.close()
                break
            admitted.append(client)
        assert refusal is not None, f"{len(admitted)} calls and no refusal"
        assert refusal[0] == 503 and refusal[1] and refusal[2] == 503, refusal
        assert admitted, "the relay refused the very first call"
        await asyncio.sleep(SETTLE_SECS)
        before = [len(client.sink.frames) for client in admitted]
        started = time.monotonic()
        await asyncio.sleep(MEASURE_SECS)
        elapsed = time.monotonic() - started
        delivered = [
            (len(client.sink.frames) - count) / (elapsed * 50)
            for client, count in zip(admitted, before, strict=True)
        ]
        assert min(delivered) >= 0.9, (
            f"{len(admitted)} calls admitted; agent audio at each caller: "
            + ", ".join(f"{d:.0%}" for d in delivered)
        )
    finally:
        for client in admitted:
            await client.close()
