"""OpenAI's own JavaScript SDK (``@openai/agents-realtime``, pinned, unmodified) in real
Chromium on a locked-down network, pointed at the relay by URL alone.

The client network (a namespace, tests/netns.py) lets only TCP to the relay's port 443
through (profile b): no UDP, no other port. The SDK's WebRTC transport has no ICE
servers and knows nothing of the relay beyond ``url``; the relay's passive ICE-TCP
candidate on its HTTPS port is the only way in. The SDK's browser build is served on
the relay's origin by Playwright (``page.route``) from the npm cache folder
(tests/browser/agents_sdk/install.py installs it on first use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents_sdk.install import VERSION, InstallFailed, ensure_bundle
from browser_harness import wait_until
from netns import ClientNetwork
from relay_fixtures import ServeRelay
from tcp_only import chromium_inside, relay_on_443, tcp_only_net

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["tcp_only_net"]  # the fixture, imported for pytest

PAGE_DIR = Path(__file__).parent / "agents_sdk"
PREFIX = "/agents-sdk-test/"


@pytest.fixture(scope="session")
def sdk_bundle() -> Path:
    try:
        return ensure_bundle()
    except InstallFailed as exc:
        pytest.fail(f"@openai/agents-realtime@{VERSION} could not be installed: {exc}")


def _serve_files(bundle: Path) -> Any:
    """A Playwright route handler: the test page and the SDK's bundle files."""

    async def handle(route: Any) -> None:
        name = route.request.url.split(PREFIX, 1)[1].split("?", 1)[0] or "index.html"
        folder = PAGE_DIR if name == "index.html" else bundle
        path = (folder / name).resolve()
        if path.parent != folder.resolve() or not path.is_file():
            await route.fulfill(status=404, body="not found")
            return
        kind = "text/html" if name.endswith(".html") else "text/javascript"
        await route.fulfill(status=200, body=path.read_bytes(), content_type=kind)

    return handle


async def test_agents_sdk_over_ice_tcp_on_443(
    tcp_only_net: ClientNetwork,
    serve_relay: ServeRelay,
    sdk_bundle: Path,
    launch: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    relay = await relay_on_443(tcp_only_net, serve_relay, tmp_path)
    browser = await chromium_inside(tcp_only_net, launch, call_wav)
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.route(f"**{PREFIX}**", _serve_files(sdk_bundle))
    await page.goto(relay.url(PREFIX + "index.html"))
    await page.wait_for_function("() => typeof window.startCall === 'function'", timeout=15000)

    call_id = await page.evaluate("() => window.startCall()")
    assert isinstance(call_id, str) and call_id.startswith("rtc_"), call_id
    call = relay.registry.get_call(call_id)
    assert call is not None

    def flowing() -> bool:
        return call.caller_audio.frames_in > 100 and call.downlink.packets_sent > 50

    await wait_until(flowing, 25, "audio both ways through the relay")
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    assert pair is not None and pair["protocol"] == "tcp", pair
    assert pair["local"] == f"{tcp_only_net.host_ip}:443"
    seen = await page.evaluate("() => window.transportProtocol()")
    assert seen is not None and seen["remote"] == "tcp" and seen["port"] == 443, seen
    events = await page.evaluate("() => window.sdkEvents")
    sdk_errors = await page.evaluate("() => window.sdkErrors")
    # KNOWN (reported): the SDK sends `session.update {tracing: "auto"}` by default, at
    # connect and again on session.created, and the relay's session policy locks
    # `tracing` (relay/policy.py ALWAYS_LOCKED), so it answers relay_policy_denied and
    # the SDK's connect() waits out its 5 s session.updated timeout. Anything else fails.
    unexpected = [e for e in sdk_errors if (e.get("error") or {}).get("param") != "session.tracing"]
    assert not unexpected, unexpected
    assert "session.created" in events, events
    assert not errors, errors
    await page.evaluate("() => window.session.close()")
    await wait_until(lambda: relay.registry.get_call(call_id) is None, 15, "the call to end")
    await context.close()
