"""A 50 s call from the voice page in real Chromium through a relay whose upstream (the
emulator) caps sessions at 15 s: the relay renews the session (relay/upstream/rollover.py)
and the person on the page notices nothing but the conversation going on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from playwright.async_api import expect
from relay_fixtures import RelayFactory

from relay.config import EmulatorSettings
from relay.embedded import EMULATOR
from relay.emulator.app import SESSIONS
from relay.upstream.rollover import RENEWED_EVENT

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

CALL_SECS = 50.0
FIRST = "My secret word is pelican."
RECALL = "What did I say first?"

# Every server event the page's client receives: (seconds since the page loaded, type).
RECORD_EVENTS_JS = """() => {
  window.__events = [];
  window.realtimeApp.client.setOptions({onEvent: (e) => {
    window.__events.push([performance.now() / 1000, e.type, e.reason || null]);
  }});
}"""


async def test_a_fifty_second_call_outlives_three_upstream_sessions(
    start_relay: RelayFactory, launch: Any, open_page: Any, call_wav: Path
) -> None:
    relay = await start_relay(
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), max_session_secs=15.0),
        rollover_lead_secs=6.0,
    )
    browser = await launch(wav=call_wav)
    page = await open_page(
        browser, relay.url("/"), config={"transcriptionModel": "gpt-4o-transcribe"}
    )
    p = page.page
    await p.evaluate(RECORD_EVENTS_JS)
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    started = time.monotonic()
    call_id = (await page.state())["callId"]
    call = relay.registry.get_call(call_id)
    assert await p.evaluate(f"window.realtimeApp.client.sendMessage({FIRST!r})")

    async def events() -> list[list[Any]]:
        return await p.evaluate("window.__events")  # type: ignore[no-any-return]

    async def renewals() -> list[list[Any]]:
        return [e for e in await events() if e[1] == RENEWED_EVENT]

    await wait_until(lambda: _at_least(renewals, 2), CALL_SECS, "two renewals")
    await asyncio.sleep(max(0.0, CALL_SECS - (time.monotonic() - started)))

    # The person stops talking and asks: the newest session knows the first message.
    await p.get_by_role("button", name="Mute").click()
    await asyncio.sleep(1.0)
    assert await p.evaluate(f"window.realtimeApp.client.sendMessage({RECALL!r})")
    await page.wait_state(
        f"s.messages.some((m) => m.role === 'assistant' && m.final && m.text.includes({FIRST!r}))",
        20,
    )

    seen = await events()
    renewed = [e for e in seen if e[1] == RENEWED_EVENT]
    assert len(renewed) >= 2, seen
    assert [e[1] for e in seen].count("session.created") == 1
    assert "error" not in [e[1] for e in seen]
    # Agent transcripts go on after the first renewal (the voice turns are answered).
    first_renewal = renewed[0][0]
    later = [e for e in seen if e[0] > first_renewal and e[1].endswith("transcript.done")]
    assert later, seen
    # The same call, connection and page throughout.
    assert relay.registry.get_call(call_id) is call and call.state == "active"
    assert (await page.state())["status"] == "connected"
    # Caller audio reached each new session within 300 ms of the last the old one got.
    sessions = relay.app[EMULATOR][SESSIONS]
    gaps = []
    for renewal in call.rollover.renewals:
        old, new = sessions.get(renewal.old_call_id), sessions.get(renewal.new_call_id)
        gaps.append((new.received.first_at - old.received.last_at) * 1000)
    assert len(gaps) >= 2 and max(gaps) < 300, gaps
    # The agent's audio still plays: packets keep arriving at the page.
    before = (await page.audio_stats() or {}).get("inbound") or {}
    await asyncio.sleep(1.0)
    after = (await page.audio_stats() or {}).get("inbound") or {}
    assert after.get("packetsReceived", 0) > before.get("packetsReceived", 0) + 25
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    assert page.unexpected_errors() == []


async def _at_least(get: Any, count: int) -> bool:
    return len(await get()) >= count
