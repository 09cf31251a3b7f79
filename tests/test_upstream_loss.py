"""OpenAI's side dies mid-call (its process killed): the browser is told within 2 s,
with an ``error`` event, and the call ends cleanly (no 30 s of dead air until ICE
consent expires)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from relay_fixtures import RelayFactory
from support import PacedAudioSource, realtime_client
from test_process import free_port, start, wait_healthy

from relay import aiortc_patches
from relay.config import Secret

KEY = "sk-upstream-loss-test"


@pytest.mark.parametrize("upstream_transport", ["webrtc", "websocket"])
async def test_a_dead_upstream_is_reported_to_the_browser_within_two_seconds(
    start_relay: RelayFactory, tmp_path: Path, upstream_transport: str
) -> None:
    port = free_port()
    emulator = start(
        ["emulator", "--port", str(port)],
        {"RELAY_EMULATOR_API_KEYS": KEY, "RELAY_ICE_ADDRESSES": "127.0.0.1"},
        tmp_path / "emulator.log",
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", emulator)
        relay = await start_relay(
            openai_api_key=Secret(KEY),
            openai_base_url=f"http://127.0.0.1:{port}/v1",
            upstream_transport=upstream_transport,
        )
        async with realtime_client(PacedAudioSource()) as client:
            response = await client.connect(relay.http, relay.calls_url, "")
            assert response.status == 201, await response.text()
            call_id = response.headers["Location"].rsplit("/", 1)[-1]
            call = relay.registry.get_call(call_id)
            await client.wait_for("session.created", timeout=10)
            await asyncio.sleep(1.0)  # a call in full flow
            emulator.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            error = await client.wait_for("error", timeout=5)
            told_after = time.monotonic() - killed
            assert error["error"]["code"] == "upstream_connection_lost"
            assert "OpenAI" in error["error"]["message"]
            assert told_after < 2.0, f"the browser learnt after {told_after:.1f} s"
            await asyncio.wait_for(call.wait_closed(), 3)
            assert call.outcome == "upstream_failed"
            assert relay.registry.get(call_id) is None
    finally:
        if emulator.poll() is None:
            emulator.kill()
        emulator.wait(5)


async def test_a_live_quiet_upstream_is_not_mistaken_for_a_dead_one(
    start_relay: RelayFactory,
) -> None:
    """The probe only ends calls whose upstream stopped answering: a call whose agent
    audio the relay stops receiving for a while (here: paused at the relay) goes on."""
    relay = await start_relay()
    async with realtime_client(PacedAudioSource()) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        call = relay.registry.get_call(response.headers["Location"].rsplit("/", 1)[-1])
        await client.wait_for("session.created", timeout=10)
        for transceiver in call.upstream_pc.getTransceivers():  # agent audio stops here
            aiortc_patches.audio_buffer_of(transceiver.receiver).packet_sink = _ignore
        await asyncio.sleep(3)  # several probes: all answered
        assert call.state == "active"
        assert "error" not in client.types()


def _ignore(payload: bytes, rtp_timestamp: int) -> None:
    return
