"""Why the WebSocket upstream exists: a relay whose egress to OpenAI allows only TCP to
443. ``realtime-relay serve`` runs in a network namespace of its own whose nftables
let it reach "OpenAI" (the emulator, on an address of its own) on TCP 443 and nothing
else; an aiortc caller reaches the relay as usual. With the default WebRTC upstream the
call cannot be set up (no UDP to OpenAI's media); with ``RELAY_UPSTREAM_TRANSPORT=
websocket`` the same relay makes the whole call: speech up, a transcript, the agent's
audio down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from netns import ClientNetwork, available
from support import PacedAudioSource, realtime_client
from test_relay_calls import speak_a_transcribed_turn

from relay.emulator import SESSIONS, create_emulator_app
from relay.emulator.settings import EmulatorSettings

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent / "realtime-relay"
KEY = "sk-egress-test"
RELAY_PORT = 8080


@dataclass
class Egress:
    net: ClientNetwork
    openai_ip: str
    emulator: TestServer


@pytest.fixture
async def egress() -> AsyncIterator[Egress]:
    """The relay's namespace, and the emulator on 443 of an address the relay may reach
    only on TCP 443."""
    reason = available()
    if reason is not None:
        pytest.fail(f"this test needs network namespaces: {reason}")
    net = ClientNetwork.create()
    openai_ip = net.host_ip.rsplit(".", 1)[0] + ".3"
    emulator: TestServer | None = None
    try:
        await asyncio.to_thread(
            subprocess.run,
            ["ip", "addr", "add", f"{openai_ip}/{net.prefix}", "dev", net.host_if],
            check=True,
        )
        net.exec(
            "nft",
            "-f",
            "-",
            stdin=f"""
table inet egress {{
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {openai_ip} tcp dport 443 accept
    ip daddr {openai_ip} drop
  }}
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {openai_ip} tcp sport 443 ct state established accept
    ip saddr {openai_ip} drop
  }}
}}
""",
        )
        settings = EmulatorSettings(ice_addresses=(openai_ip,), api_keys=(KEY,))
        emulator = TestServer(create_emulator_app(settings), host=openai_ip, port=443)
        await emulator.start_server()
        yield Egress(net, openai_ip, emulator)
    finally:
        if emulator is not None:
            await emulator.close()
        net.remove()


def _relay(egress: Egress, transport: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RELAY_"))}
    env |= {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": f"http://{egress.openai_ip}:443/v1",
        "RELAY_UPSTREAM_TRANSPORT": transport,
        "RELAY_OPEN": "1",
        "RELAY_ICE_ADDRESSES": egress.net.client_ip,
        "RELAY_NOISE_SUPPRESSION": "off",
        "RELAY_ICE_TIMEOUT_SECS": "4",
        "RELAY_MAX_LOOP_LAG_MS": "2000",
    }
    args = ["serve", "--host", egress.net.client_ip, "--port", str(RELAY_PORT), "--workers", "1"]
    with log.open("wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", egress.net.name, str(BIN), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _until_healthy(http: aiohttp.ClientSession, base: str, relay: Any, log: Path) -> None:
    for _ in range(200):
        assert relay.poll() is None, "the relay exited (see its log)"
        try:
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("the relay in its namespace did not answer")


async def _stop(relay: subprocess.Popen[bytes]) -> None:
    relay.terminate()
    try:
        await asyncio.to_thread(relay.wait, 15)
    except subprocess.TimeoutExpired:
        relay.kill()


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_https_only_egress(
    egress: Egress,
    transport: str,
    speech_48k: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The caller is on the test's side of the veth (not on loopback: the relay is not).
    host = egress.net.host_ip
    monkeypatch.setattr(
        aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [host] if use_ipv4 else []
    )
    log = tmp_path / "relay.log"
    relay = _relay(egress, transport, log)
    base = f"http://{egress.net.client_ip}:{RELAY_PORT}"
    try:
        async with aiohttp.ClientSession() as http:
            await _until_healthy(http, base, relay, log)
            async with realtime_client(PacedAudioSource()) as client:
                response = await client.connect(http, f"{base}/v1/realtime/calls", "")
                body = await response.text()
                if transport == "webrtc":
                    # OpenAI's media is out of reach: the set-up fails, and says so
                    assert response.status == 504, body
                    assert "upstream_timeout" in body
                    return
                assert response.status == 201, body
                await client.wait_for("session.created", timeout=10)
                await speak_a_transcribed_turn(client, speech_48k)
                await client.wait_for("output_audio_buffer.stopped", timeout=30)
                assert client.sink.loud_frames() > 25, "the agent's audio did not arrive"
        emulated = egress.emulator.app[SESSIONS].latest()
        assert emulated is not None and emulated.transport == "websocket"
        assert emulated.received.loud_frames() > 50
    finally:
        await _stop(relay)
    assert "Traceback" not in log.read_text()
