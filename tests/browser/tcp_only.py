"""A client network that lets only TCP to the relay's port 443 through (profile b of
test_network_profiles): the relay on a public-looking address with HTTPS built in, and
Chromium inside the client's namespace. Shared by the ICE-TCP browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import CHROMIUM
from certs import self_signed
from netns import ClientNetwork, available
from relay_fixtures import ServedRelay, ServeRelay


@pytest.fixture
async def tcp_only_net() -> AsyncIterator[ClientNetwork]:
    """A client namespace reaching the relay at a public-looking address (Chromium will
    not open ICE-TCP to a private address on a port below 1024)."""
    reason = available()
    if reason is not None:
        pytest.fail(f"this test needs network namespaces: {reason}")
    net = ClientNetwork.create(public=True)
    yield net
    net.remove()


async def relay_on_443(
    net: ClientNetwork, serve_relay: ServeRelay, folder: Path, **overrides: Any
) -> ServedRelay:
    """The relay on ``net``'s host side, port 443 with a self-signed certificate; from
    then on the client may open TCP connections to that port and nothing else."""
    cert, key = self_signed(folder, net.host_ip)
    relay = await serve_relay(
        host=net.host_ip,
        port=443,
        tls_cert=str(cert),
        tls_key=str(key),
        ice_addresses=(net.host_ip, "127.0.0.1"),
        **overrides,
    )
    net.allow_only_tcp_to(443)
    return relay


async def chromium_inside(net: ClientNetwork, launch: Any, wav: Path) -> Any:
    """Chromium living on ``net``, with ``wav`` as its microphone."""
    assert CHROMIUM is not None
    return await launch(
        wav=wav,
        executable=str(net.wrapper(CHROMIUM)),
        args=(
            "--ignore-certificate-errors",  # the test's own self-signed certificate
            f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {net.host_ip}",
        ),
    )
