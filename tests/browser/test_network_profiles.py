"""A full call from real Chromium on the networks the relay's users are on, each a
network namespace the test builds (veth + nftables), the relay outside it.

(a) an open network: UDP to the relay works;
(b) a locked-down network: only TCP to the relay's page port (443, HTTPS built in)
    gets through, no UDP at all, no other port: media goes over ICE-TCP on that port.
(c) TURN: the client reaches only the relay's page port and coturn's TCP port (no UDP,
    the relay's ICE-TCP off): the page gets TURN credentials from the relay
    (``POST /api/turn_credentials``) and media goes browser -TCP-> coturn -UDP-> relay.
(e) the relay behind 1:1 NAT: the relay runs (``realtime-relay serve``, its own
    process) in a namespace of its own on a private address; the test's namespace
    routes and DNATs a public address (198.51.100.0/24) to it; the relay announces the
    public address (RELAY_ICE_PUBLIC_ADDRESSES); the client reaches only that address.

Each: audio both ways (checked from the relay's side: caller frames in, agent frames
out to the browser) and the user's transcript on the page."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from browser_harness import CHROMIUM, wait_until
from certs import self_signed
from netns import ClientNetwork, NattedRelay, TurnServer
from playwright.async_api import expect
from relay_fixtures import ServeRelay
from tcp_only import calls_by_transport, chromium_on, relay_https, require_netns, run_check_page

from relay.config import Secret

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
async def private_net() -> AsyncIterator[ClientNetwork]:
    """A client on a private network next to the relay (10.77.n.0/24)."""
    require_netns()
    net = ClientNetwork.create()
    yield net
    net.remove()


@pytest.fixture
async def public_net() -> AsyncIterator[ClientNetwork]:
    """A client reaching the relay at a public-looking address (see ClientNetwork)."""
    require_netns()
    net = ClientNetwork.create(public=True)
    yield net
    net.remove()


async def _open_call(
    wrapper: Path, address: str, url: str, launch: Any, open_page: Any, wav: Path
) -> tuple[Any, str]:
    """Chromium run by ``wrapper`` (inside a namespace) opens ``url`` (at ``address``)
    and starts a call; returns the page and the call's id once it is connected."""
    browser = await chromium_on(wrapper, address, launch, wav)
    page = await open_page(browser, url)
    await page.page.get_by_role("button", name="Start call").click()
    await expect(page.page.locator("#status-text")).to_have_text("Connected", timeout=20000)
    return page, (await page.state())["callId"]


async def _call_from(
    net: ClientNetwork, relay: Any, launch: Any, open_page: Any, wav: Path
) -> tuple[Any, Any]:
    """Start a call on the relay's page from Chromium inside ``net``; returns the page
    and the relay's call once audio flows both ways."""
    assert CHROMIUM is not None
    wrapper = net.wrapper(CHROMIUM)
    page, call_id = await _open_call(wrapper, net.host_ip, relay.url("/"), launch, open_page, wav)
    call = relay.registry.get_call(call_id)
    assert call is not None

    def flowing() -> bool:
        return call.caller_audio.frames_in > 100 and call.downlink.packets_sent > 100

    await wait_until(flowing, 20, "audio both ways through the relay")
    return page, call


async def _hang_up(page: Any, relay: Any) -> None:
    """End the call from the page; returns once the relay is done with it."""
    await page.page.get_by_role("button", name="End call").click()
    await expect(page.page.locator("#status-text")).to_have_text("Call ended")
    await wait_until(lambda: len(relay.registry) == 0, 10, "the relay to end the call")


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
    relay = await relay_https(private_net, serve_relay, tmp_path, 8443)
    page, call = await _call_from(private_net, relay, launch, open_page, call_wav)
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    assert pair is not None and pair["protocol"] == "udp", pair
    assert call.snapshot()["transport"] == "udp"
    await expect(page.page.locator("#transport")).to_have_text("via WebRTC (UDP)")
    await _assert_transcript(page)
    # /check from the same browser: every path works, and the verdict says so.
    check, done = await run_check_page(page.page.context.browser, open_page, relay)
    results = done["results"]
    for key in ("https", "websocket", "webrtc_udp", "webrtc_tcp", "microphone"):
        assert results[key]["ok"], (key, results[key])
    assert results["turn"]["skipped"] and not results["turn"]["ok"], results["turn"]
    assert done["level"] == "ok"
    await expect(check.locator("#verdict")).to_contain_text("WebRTC over UDP")
    await _hang_up(page, relay)
    assert (await calls_by_transport(relay))["udp"] == 1


