"""The WebSocket transport from real Chromium: the microphone streamed as PCM frames on
one socket, the agent played from it, the events on it too.

(a) forced (``transport: "websocket"``) on loopback: a whole turn, the agent heard on
    the page, the relay's snapshot says ``websocket``;
(b) Chromium in a network namespace that reaches the relay only through an HTTP
    CONNECT proxy (a real squid, allowing CONNECT to the relay's 443 only; no UDP, no
    direct TCP). Chromium sends WebRTC's ICE-TCP through the proxy itself, so with the
    relay's ICE-TCP on the call is ``webrtc-tcp`` (the relay's snapshot: ``tcp``); with it
    off (a relay behind an HTTPS load balancer) WebRTC cannot connect and the page falls
    back to the WebSocket within the bound and names it. Either way the call works: audio
    both ways on the relay's side, the user's transcript on the page."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import LEVEL_SAMPLER_JS, wait_until
from netns import ClientNetwork
from playwright.async_api import expect
from proxy_process import ProxyProcess
from relay_fixtures import RelayFactory, ServeRelay
from tcp_only import check_says_only_websocket_works, chromium_inside, relay_https, require_netns

pytestmark = [pytest.mark.browser]

SQUID_PORT = 3128


async def _transcript(page: Any) -> None:
    state = await page.wait_state(
        "s.messages.some((m) => m.role === 'user' && m.final && m.text)", 30
    )
    assert any(m["role"] == "user" and m["text"] for m in state["messages"])


async def test_forced_websocket_call(
    start_relay: RelayFactory, launch: Any, open_page: Any, call_wav: Path
) -> None:
    relay = await start_relay()
    browser = await launch(wav=call_wav)
    page = await open_page(
        browser, relay.url("/"), config={"transport": "websocket"}, init_scripts=(LEVEL_SAMPLER_JS,)
    )
    p = page.page
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    await expect(p.locator("#transport")).to_have_text("via WebSocket")
    state = await page.state()
    assert state["transport"] == "websocket"
    call = relay.registry.get_call(state["callId"])
    assert call is not None and call.snapshot()["transport"] == "websocket"
    await _transcript(page)
    # The agent answers and the page plays it (the level of the stream it plays).
    await wait_until(lambda: call.caller.frames_out > 50, 20, "agent audio to the page")
    await p.wait_for_function("window.__levels.maxOut > 0.02", timeout=20000)
    stats = await p.evaluate("window.realtimeApp.client.getStats()")
    assert stats["type"] == "websocket" and stats["framesReceived"] > 20
    assert stats["framesSent"] > 100
    assert 0 <= stats["playoutBufferMs"] <= 300
    assert call.caller_audio.frames_in > 100
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    await wait_until(lambda: relay.registry.get_call(call.id) is None, 5, "the call to end")
    assert call.outcome == "caller_closed"
    assert page.unexpected_errors() == []


class Squid(ProxyProcess):
    """A real squid, in the test's namespace, that allows CONNECT to one address and
    port only (what a corporate proxy that passes HTTPS does)."""

    def __init__(self, listen_ip: str, relay_ip: str, relay_port: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="squid-"))
        self.folder.chmod(0o777)  # squid drops to its own user (Debian's "proxy")
        conf = self.folder / "squid.conf"
        conf.write_text(
            f"http_port {listen_ip}:{SQUID_PORT}\n"
            f"acl relay dst {relay_ip}\n"
            f"acl relay_port port {relay_port}\n"
            "acl CONNECT method CONNECT\n"
            "http_access allow CONNECT relay relay_port\n"
            "http_access deny all\n"
            "cache deny all\n"
            "cache_mem 8 MB\n"
            "visible_hostname relay-test-proxy\n"
            "shutdown_lifetime 0 seconds\n"
            f"pid_filename {self.folder / 'squid.pid'}\n"
            f"cache_log {self.folder / 'cache.log'}\n"
            f"access_log stdio:{self.folder / 'access.log'}\n"
            f"coredump_dir {self.folder}\n"
            "cache_effective_user proxy\n"
            "dns_nameservers 127.0.0.1\n"
        )
        super().__init__(
            "squid",
            self.folder,
            # -n: a service name of its own (its shared memory does not meet another squid's)
            ["squid", "-N", "-n", f"relaytest{os.getpid()}", "-f", str(conf)],
            SQUID_PORT,
        )

    def access_log(self) -> str:
        path = self.folder / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def proxied_net() -> Iterator[ClientNetwork]:
    """A client that may open TCP connections to the proxy's port only."""
    require_netns()
    if shutil.which("squid") is None:
        pytest.fail("squid is not installed (scripts/install-system-deps.sh installs it)")
    net = ClientNetwork.create(public=True)
    net.allow_only_tcp_to(SQUID_PORT)
    yield net
    net.remove()


