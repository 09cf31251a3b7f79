"""Caller reconnect from real Chromium: its network namespace's link goes down for 3 s
mid-call. The relay notices the caller gone (WebRTC: its media timeout, 1 s here, then an
unanswered check; WebSocket: its heartbeat, as often) and keeps the call; when the link
is back the page's client attaches a new leg (a new peer connection, or a new socket)
with the call's resume token. The same call carries on: the same call id,
audio both ways after (counted by the relay), one upstream session all along (counted
by the emulator), and the page said "Reconnecting…" meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from netns import ClientNetwork
from playwright.async_api import expect
from relay_fixtures import ServeRelay
from tcp_only import chromium_inside, relay_https, require_netns

from relay.embedded import EMULATOR
from relay.emulator.app import SESSIONS

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]

BLIP_SECS = 3.0
#: Agent audio the page received: WebRTC, packets on the current connection (its
#: getStats); WebSocket, frames since the call began (the transport's counters).
RECEIVED_JS = """async () => {
  const client = window.realtimeApp.client;
  const pc = client.peerConnection;
  if (!pc) return (await client.getStats())?.framesReceived ?? 0;
  let n = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') n = r.packetsReceived;
  });
  return n;
}"""


@pytest.fixture
async def client_net() -> Any:
    require_netns()
    net = ClientNetwork.create()
    yield net
    net.remove()


def link(net: ClientNetwork, up: bool) -> None:
    net.exec("ip", "link", "set", "vc0", "up" if up else "down")


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_a_three_second_blip_resumes_the_same_call(
    transport: str,
    client_net: ClientNetwork,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    relay = await relay_https(
        client_net,
        serve_relay,
        tmp_path,
        8443,
        caller_grace_secs=15.0,
        media_timeout_secs=1.0,
    )
    sessions = relay.app[EMULATOR][SESSIONS]
    browser = await chromium_inside(client_net, launch, call_wav)
    page = await open_page(browser, relay.url("/"), config={"transport": transport})
    await page.page.get_by_role("button", name="Start call").click()
    await expect(page.page.locator("#status-text")).to_have_text("Connected", timeout=20000)
    call_id = (await page.state())["callId"]
    call = relay.registry.get_call(call_id)
    assert call is not None
    await wait_until(
        lambda: call.caller_audio.frames_in > 100 and call.caller.frames_out > 100,
        40,
        "audio both ways before the blip",
    )
    # Every status the page's client goes through (a reconnect may be over in 100 ms).
    await page.page.evaluate(
        "() => { window.__statuses = [];"
        " window.realtimeApp.client.subscribe((s) => window.__statuses.push(s.status)); }"
    )
    received_before = await page.page.evaluate(RECEIVED_JS)
    link(client_net, up=False)
    await asyncio.sleep(BLIP_SECS)
    assert call.grace.waiting, "the relay did not notice the caller gone"
    link(client_net, up=True)
    back_at = time.monotonic()
    await wait_until(lambda: call.grace.resumes >= 1, 15, "the call to resume")
    await page.wait_state("s.status === 'connected'", 10)
    resumed_secs = time.monotonic() - back_at
    statuses = await page.page.evaluate("window.__statuses")
    assert "reconnecting" in statuses and statuses[-1] == "connected", statuses
    await expect(page.page.locator("#status-text")).to_have_text("Connected")
    # The same call, the same upstream session.
    assert (await page.state())["callId"] == call_id
    assert relay.registry.get_call(call_id) is call and call.state == "active"
    # the path the resumed leg took: UDP on this open network, or the WebSocket
    assert call.snapshot()["transport"] == {"webrtc": "udp", "websocket": "websocket"}[transport]
    assert sessions.created == 1, "a second upstream session was opened"
    # Audio both ways on the new leg: the relay counts the caller's frames and the agent
    # packets it sends; the page counts the packets it receives.
    frames_in = call.caller_audio.frames_in
    await wait_until(lambda: call.caller_audio.frames_in > frames_in + 100, 15, "caller audio")
    await wait_until(lambda: call.caller.frames_out > 50, 30, "agent audio to the new leg")
    deadline = time.monotonic() + 10
    if transport == "webrtc":  # a new connection: its counters start again
        received_before = 0
    while (received := await page.page.evaluate(RECEIVED_JS)) <= received_before + 50:
        assert time.monotonic() < deadline, f"the page's new connection received {received}"
        await asyncio.sleep(0.2)
    print(f"resumed {resumed_secs:.2f} s after the link came back")
    allowed = ("ERR_NETWORK_CHANGED", "ERR_ADDRESS_UNREACHABLE", "ERR_INTERNET_DISCONNECTED")
    assert page.unexpected_errors(allowed) == []
