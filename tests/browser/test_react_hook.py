"""The original React API (`useWebRTC` and `RealtimeVoiceChat`) in real Chromium, with
React provided by the host page (import map to a vendored React 18), calling through
the relay to the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from browser_harness import VENDOR_DIR, wait_until
from playwright.async_api import expect
from relay_fixtures import RelayFactory

pytestmark = pytest.mark.browser

REACT_APP = Path(__file__).resolve().parent / "react_app"
ORIGINAL_API = {
    "isConnected": "boolean",
    "isRecording": "boolean",
    "userTranscript": "string",
    "agentTranscript": "string",
    "connect": "function",
    "disconnect": "function",
    "sendMessage": "function",
    "toggleRecording": "function",
    "clearTranscripts": "function",
}


async def serve_react_app(route: Any) -> None:
    """``/__react__/...``: the test app, and React from tests/browser/vendor."""
    path = urlparse(route.request.url).path.removeprefix("/__react__/")
    file = (
        VENDOR_DIR / path.removeprefix("vendor/")
        if path.startswith("vendor/")
        else REACT_APP / path
    )
    if not file.is_file():
        await route.fulfill(status=404, body="not found")
        return
    content_type = "text/html" if file.suffix == ".html" else "text/javascript"
    await route.fulfill(status=200, body=file.read_bytes(), content_type=content_type)


async def hook_state(page: Any) -> dict[str, Any]:
    return json.loads(await page.inner_text("#hook-state"))  # type: ignore[no-any-return]


async def test_use_webrtc_hook(
    start_relay: RelayFactory, launch: Any, open_page: Any, call_wav: Path
) -> None:
    relay = await start_relay()
    browser = await launch(wav=call_wav)
    page = await open_page(
        browser, "", routes={relay.url("/__react__/**"): serve_react_app}, goto=False
    )
    p = page.page
    await p.goto(relay.url("/__react__/index.html"))
    await p.wait_for_function("window.__reactReady && window.__hook.api", timeout=10000)

    api = await p.evaluate(
        "Object.fromEntries(Object.entries(window.__hook.api).map(([k, v]) => [k, typeof v]))"
    )
    assert {k: api.get(k) for k in ORIGINAL_API} == ORIGINAL_API
    assert await hook_state(p) == {
        "isConnected": False,
        "isRecording": False,
        "userTranscript": "",
        "agentTranscript": "",
    }

    assert await p.evaluate("window.__hook.api.connect()") is True
    await expect(p.locator("#hook-state")).to_contain_text('"isConnected":true')
    assert (await hook_state(p))["isRecording"] is True
    assert len(relay.registry) == 1

    # Speech: transcription deltas, then the settled transcript, then the agent's answer.
    await p.wait_for_function(
        "window.__hook.dones.length > 0 && window.__hook.responses.some((t) => t)", timeout=25000
    )
    record = await p.evaluate(
        "({deltas: __hook.deltas, dones: __hook.dones, responses: __hook.responses})"
    )
    assert record["deltas"] and "".join(record["deltas"]).strip()
    state = await hook_state(p)
    assert state["userTranscript"] in record["dones"]
    assert state["agentTranscript"]

    # Mute, then a typed message gets its own answer.
    assert await p.evaluate("window.__hook.api.toggleRecording()") is False
    await expect(p.locator("#hook-state")).to_contain_text('"isRecording":false')
    answered = await p.evaluate("window.__hook.responses.length")
    assert await p.evaluate("window.__hook.api.sendMessage('Tell me about tomorrow')") is True
    await p.wait_for_function(f"window.__hook.responses.length > {answered}", timeout=20000)

    await p.evaluate("window.__hook.api.clearTranscripts()")
    await expect(p.locator("#hook-state")).to_contain_text(
        '"userTranscript":"","agentTranscript":""'
    )

    call_id = await p.evaluate("window.__hook.api.client.callId")
    await p.evaluate("window.__hook.api.disconnect()")
    await expect(p.locator("#hook-state")).to_contain_text('"isConnected":false')
    await wait_until(
        lambda: relay.registry.get_call(call_id) is None, 5, "the relay to end the call"
    )
    assert await p.evaluate("window.__hook.errors") == []

    # The RealtimeVoiceChat component, on the same hook.
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator(".rvc-status")).to_have_text("Connected", timeout=15000)
    await expect(p.locator(".rvc-agent")).not_to_have_text("", timeout=25000)
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator(".rvc-status")).to_have_text("Not connected")
    await wait_until(lambda: len(relay.registry) == 0, 5, "the relay to end the component's call")
    assert page.unexpected_errors() == []