@pytest.fixture
async def squid(proxied_net: ClientNetwork) -> AsyncIterator[Squid]:
    proxy = await asyncio.to_thread(Squid, proxied_net.host_ip, proxied_net.host_ip, 443)
    yield proxy
    await asyncio.to_thread(proxy.stop)


@pytest.mark.parametrize(
    ("ice_tcp", "expected", "relay_names"),
    [(False, "websocket", "websocket"), (True, "webrtc-tcp", "tcp")],
    ids=["no-ice-tcp", "ice-tcp"],
)
async def test_call_through_a_connect_proxy(
    ice_tcp: bool,
    expected: str,
    relay_names: str,
    proxied_net: ClientNetwork,
    squid: Squid,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    net = proxied_net
    relay = await relay_https(net, serve_relay, tmp_path, 443, ice_tcp=ice_tcp)
    browser = await chromium_inside(
        net,
        launch,
        call_wav,
        f"--proxy-server=http://{net.host_ip}:{SQUID_PORT}",
        "--proxy-bypass-list=<-loopback>",
    )
    page = await open_page(browser, relay.url("/"))
    p = page.page
    started = time.monotonic()
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=25000)
    took = time.monotonic() - started
    shown = {"websocket": "via WebSocket", "webrtc-tcp": "via WebRTC (TCP)"}[expected]
    await expect(p.locator("#transport")).to_have_text(shown)
    state = await page.state()
    assert state["transport"] == expected
    # A blocked WebRTC attempt costs its bound (5 s after the relay's answer), not more.
    assert took < 15, f"the call took {took:.1f} s to come up"
    call = relay.registry.get_call(state["callId"])
    assert call is not None and call.snapshot()["transport"] == relay_names

    def flowing() -> bool:
        return call.caller_audio.frames_in > 100 and call.caller.frames_out > 50

    await _transcript(page)
    await wait_until(flowing, 25, "audio both ways through the relay")
    # A WebRTC attempt given up was hung up: only the call in use is left.
    assert len(relay.registry) == 1
    if expected == "websocket":
        # The check page, from the same network, says what works and what to open.
        check = await check_says_only_websocket_works(browser, open_page, relay)
        await expect(check.locator("#advice")).to_contain_text("Allow UDP")
    # It all went through the proxy (squid logs a tunnel when it closes).
    await browser.close()
    await wait_until(lambda: f"CONNECT {net.host_ip}:443" in squid.access_log(), 10, "the log")


async def test_check_page_on_an_open_network(
    serve_relay: ServeRelay, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """/check from a browser that reaches everything: each path works, with round-trip
    times, and the verdict says so."""
    from netns import free_port

    relay = await serve_relay(host="127.0.0.1", port=free_port(), ice_addresses=("127.0.0.1",))
    facts = await (await relay.http.get(relay.url("/api/check"))).json()
    assert facts["ice"]["tcp"] is True and facts["ice"]["tcp_port"]
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/check"), goto=False)
    await page.page.goto(relay.url("/check"))
    done = await page.page.evaluate("window.relayCheck.done")
    results = done["results"]
    for key in ("https", "websocket", "webrtc_udp", "webrtc_tcp", "microphone", "output"):
        assert results[key]["ok"], (key, results[key])
    assert results["websocket"]["rttMs"] is not None and results["webrtc_udp"]["rttMs"] is not None
    assert done["level"] == "ok"
    await expect(page.page.locator("#verdict")).to_contain_text("WebRTC over UDP")
    assert page.unexpected_errors() == []
