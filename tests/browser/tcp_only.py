"""What the network browser tests share: a client network that lets only TCP to the
relay's port 443 through (profile b of test_network_profiles), the relay with HTTPS
built in on a namespace's host side, and Chromium living inside a namespace."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import CHROMIUM
from certs import self_signed
from netns import ClientNetwork, available
from playwright.async_api import expect
from relay_fixtures import ServedRelay, ServeRelay


@pytest.fixture
async def tcp_only_net() -> AsyncIterator[ClientNetwork]:
    """A client namespace reaching the relay at a public-looking address (Chromium will
    not open ICE-TCP to a private address on a port below 1024)."""
    require_netns()
    net = ClientNetwork.create(public=True)
    yield net
    net.remove()


def require_netns() -> None:
    """Fail (never skip) where namespaces, veths or nftables do not work."""
    reason = available()
    if reason is not None:
        pytest.fail(f"this test needs network namespaces: {reason}")


async def relay_https(
    net: ClientNetwork, serve_relay: ServeRelay, folder: Path, port: int, **overrides: Any
) -> ServedRelay:
    """The relay on ``net``'s host side, HTTPS on ``port`` with a self-signed certificate."""
    cert, key = self_signed(folder, net.host_ip)
    return await serve_relay(
        host=net.host_ip,
        port=port,
        tls_cert=str(cert),
        tls_key=str(key),
        ice_addresses=(net.host_ip, "127.0.0.1"),
        **overrides,
    )


async def relay_on_443(
    net: ClientNetwork, serve_relay: ServeRelay, folder: Path, **overrides: Any
) -> ServedRelay:
    """:func:`relay_https` on 443; from then on the client may open TCP connections to
    that port and nothing else."""
    relay = await relay_https(net, serve_relay, folder, 443, **overrides)
    net.allow_only_tcp_to(443)
    return relay


async def chromium_on(
    wrapper: Path, address: str, launch: Any, wav: Path, *extra: str, trust_spki: str = ""
) -> Any:
    """Chromium run by ``wrapper`` (a namespace's), with ``wav`` as its microphone,
    resolving nothing but ``address``; it accepts any certificate (the test's own
    self-signed one), or with ``trust_spki`` only those of that key (base64 SHA-256 of a
    SubjectPublicKeyInfo: a TLS-inspecting proxy's CA, whose leaves share its key)."""
    trust = (
        f"--ignore-certificate-errors-spki-list={trust_spki}"
        if trust_spki
        else "--ignore-certificate-errors"
    )
    return await launch(
        wav=wav,
        executable=str(wrapper),
        args=(trust, f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {address}", *extra),
    )


async def chromium_inside(
    net: ClientNetwork, launch: Any, wav: Path, *extra: str, trust_spki: str = ""
) -> Any:
    """Chromium living on ``net``, with ``wav`` as its microphone."""
    assert CHROMIUM is not None
    return await chromium_on(
        net.wrapper(CHROMIUM), net.host_ip, launch, wav, *extra, trust_spki=trust_spki
    )


async def run_check_page(browser: Any, open_page: Any, relay: ServedRelay) -> tuple[Any, Any]:
    """/check opened by ``browser``; returns its page and ``window.relayCheck.done``
    (the results of each check, and the verdict's level)."""
    check = await open_page(browser, relay.url("/check"), goto=False)
    await check.page.goto(relay.url("/check"))
    return check.page, await check.page.evaluate("window.relayCheck.done")


async def check_says_only_websocket_works(browser: Any, open_page: Any, relay: ServedRelay) -> Any:
    """/check from ``browser``: HTTPS and the WebSocket work, WebRTC does not (UDP nor
    TCP), a warning whose verdict names the WebSocket. Returns the check page."""
    check, done = await run_check_page(browser, open_page, relay)
    results = done["results"]
    assert results["https"]["ok"] and results["websocket"]["ok"], results
    assert not results["webrtc_udp"]["ok"] and not results["webrtc_tcp"]["ok"], results
    assert done["level"] == "warn"
    await expect(check.locator("#verdict")).to_contain_text("over a WebSocket")
    return check


async def calls_by_transport(relay: ServedRelay) -> dict[str, float]:
    """``realtime_relay_calls_by_transport_total`` as ``GET /metrics`` shows it."""
    async with relay.http.get(relay.url("/metrics"), ssl=False) as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    found = re.findall(
        r'^realtime_relay_calls_by_transport_total\{transport="([^"]+)"\} (\S+)$', text, re.M
    )
    return {name: float(count) for name, count in found}
