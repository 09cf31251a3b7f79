"""A full call from real Chromium on the networks the relay's users are on, each a
network namespace the test builds (veth + nftables), the relay outside it.

(a) an open network: UDP to the relay works;
(b) a locked-down network: only TCP to the relay's page port (443, HTTPS built in)
    gets through, no UDP at all, no other port: media goes over ICE-TCP on that port.

Each: audio both ways (checked from the relay's side: caller frames in, agent frames
out to the browser) and the user's transcript on the page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import CHROMIUM, wait_until
from certs import self_signed
from netns import ClientNetwork, available
from playwright.async_api import expect
from relay_fixtures import ServeRelay

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NO_NETNS = available()


@pytest.fixture
async def private_net() -> AsyncIterator[ClientNetwork]:
    """A client on a private network next to the relay (10.77.n.0/24)."""
    if NO_NETNS is not None:
        pytest.fail(f"network profiles need network namespaces: {NO_NETNS}")
    net = ClientNetwork.create()
    yield net
    net.remove()


@pytest.fixture
async def public_net() -> AsyncIterator[ClientNetwork]:
    """A client reaching the relay at a public-looking address (see ClientNetwork)."""
    if NO_NETNS is not None:
        pytest.fail(f"network profiles need network namespaces: {NO_NETNS}")
    net = ClientNetwork.create(public=True)
    yield net
    net.remove()


async def _call_from(
    net: ClientNetwork, relay: Any, launch: Any, open_page: Any, wav: Path
) -> tuple[Any, Any]:
    """Start a call on the relay's page from Chromium inside ``net``; returns the page
    and the relay's call once audio flows both ways."""
    assert CHROMIUM is not None
    browser = await launch(
        wav=wav,
        executable=str(net.wrapper(CHROMIUM)),
        args=(
            "--ignore-certificate-errors",  # the test's own self-signed certificate
            f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {net.host_ip}",
        ),
    )
    page = await open_page(browser, relay.url("/"))
    await page.page.get_by_role("button", name="Start call").click()
    await expect(page.page.locator("#status-text")).to_have_text("Connected", timeout=20000)
    call_id = (await page.state())["callId"]
    call = relay.registry.get_call(call_id)
    assert call is not None

    def flowing() -> bool:
        return call.caller_audio.frames_in > 100 and call.downlink.packets_sent > 100

    await wait_until(flowing, 20, "audio both ways through the relay")
    return page, call


async def _assert_transcript(page: Any) -> None:
    state = await page.wait_state(
        "s.messages.some((m) => m.role === 'user' && m.final && m.text)", 30
    )
    assert any(m["role"] == "user" and m["text"] for m in state["messages"])


async def test_profile_a_open_network_uses_udp(
    private_net: ClientNetwork,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, private_net.host_ip)
    relay = await serve_relay(
        host=private_net.host_ip,
        port=8443,
        tls_cert=str(cert),
        tls_key=str(key),
        ice_addresses=(private_net.host_ip, "127.0.0.1"),
    )
    page, call = await _call_from(private_net, relay, launch, open_page, call_wav)
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    assert pair is not None and pair["protocol"] == "udp", pair
    await _assert_transcript(page)


async def test_profile_b_only_tcp_to_the_page_port_uses_ice_tcp(
    public_net: ClientNetwork,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, public_net.host_ip)
    relay = await serve_relay(
        host=public_net.host_ip,
        port=443,
        tls_cert=str(cert),
        tls_key=str(key),
        ice_addresses=(public_net.host_ip, "127.0.0.1"),
    )
    public_net.allow_only_tcp_to(443)
    page, call = await _call_from(public_net, relay, launch, open_page, call_wav)
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    assert pair is not None and pair["protocol"] == "tcp", pair
    assert pair["local"] == f"{public_net.host_ip}:443"
    await _assert_transcript(page)
