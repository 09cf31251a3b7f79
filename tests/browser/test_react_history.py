"""``RealtimeVoiceChat`` with ``history: "relay"`` (issue 15), in real Chromium through a
recording relay: after a reload the component lists the signed-in user's earlier turns,
read back from the relay, "Continue this conversation" carries them into a new call, and
"Clear" hides them on this browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from playwright.async_api import expect
from relay_fixtures import RelayFactory
from test_react_hook import serve_react_app
from test_voice_page_history import PATIENT, emulator_sessions
from test_voice_page_relay_history import listed_for_u1, opening_context

pytestmark = pytest.mark.browser

SAID_JS = "window.__chat.messages.filter((m) => m.role === 'user' && m.final && m.text)"


async def test_component_lists_the_relay_history_and_continues(
    start_relay: RelayFactory, launch: Any, open_page: Any, call_wav: Path, tmp_path: Path
) -> None:
    relay = await start_relay(
        **PATIENT, recording_policy="all", recording_dir=str(tmp_path / "recordings")
    )
    browser = await launch(wav=call_wav)
    page = await open_page(
        browser, "", routes={relay.url("/__react__/**"): serve_react_app}, goto=False
    )
    p = page.page
    await p.goto(relay.url("/__react__/history.html"))
    await p.wait_for_function("window.__reactReady", timeout=10000)
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator(".rvc-status")).to_have_text("Connected", timeout=15000)
    await p.wait_for_function(
        f"{SAID_JS}.length > 0 && window.__chat.messages.some("
        "(m) => m.role === 'assistant' && m.final && m.text)",
        timeout=40000,
        polling=100,
    )
    said = [m["text"] for m in await p.evaluate(SAID_JS)]
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator(".rvc-status")).to_have_text("Not connected")
    await wait_until(lambda: listed_for_u1(relay), 10, "the call's recording finished")

    await p.reload()
    await p.wait_for_function("window.__reactReady", timeout=10000)
    history = p.get_by_role("region", name="Earlier conversation")
    await expect(history.locator("li").first).to_be_visible(timeout=10000)
    shown = await history.locator("li[data-role=user]").all_text_contents()
    assert all(f"You: {text}" in shown for text in said), (said, shown)

    await history.get_by_role("button", name="Continue this conversation").click()
    await expect(p.locator(".rvc-status")).to_have_text("Connected", timeout=15000)
    context = await opening_context(await emulator_sessions(relay).wait_for_call(2))
    assert f"User: {said[0]}" in context
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator(".rvc-status")).to_have_text("Not connected")

    # Clear hides it on this browser, past a reload too (the recordings stay).
    await p.get_by_role("button", name="Clear").click()
    await expect(history).to_have_count(0)
    async with p.expect_response(lambda r: "/api/conversations" in r.url) as answer:
        await p.reload()
    assert (await answer.value).ok
    await p.wait_for_timeout(500)  # what the answer renders, rendered
    await expect(history).to_have_count(0)
    assert said[0] in str(await listed_for_u1(relay))
    assert await p.evaluate("window.__chat.errors") == []
    assert page.unexpected_errors() == []
