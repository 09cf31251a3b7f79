"""Draining: ``POST /admin/drain`` (and SIGTERM) stop new calls (503 + Retry-After,
``/readyz`` 503 draining) while the running ones keep their audio until they hang up or
the drain bound (``RELAY_DRAIN_TIMEOUT_SECS``) ends them cleanly: outcome ``shutdown``,
recording finalised, ``call.ended`` webhook sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from netns import free_port
from pytest_aiohttp import AiohttpServer
from relay_fixtures import BASE_SETTINGS, RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client
from test_process import start, wait_healthy

from relay.config import Secret
from relay.embedded import EMULATOR, build_app
from relay.emulator.app import SESSIONS
from relay.http.ops_routes import OPS
from relay.http.state import REGISTRY
from relay.ops.recording import read_metadata
from relay.serving import serve

ADMIN = "drain-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
DRAIN_SECS = 3.0


@dataclass
class Hooks:
    received: list[dict[str, Any]]
    url: str

    def ended(self) -> list[dict[str, Any]]:
        return [h for h in self.received if h["type"] == "call.ended"]


@pytest.fixture
async def hooks(aiohttp_server: AiohttpServer) -> Hooks:
    received: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    server = await aiohttp_server(receiver, host="127.0.0.1")
    return Hooks(received, str(server.make_url("/hook")))


def ops_settings(tmp_path: Path, hooks: Hooks, **overrides: Any) -> dict[str, Any]:
    return {
        "admin_token": Secret(ADMIN),
        "recording_policy": "all",
        "recording_dir": str(tmp_path / "recordings"),
        "webhook_urls": (hooks.url,),
        "drain_timeout_secs": DRAIN_SECS,
        **overrides,
    }


def frames_received(app: web.Application) -> dict[str, int]:
    """Caller frames the emulator (OpenAI's side) received, by its call id."""
    calls = app[EMULATOR][SESSIONS].calls()
    return {c.id: c.received.frames for c in calls if not c.closed.is_set()}


async def until(predicate: Any, timeout_secs: float, what: str) -> None:
    deadline = time.monotonic() + timeout_secs
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_secs} s"
        await asyncio.sleep(0.05)


async def start_call(http: aiohttp.ClientSession, calls_url: str) -> tuple[RealtimeClient, str]:
    client = RealtimeClient(PacedAudioSource(loop=True))
    response = await client.connect(http, calls_url, "")
    assert response.status == 201, await response.text()
    await client.wait_for("session.created", timeout=10)
    return client, (client.location or "").rsplit("/", 1)[-1]


async def assert_refuses_calls(http: aiohttp.ClientSession, base: str) -> None:
    async with realtime_client() as extra:
        response = await extra.connect(http, base + "/v1/realtime/calls", "")
        assert response.status == 503, await response.text()
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"]["code"] == "relay_overloaded"
    ready = await http.get(base + "/readyz")
    assert ready.status == 503 and (await ready.json())["status"] == "draining"


async def assert_audio_flows(app: web.Application, secs: float = 1.5) -> None:
    before = frames_received(app)
    assert before, "no call at the emulator"
    await asyncio.sleep(secs)
    after = frames_received(app)
    for call_id, count in before.items():
        delivered = (after.get(call_id, count) - count) / (secs * 50)
        assert delivered > 0.7, f"{call_id}: only {delivered:.0%} of its audio arrived"


def assert_recorded(app: web.Application, call_id: str, outcome: str) -> None:
    recorder = app[OPS].recorder
    assert recorder is not None
    folder = recorder.find(call_id)
    assert folder is not None
    metadata = read_metadata(folder)
    assert metadata is not None
    assert (metadata["status"], metadata["outcome"]) == ("complete", outcome), metadata


async def test_admin_drain_refuses_new_calls_and_ends_running_ones_at_the_bound(
    start_relay: RelayFactory, tmp_path: Path, hooks: Hooks, speech_48k: np.ndarray
) -> None:
    relay = await start_relay(**ops_settings(tmp_path, hooks))
    base = relay.url("").rstrip("/")
    client, call_id = await start_call(relay.http, relay.calls_url)
    client.source.play(speech_48k)
    try:
        refused = await relay.http.post(relay.url("/admin/drain"))
        assert refused.status == 401
        assert not relay.registry.draining
        started = time.monotonic()
        drained = await relay.http.post(relay.url("/admin/drain"), headers=AUTH)
        assert drained.status == 202, await drained.text()
        status = await drained.json()
        assert status["draining"] and status["calls"] == 1
        assert status["deadline"] == pytest.approx(time.time() + DRAIN_SECS, abs=1)

        await assert_refuses_calls(relay.http, base)
        await assert_audio_flows(relay.app)  # the running call keeps its audio
        assert relay.registry.get(call_id) is not None

        # The bound ends it cleanly: the caller is told, the recording is finalised and
        # call.ended is sent.
        await until(lambda: not len(relay.registry), DRAIN_SECS + 5, "drain bound")
        elapsed = time.monotonic() - started
        assert DRAIN_SECS - 0.5 < elapsed < DRAIN_SECS + 5
        await until(lambda: client.pc.connectionState == "closed", 10, "caller leg closed")
        await until(lambda: hooks.ended(), 10, "call.ended webhook")
        assert hooks.ended()[0]["call_id"] == call_id
        assert hooks.ended()[0]["data"]["outcome"] == "shutdown"
        await until(lambda: _complete(relay, call_id), 5, "recording finalised")
        assert_recorded(relay.app, call_id, "shutdown")

        after = await (await relay.http.get(relay.url("/admin/drain"), headers=AUTH)).json()
        assert after["draining"] and after["calls"] == 0
        await assert_refuses_calls(relay.http, base)  # a drain is not undone
    finally:
        await client.close()


