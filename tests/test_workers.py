"""`realtime-relay serve --workers 2`: two shards behind one port. Whichever shard a
request lands on, follow-ups reach the shard that owns the call."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from support import PacedAudioSource, RealtimeClient
from test_process import free_port, start, wait_healthy

RELAY_KEY = "relay-workers-test-key-0123456789"
ADMIN = "workers-admin-token-0123456789"


async def test_two_shards_route_follow_ups_to_the_owner(tmp_path: Path) -> None:
    port = free_port()
    relay = start(
        ["serve", "--workers", "2", "--port", str(port)],
        {
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            "RELAY_NOISE_SUPPRESSION": "off",
            "RELAY_API_KEY": RELAY_KEY,
            "RELAY_ADMIN_TOKEN": ADMIN,
        },
        tmp_path / "relay.log",
    )
    base = f"http://127.0.0.1:{port}"
    clients: list[RealtimeClient] = []
    try:
        await wait_healthy(f"{base}/healthz", relay)
        owners: dict[str, str] = {}
        used_foreign_secret = False
        for _ in range(16):  # bounded: new connections land on either shard
            async with aiohttp.ClientSession() as http:
                minted = await http.post(
                    f"{base}/v1/realtime/client_secrets",
                    json={"session": {"type": "realtime", "instructions": "Sharded."}},
                    headers={"Authorization": f"Bearer {RELAY_KEY}"},
                )
                assert minted.status == 200
                secret = (await minted.json())["value"]
                minted_on = minted.headers["X-Relay-Shard"]
            client = RealtimeClient(PacedAudioSource())
            clients.append(client)
            async with aiohttp.ClientSession() as http:
                response = await client.connect(http, f"{base}/v1/realtime/calls", secret)
                assert response.status == 201, await response.text()
                call_id = response.headers["Location"].rsplit("/", 1)[-1]
                owners[call_id] = response.headers["X-Relay-Shard"]
                used_foreign_secret |= owners[call_id] != minted_on
            created = await client.wait_for("session.created", timeout=10)
            assert created["session"]["instructions"] == "Sharded."
            if len(set(owners.values())) == 2 and used_foreign_secret and len(owners) >= 4:
                break
        assert set(owners.values()) == {"0", "1"}, owners
        assert used_foreign_secret, "no call used a secret minted by the other shard"
        assert all(cid.startswith(f"rtc_s{shard}_") for cid, shard in owners.items())

        async with aiohttp.ClientSession() as http:  # any shard answers for all of them
            auth = {"Authorization": f"Bearer {ADMIN}"}
            listed = await http.get(f"{base}/api/calls", headers=auth)
            assert listed.status == 200
            assert {c["id"] for c in (await listed.json())["data"]} == set(owners)
            metrics = await (await http.get(f"{base}/metrics")).text()
            active = {
                sample.labels["shard"]: sample.value
                for family in text_string_to_metric_families(metrics)
                for sample in family.samples
                if sample.name == "realtime_relay_calls_active"
            }
            assert sum(active.values()) == len(owners) and set(active) == {"0", "1"}
            for call_id in list(owners) * 3:  # 12+ connections: both shards forward some
                async with aiohttp.ClientSession() as ws_http:
                    ws = await ws_http.ws_connect(
                        f"{base}/api/calls/{call_id}/events",
                        protocols=("relay-monitor", f"bearer.{ADMIN}"),
                    )
                    snapshot = await ws.receive_json(timeout=5)
                    assert snapshot["type"] == "relay.snapshot"
                    assert snapshot["call"]["id"] == call_id
                    await ws.close()
        for call_id, owner in owners.items():
            async with aiohttp.ClientSession() as http:
                response = await http.post(
                    f"{base}/v1/realtime/calls/{call_id}/hangup",
                    headers={"Authorization": f"Bearer {RELAY_KEY}"},
                )
                assert response.status == 200, await response.text()
                if response.headers["X-Relay-Shard"] != owner:
                    assert response.headers["X-Relay-Owner-Shard"] == owner
        async with aiohttp.ClientSession() as http:
            for call_id in owners:  # every call is gone, whichever shard is asked
                response = await http.post(
                    f"{base}/v1/realtime/calls/{call_id}/hangup",
                    headers={"Authorization": f"Bearer {RELAY_KEY}"},
                )
                assert response.status == 404
        # A request landing on shard 0 for a call of shard 1 is answered by shard 1.
        crossed = False
        for _ in range(20):
            async with aiohttp.ClientSession() as http:
                response = await http.post(
                    f"{base}/v1/realtime/calls/rtc_s1_{'0' * 32}/hangup",
                    headers={"Authorization": f"Bearer {RELAY_KEY}"},
                )
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "call_not_found"
                if response.headers["X-Relay-Shard"] == "0":
                    assert response.headers["X-Relay-Owner-Shard"] == "1"
                    crossed = True
                    break
        assert crossed, "no request landed on shard 0 in 20 connections"
    finally:
        for client in clients:
            await client.close()
        relay.send_signal(signal.SIGTERM)
        try:
            assert relay.wait(20) == 0
        except subprocess.TimeoutExpired:
            relay.kill()
            raise
    log = (tmp_path / "relay.log").read_text()
    assert "Traceback" not in log, log[-3000:]
