"""``useWebRTC``'s ``language`` option (an addition to the original API) and the same prop of
``RealtimeVoiceChat``, in real Chromium: the session OpenAI's side gets (the emulator's)
transcribes in that language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from playwright.async_api import expect
from relay_fixtures import RelayFactory
from test_react_hook import ORIGINAL_API, serve_react_app

from relay.embedded import EMULATOR
from relay.emulator import SESSIONS

pytestmark = pytest.mark.browser


async def test_language_reaches_the_session(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    relay = await start_relay(media_timeout_secs=20.0)
    sessions = relay.app[EMULATOR][SESSIONS]
    browser = await launch(wav=silent_wav)
    page = await open_page(
        browser, "", routes={relay.url("/__react__/**"): serve_react_app}, goto=False
    )
    p = page.page
    await p.goto(relay.url("/__react__/language.html"))
    await p.wait_for_function("window.__reactReady && window.__hook.api", timeout=10000)
    api = await p.evaluate(
        "Object.fromEntries(Object.entries(window.__hook.api).map(([k, v]) => [k, typeof v]))"
    )
    assert {k: api.get(k) for k in ORIGINAL_API} == ORIGINAL_API  # the original API, kept

    assert await p.evaluate("window.__hook.api.connect()") is True
    call = await sessions.wait_for_call(1)
    transcription = call.config.data["audio"]["input"]["transcription"]
    assert transcription == {**transcription, "model": "whisper-1", "language": "fr"}
    await p.evaluate("window.__hook.api.disconnect()")
    await wait_until(lambda: len(relay.registry) == 0, 5, "the relay to end the hook's call")

    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator(".rvc-status")).to_have_text("Connected", timeout=15000)
    call = await sessions.wait_for_call(2)
    assert call.config.data["audio"]["input"]["transcription"]["language"] == "es"
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator(".rvc-status")).to_have_text("Not connected")
    assert await p.evaluate("window.__hook.errors") == []
    assert page.unexpected_errors() == []