async def test_a_call_that_hangs_up_during_a_drain_ends_as_a_hangup(
    start_relay: RelayFactory, tmp_path: Path, hooks: Hooks
) -> None:
    relay = await start_relay(**ops_settings(tmp_path, hooks, drain_timeout_secs=60.0))
    client, call_id = await start_call(relay.http, relay.calls_url)
    try:
        assert (await relay.http.post(relay.url("/admin/drain"), headers=AUTH)).status == 202
        await assert_audio_flows(relay.app, 1.0)
        hangup = await relay.http.post(relay.url(f"/v1/realtime/calls/{call_id}/hangup"))
        assert hangup.status == 200, await hangup.text()
        await until(lambda: not len(relay.registry), 5, "call ended")
        await until(lambda: hooks.ended(), 10, "call.ended webhook")
        assert hooks.ended()[0]["data"]["outcome"] == "hangup"
        await until(lambda: _complete(relay, call_id), 5, "recording finalised")
        assert_recorded(relay.app, call_id, "hangup")
    finally:
        await client.close()


async def test_drain_needs_the_admin_api(start_relay: RelayFactory) -> None:
    relay = await start_relay()  # no RELAY_ADMIN_TOKEN: the operator API is off
    response = await relay.http.post(relay.url("/admin/drain"), headers=AUTH)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "admin_api_disabled"
    assert (await relay.http.get(relay.url("/readyz"))).status == 200


async def test_sigterm_drains_before_shutting_down(
    tmp_path: Path, hooks: Hooks, speech_48k: np.ndarray
) -> None:
    """serve() (what ``realtime-relay serve`` runs): SIGTERM starts the drain, the
    server keeps answering (readyz 503, hangups), and it returns once the last call has
    hung up, well before the drain bound."""
    port = free_port()
    settings = replace(
        BASE_SETTINGS, port=port, **ops_settings(tmp_path, hooks, drain_timeout_secs=60.0)
    )
    app = build_app(settings)
    serving = asyncio.ensure_future(serve(app, settings))
    base = f"http://127.0.0.1:{port}"
    client: RealtimeClient | None = None
    try:
        async with aiohttp.ClientSession() as http:
            await _until_up(http, base, serving)
            client, call_id = await start_call(http, base + "/v1/realtime/calls")
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: app[REGISTRY].draining, 5, "SIGTERM starts the drain")
            await assert_refuses_calls(http, base)
            await assert_audio_flows(app, 1.0)
            assert not serving.done()
            started = time.monotonic()
            hangup = await http.post(f"{base}/v1/realtime/calls/{call_id}/hangup")
            assert hangup.status == 200
            await asyncio.wait_for(asyncio.shield(serving), 15)
            assert time.monotonic() - started < 15
        await until(lambda: hooks.ended(), 10, "call.ended webhook")
        assert hooks.ended()[0]["data"]["outcome"] == "hangup"
        assert_recorded(app, call_id, "hangup")  # the app's cleanup closed the recorder
    finally:
        if client is not None:
            await client.close()
        if not serving.done():
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal: end calls now
            await asyncio.wait_for(serving, 20)


async def _until_up(http: aiohttp.ClientSession, base: str, serving: asyncio.Future[Any]) -> None:
    for _ in range(100):
        assert not serving.done(), serving.exception()
        with contextlib.suppress(aiohttp.ClientError):
            if (await http.get(base + "/healthz")).status == 200:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(base)


def _complete(relay: RelayUnderTest, call_id: str) -> bool:
    recorder = relay.app[OPS].recorder
    folder = recorder.find(call_id) if recorder is not None else None
    metadata = read_metadata(folder) if folder is not None else None
    return metadata is not None and metadata.get("status") == "complete"


async def test_a_drain_reaches_every_shard_and_sigterm_then_stops_them(tmp_path: Path) -> None:
    """``serve --workers 2``: the shard that gets POST /admin/drain drains its sibling
    too (readyz answers 503 on both), and SIGTERM stops the drained process at once."""
    port = free_port()
    relay = start(
        ["serve", "--workers", "2", "--port", str(port)],
        {
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            "RELAY_ADMIN_TOKEN": ADMIN,
            "RELAY_DRAIN_TIMEOUT_SECS": "60",
        },
        tmp_path / "relay.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(f"{base}/healthz", relay)
        async with aiohttp.ClientSession() as http:
            for _ in range(50):  # a drain is idempotent: again until every shard is up
                drained = await http.post(f"{base}/admin/drain", headers=AUTH)
                assert drained.status == 202, await drained.text()
                if "X-Relay-Missing-Shards" not in drained.headers:
                    break
                await asyncio.sleep(0.2)
            assert "X-Relay-Missing-Shards" not in drained.headers
        seen: dict[str, int] = {}
        for _ in range(20):  # bounded: new connections land on either shard
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as ready:
                seen[ready.headers["X-Relay-Shard"]] = ready.status
                assert (await ready.json())["status"] == "draining"
            if len(seen) == 2:
                break
        assert seen == {"0": 503, "1": 503}, seen
        started = time.monotonic()
        relay.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(relay.wait, 20) == 0
        assert time.monotonic() - started < 10  # no call: nothing to wait for
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait(5)
    log = (tmp_path / "relay.log").read_text()
    assert "Traceback" not in log, log[-3000:]
