"""The real processes: `realtime-relay emulator` and `realtime-relay serve` against it,
a call through them, SIGTERM with the call up, and no secret in any log line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from support import PacedAudioSource, RealtimeClient

OPENAI_KEY = "sk-proc-test-0123456789abcdefSECRET"
RELAY_KEY = "relay-proc-test-key-0123456789SECRET"
BIN = Path(sys.executable).parent / "realtime-relay"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "process exited early"
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | env
    with log.open("wb") as out:
        return subprocess.Popen([str(BIN), *args], env=full_env, stdout=out, stderr=out)


async def test_sigterm_closes_calls_and_no_secret_is_logged(tmp_path: Path) -> None:
    emulator_port, relay_port = free_port(), free_port()
    emulator = start(
        ["emulator", "--port", str(emulator_port)],
        {"RELAY_EMULATOR_API_KEYS": OPENAI_KEY, "RELAY_ICE_ADDRESSES": "127.0.0.1"},
        tmp_path / "emulator.log",
    )
    relay = start(
        ["serve", "--port", str(relay_port)],
        {
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{emulator_port}/v1",
            "RELAY_API_KEY": RELAY_KEY,
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            "RELAY_NOISE_SUPPRESSION": "off",
        },
        tmp_path / "relay.log",
    )
    base = f"http://127.0.0.1:{relay_port}"
    client = RealtimeClient(PacedAudioSource())
    try:
        await wait_healthy(f"http://127.0.0.1:{emulator_port}/healthz", emulator)
        await wait_healthy(f"{base}/healthz", relay)
        async with aiohttp.ClientSession() as http:
            minted = await http.post(
                f"{base}/v1/realtime/client_secrets",
                json={"session": {"type": "realtime"}},
                headers={"Authorization": f"Bearer {RELAY_KEY}"},
            )
            secret = (await minted.json())["value"]
            response = await client.connect(http, f"{base}/v1/realtime/calls", secret)
            assert response.status == 201, await response.text()
            await client.wait_for("session.created", timeout=10)
            sent = time.monotonic()
            relay.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(relay.wait, 20)
            assert code == 0
            assert time.monotonic() - sent < 15
        deadline = time.monotonic() + 10
        while client.pc.connectionState != "closed" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert client.pc.connectionState == "closed", "the relay did not close the caller leg"
    finally:
        await client.close()
        for proc in (relay, emulator):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    relay_log = (tmp_path / "relay.log").read_text()
    emulator_log = (tmp_path / "emulator.log").read_text()
    assert "ended: shutdown" in relay_log, relay_log[-3000:]
    assert "Traceback" not in relay_log, relay_log[-3000:]
    for log in (relay_log, emulator_log):
        assert OPENAI_KEY not in log and RELAY_KEY not in log
        assert secret not in log
