"""(d) A TLS-inspecting HTTP proxy is all the network lets through.

Chromium lives in a namespace that may open TCP connections to one port only: a real
mitmproxy (``mitmdump`` from PyPI, in a virtualenv of its own, see
tests/browser/mitm_proxy/install.py) in the test's namespace. The proxy terminates the
browser's TLS with certificates of its own CA (this Chromium trusts that CA's key and no
other certificate), opens its own TLS to the relay (trusting the relay's test
certificate), and passes nothing but HTTP and WebSocket: with ``rawtcp`` off, a CONNECT
tunnel that does not carry HTTP (WebRTC's ICE-TCP, framed STUN) is cut.

The relay keeps its defaults (ICE-TCP on its page port): the page tries WebRTC, which
cannot connect, falls back to the WebSocket within its bound and names it; audio goes
both ways (counted on the relay's side), the user's transcript reaches the page, and the
relay's snapshot says ``websocket``. /check, from the same browser, gives the true verdict:
only the WebSocket works."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitm_proxy.install import InstallFailed, ensure_mitmdump
from netns import ClientNetwork
from playwright.async_api import expect
from proxy_process import ProxyProcess
from relay_fixtures import ServeRelay
from tcp_only import (
    check_says_only_websocket_works,
    chromium_inside,
    relay_https,
    require_netns,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROXY_PORT = 8080


class MitmDump(ProxyProcess):
    """``mitmdump`` on ``listen_ip``:8080, its CA made in a folder of its own."""

    def __init__(self, executable: Path, listen_ip: str, upstream_ca: Path) -> None:
        folder = Path(tempfile.mkdtemp(prefix="mitm-"))
        ca = folder / "mitmproxy-ca-cert.pem"
        command = [
            str(executable),
            "--listen-host",
            listen_ip,
            "--listen-port",
            str(PROXY_PORT),
            "--set",
            f"confdir={folder}",
            "--set",
            "rawtcp=false",  # only HTTP (and WebSocket) survives
            "--set",
            "block_global=false",
            "--set",
            f"ssl_verify_upstream_trusted_ca={upstream_ca}",
            "--set",
            "flow_detail=1",
        ]
        super().__init__("mitmdump", folder, command, PROXY_PORT, ready=ca.is_file, timeout_secs=30)
        certificate = x509.load_pem_x509_certificate(ca.read_bytes())
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        #: What Chromium is told to trust: the proxy's CA key (its leaves share it).
        self.spki = base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def inspected_net() -> Iterator[ClientNetwork]:
    """A client that may open TCP connections to the proxy's port only."""
    require_netns()
    net = ClientNetwork.create(public=True)
    net.allow_only_tcp_to(PROXY_PORT)
    yield net
    net.remove()


async def _transcript(page: Any) -> None:
    state = await page.wait_state(
        "s.messages.some((m) => m.role === 'user' && m.final && m.text)", 30
    )
    assert any(m["role"] == "user" and m["text"] for m in state["messages"])


@pytest.fixture
async def mitm_relay(
    inspected_net: ClientNetwork, serve_relay: ServeRelay, tmp_path: Path
) -> AsyncIterator[tuple[Any, MitmDump]]:
    """The relay on 443 (HTTPS, defaults otherwise) and the proxy in front of it."""
    try:
        executable = await asyncio.to_thread(ensure_mitmdump)
    except InstallFailed as exc:
        pytest.fail(str(exc))
    relay = await relay_https(inspected_net, serve_relay, tmp_path, 443)
    proxy = await asyncio.to_thread(
        MitmDump, executable, inspected_net.host_ip, tmp_path / "relay.crt"
    )
    yield relay, proxy
    await asyncio.to_thread(proxy.stop)


async def test_profile_d_call_through_a_tls_inspecting_proxy(
    inspected_net: ClientNetwork,
    mitm_relay: tuple[Any, MitmDump],
    launch: Any,
    open_page: Any,
    call_wav: Path,
) -> None:
    net, (relay, proxy) = inspected_net, mitm_relay
    browser = await chromium_inside(
        net,
        launch,
        call_wav,
        f"--proxy-server=http://{net.host_ip}:{PROXY_PORT}",
        "--proxy-bypass-list=<-loopback>",
        trust_spki=proxy.spki,
    )
    page = await open_page(browser, relay.url("/"))
    p = page.page
    started = time.monotonic()
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=25000)
    took = time.monotonic() - started
    await expect(p.locator("#transport")).to_have_text("via WebSocket")
    state = await page.state()
    assert state["transport"] == "websocket"
    assert took < 15, f"the call took {took:.1f} s to come up"
    call = relay.registry.get_call(state["callId"])
    assert call is not None and call.snapshot()["transport"] == "websocket"
    await _transcript(page)
    await wait_until(
        lambda: call.caller_audio.frames_in > 100 and call.caller.frames_out > 50,
        25,
        "audio both ways through the proxy",
    )
    assert len(relay.registry) == 1  # the WebRTC attempt given up was hung up
    # The proxy saw the call in the clear: it inspected the WebSocket it carried.
    assert "/v1/realtime/ws" in proxy.output(), proxy.output()[-3000:]

    check = await check_says_only_websocket_works(browser, open_page, relay)
    await expect(check.locator("#advice")).to_contain_text("without a proxy that inspects")
    await browser.close()
