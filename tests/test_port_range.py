"""RELAY_UDP_PORTS: every host candidate of both legs is bound within the range (read
from the relay's SDP answer and its own offer to OpenAI); a range with no free port,
or RELAY_ICE_ADDRESSES naming an address this host does not have, fails the call at
once with an error that names the leg and the cause (not a 504 blaming OpenAI after
RELAY_ICE_TIMEOUT_SECS)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from relay_fixtures import RelayFactory, RelayUnderTest
from support import RealtimeClient, realtime_client

from relay.config import EmulatorSettings

LOW, HIGH = 42000, 42009


def host_udp_ports(sdp: str) -> list[int]:
    """Ports of the UDP host candidates of an SDP (once each: BUNDLE repeats them in
    every media section)."""
    ports: list[int] = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if fields[2].lower() == "udp" and fields[7] == "host":
                ports.append(int(fields[5]))
    return sorted(set(ports))


@pytest.fixture
def occupied_range() -> Iterator[tuple[int, int]]:
    """A two-port range with both ports taken by someone else."""
    low, high = 42100, 42101
    taken = []
    for port in range(low, high + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        taken.append(sock)
    yield low, high
    for sock in taken:
        sock.close()


async def test_host_candidates_of_both_legs_are_in_the_range(start_relay: RelayFactory) -> None:
    relay = await start_relay(udp_ports=f"{LOW}-{HIGH}")
    calls = []
    async with realtime_client() as first, realtime_client() as second:
        for client in (first, second):
            response = await client.connect(relay.http, relay.calls_url, "")
            assert response.status == 201, await response.text()
            answer = client.pc.remoteDescription.sdp
            caller_ports = host_udp_ports(answer)
            assert caller_ports, answer
            assert all(LOW <= port <= HIGH for port in caller_ports), caller_ports
            call = relay.registry.get_call(client.location.rsplit("/", 1)[-1])
            upstream_ports = host_udp_ports(call.upstream_pc.localDescription.sdp)
            assert upstream_ports and all(LOW <= p <= HIGH for p in upstream_ports)
            calls.append((call, caller_ports + upstream_ports))
            await client.wait_for("session.created", timeout=15)
    used = [port for _, ports in calls for port in ports]
    assert len(used) == len(set(used)), f"two sockets on one port: {used}"


async def test_the_range_holds_as_many_legs_as_ports(start_relay: RelayFactory) -> None:
    """Four ports: one call takes two (caller and upstream leg), a second call the other
    two; each closed call gives its ports back."""
    relay = await start_relay(udp_ports="42200-42203")
    for _ in range(2):
        async with realtime_client() as a, realtime_client() as b:
            for client in (a, b):
                response = await client.connect(relay.http, relay.calls_url, "")
                assert response.status == 201, await response.text()
            for client in (a, b):
                await client.wait_for("session.created", timeout=15)
            for view in relay.registry.list():
                await relay.registry.get_call(view.id).close("hangup")


async def _refused_call(
    relay: RelayUnderTest, caplog: pytest.LogCaptureFixture
) -> tuple[int, dict[str, Any], float]:
    """An offer the relay cannot take: its status, error and how long it took."""
    client = RealtimeClient()
    try:
        started = time.monotonic()
        with caplog.at_level(logging.ERROR):
            response = await client.connect(relay.http, relay.calls_url, "")
        elapsed = time.monotonic() - started
        body = await response.json()
    finally:
        await client.close()
    assert elapsed < 2.0, f"took {elapsed:.1f} s: {body}"
    return response.status, body["error"], elapsed


async def test_an_exhausted_range_fails_at_once_naming_the_leg(
    start_relay: RelayFactory,
    occupied_range: tuple[int, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    low, high = occupied_range
    relay = await start_relay(udp_ports=f"{low}-{high}", ice_timeout_secs=3.0)
    status, error, _ = await _refused_call(relay, caplog)
    assert status == 503, error
    assert error["code"] == "media_port_unavailable", error
    assert "caller leg" in error["message"] and f"{low}-{high}" in error["message"], error
    assert "in use" in error["message"]
    assert "OpenAI did not" not in error["message"]
    assert any("caller leg" in r.getMessage() for r in caplog.records), caplog.text


async def test_an_ice_address_not_on_this_host_fails_at_once_naming_it(
    start_relay: RelayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """RELAY_ICE_ADDRESSES set to a public address (198.51.100.7, on no interface here)
    instead of RELAY_ICE_PUBLIC_ADDRESSES."""
    relay = await start_relay(
        ice_addresses=("198.51.100.7",),
        ice_timeout_secs=3.0,
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",)),
    )
    status, error, _ = await _refused_call(relay, caplog)
    assert status == 503, error
    message = error["message"]
    assert "198.51.100.7" in message and "RELAY_ICE_PUBLIC_ADDRESSES" in message, message
    assert " leg " in message
    assert any("198.51.100.7" in r.getMessage() for r in caplog.records), caplog.text
