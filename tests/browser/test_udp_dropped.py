"""The transport choice when UDP is silently dropped (no ICMP error: WebRTC's UDP checks
meet nothing but silence) and TCP to the relay gets through: the call is up within a
stated bound, on the path the network leaves.

* with the relay's ICE-TCP (its default): WebRTC over TCP on the page's port, up within
  :data:`ICE_TCP_BOUND_SECS` of the click (ICE tries UDP and TCP at once, so UDP's
  silence costs nothing);
* without it (a relay behind an HTTPS load balancer): WebRTC cannot connect, and the
  page hangs that attempt up ``webrtcTimeoutMs`` (5 s) after the relay's answer and
  opens the WebSocket: up within :data:`FALLBACK_BOUND_SECS`.

The README ("Choice in the browser") states the same bounds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from netns import ClientNetwork
from playwright.async_api import expect
from relay_fixtures import ServeRelay
from tcp_only import chromium_inside, relay_https, require_netns

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Click to "Connected" over ICE-TCP with UDP dropped.
ICE_TCP_BOUND_SECS = 5.0
#: Click to "Connected" over the WebSocket: the 5 s WebRTC attempt, the set-ups around it.
FALLBACK_BOUND_SECS = 10.0


@pytest.fixture
async def udp_dropped_net() -> AsyncIterator[ClientNetwork]:
    require_netns()
    net = ClientNetwork.create(public=True)
    net.drop_udp()
    yield net
    net.remove()


@pytest.mark.parametrize(
    ("ice_tcp", "page_says", "relay_says", "bound"),
    [
        (True, "via WebRTC (TCP)", "tcp", ICE_TCP_BOUND_SECS),
        (False, "via WebSocket", "websocket", FALLBACK_BOUND_SECS),
    ],
    ids=["ice-tcp", "no-ice-tcp"],
)
async def test_call_is_up_within_the_bound_when_udp_is_dropped(
    ice_tcp: bool,
    page_says: str,
    relay_says: str,
    bound: float,
    udp_dropped_net: ClientNetwork,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    net = udp_dropped_net
    relay = await relay_https(net, serve_relay, tmp_path, 443, ice_tcp=ice_tcp)
    browser = await chromium_inside(net, launch, call_wav)
    page = await open_page(browser, relay.url("/"))
    p = page.page
    started = time.monotonic()
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=30000)
    took = time.monotonic() - started
    await expect(p.locator("#transport")).to_have_text(page_says)
    call = relay.registry.get_call((await page.state())["callId"])
    assert call is not None and call.snapshot()["transport"] == relay_says
    await wait_until(
        lambda: call.caller_audio.frames_in > 50 and call.caller.frames_out > 25,
        25,
        "audio both ways",
    )
    print(f"\n{relay_says}: connected {took:.2f} s after the click (bound {bound} s)")
    assert took < bound, f"the call took {took:.1f} s to come up (bound {bound} s)"