async def test_profile_b_only_tcp_to_the_page_port_uses_ice_tcp(
    public_net: ClientNetwork,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    relay = await relay_https(public_net, serve_relay, tmp_path, 443)
    public_net.allow_only_tcp_to(443)
    page, call = await _call_from(public_net, relay, launch, open_page, call_wav)
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    assert pair is not None and pair["protocol"] == "tcp", pair
    assert pair["local"] == f"{public_net.host_ip}:443"
    assert call.snapshot()["transport"] == "tcp"
    await expect(page.page.locator("#transport")).to_have_text("via WebRTC (TCP)")
    await _assert_transcript(page)
    # /check from the same browser: UDP fails, TCP to 443 works; the advice: open UDP.
    check, done = await run_check_page(page.page.context.browser, open_page, relay)
    results = done["results"]
    assert results["https"]["ok"] and results["webrtc_tcp"]["ok"], results
    assert results["websocket"]["ok"], results
    assert not results["webrtc_udp"]["ok"], results
    assert done["level"] == "warn"
    await expect(check.locator("#verdict")).to_contain_text("WebRTC on TCP")
    await expect(check.locator("#advice")).to_contain_text("Allow UDP")
    await _hang_up(page, relay)
    assert (await calls_by_transport(relay))["tcp"] == 1


TURN_SECRET = "profile-c-turn-secret-0123456789"

#: The page's selected ICE candidate pair, from its own getStats().
SELECTED_PAIR_JS = """async () => {
  const stats = await window.realtimeApp.client.peerConnection.getStats();
  let id = null;
  stats.forEach((r) => {
    if (r.type === "transport" && r.selectedCandidatePairId) id = r.selectedCandidatePairId;
  });
  const pair = id && stats.get(id);
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return {localType: local.candidateType, relayProtocol: local.relayProtocol || null,
          local: `${local.address}:${local.port}`, remote: `${remote.address}:${remote.port}`,
          protocol: local.protocol};
}"""


async def test_profile_c_only_coturn_over_tcp_uses_turn(
    private_net: ClientNetwork,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    coturn = TurnServer.start(secret=TURN_SECRET, listen_ip=private_net.host_ip, port=3478)
    try:
        relay = await relay_https(
            private_net,
            serve_relay,
            tmp_path,
            8443,
            ice_tcp=False,
            turn_urls=(coturn.url("tcp"),),
            turn_secret=Secret(TURN_SECRET),
        )
        private_net.allow_only_tcp_to(8443, coturn.port)
        page, call = await _call_from(private_net, relay, launch, open_page, call_wav)
        pair = call.snapshot()["legs"]["caller"]["selected_pair"]
        host, port = pair["remote"].rsplit(":", 1)
        assert host == coturn.relay_ip, pair
        assert coturn.relay_ports[0] <= int(port) <= coturn.relay_ports[1], pair
        assert pair["protocol"] == "udp", pair  # coturn -> relay; browser -> coturn is TCP
        seen = await page.page.evaluate(SELECTED_PAIR_JS)
        assert seen["localType"] == "relay" and seen["relayProtocol"] == "tcp", seen
        # The relay names the browser's hop to coturn as the browser itself does.
        assert call.snapshot()["transport"] == "turn-tcp"
        await _assert_transcript(page)
        # /check from the same browser: no direct path, TURN (over TCP) works.
        check, done = await run_check_page(page.page.context.browser, open_page, relay)
        results = done["results"]
        assert results["turn"]["ok"] and "via TURN over tcp" in results["turn"]["detail"], results
        assert not results["webrtc_udp"]["ok"] and not results["webrtc_tcp"]["ok"], results
        assert done["level"] == "warn"
        await expect(check.locator("#verdict")).to_contain_text("through the TURN server")
        await _hang_up(page, relay)
        assert (await calls_by_transport(relay))["turn-tcp"] == 1
    finally:
        coturn.stop()


BIN = Path(sys.executable).parent / "realtime-relay"
ADMIN = "profile-e-admin-token-0123456789"


@pytest.fixture
async def natted() -> AsyncIterator[NattedRelay]:
    require_netns()
    net = NattedRelay.create()
    yield net
    net.remove()


def _relay_process(net: NattedRelay, tmp_path: Path) -> subprocess.Popen[bytes]:
    """``realtime-relay serve`` inside the relay's namespace, on its private address,
    announcing the public one (built-in emulator, open mode, HTTPS on 8443)."""
    cert, key = self_signed(tmp_path, net.public_ip, net.private_ip)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {
        "RELAY_OPEN": "1",
        "RELAY_ADMIN_TOKEN": ADMIN,
        "RELAY_ICE_ADDRESSES": net.private_ip,
        "RELAY_ICE_PUBLIC_ADDRESSES": net.public_ip,
        "RELAY_NOISE_SUPPRESSION": "off",
        "RELAY_MAX_LOOP_LAG_MS": "2000",
    }
    args = ["serve", "--host", net.private_ip, "--port", "8443", "--workers", "1"]
    args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    with (tmp_path / "relay.log").open("wb") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", net.relay_ns, str(BIN), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process


async def _snapshot(http: aiohttp.ClientSession, base: str, call_id: str) -> Any:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(f"{base}/api/calls/{call_id}", headers=headers, ssl=False) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_profile_e_relay_behind_nat_announces_its_public_address(
    natted: NattedRelay, launch: Any, open_page: Any, call_wav: Path, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    process = _relay_process(natted, tmp_path)
    private = f"https://{natted.private_ip}:8443"
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                assert process.poll() is None, (tmp_path / "relay.log").read_text()[-3000:]
                try:
                    async with http.get(f"{private}/healthz", ssl=False) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(healthy, 20, "the relay in its namespace answers")
            page, call_id = await _open_call(
                natted.wrapper(CHROMIUM),
                natted.public_ip,
                f"https://{natted.public_ip}:8443/",
                launch,
                open_page,
                call_wav,
            )

            async def flowing() -> bool:
                audio = (await _snapshot(http, private, call_id))["audio"]
                return bool(audio["caller_frames_in"] > 100 and audio["caller_frames_out"] > 100)

            await wait_until(flowing, 20, "audio both ways through the NATed relay")
            snapshot = await _snapshot(http, private, call_id)
            pair = snapshot["legs"]["caller"]["selected_pair"]
            assert pair["protocol"] == "udp", pair
            assert snapshot["transport"] == "udp"
            assert pair["local"].rsplit(":", 1)[0] == natted.public_ip, pair
            assert pair["remote"].rsplit(":", 1)[0] == natted.client_ip, pair
            seen = await page.page.evaluate(SELECTED_PAIR_JS)
            assert seen["remote"].rsplit(":", 1)[0] == natted.public_ip, seen
            await _assert_transcript(page)
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
    log = (tmp_path / "relay.log").read_text()
    assert "Traceback" not in log, log[-3000:]
