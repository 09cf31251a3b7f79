"""The voice page with ``history: "relay"`` (issue 15): the conversation of a signed-in
user comes back from the relay's recordings after a reload, with a fresh client secret,
in real Chromium through the relay to the emulator; "Continue" carries it on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from playwright.async_api import expect
from relay_fixtures import RelayFactory, RelayUnderTest
from test_voice_page_history import HISTORY_KEY, PATIENT, emulator_sessions

pytestmark = pytest.mark.browser

#: The app's token route, as a page script: its backend mints for the signed-in user
#: "u1" (here the open relay's demo route, with ``session.relay.user_id``).
TOKEN_SCRIPT = """
window.mintedSecrets = [];
window.REALTIME_RELAY_CONFIG = {
  history: "relay",
  getToken: async ({ session }) => {
    const response = await fetch("/api/demo/client_secret", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session: { ...session, relay: { user_id: "u1" } } }),
    });
    const { value } = await response.json();
    window.mintedSecrets.push(value);
    return value;
  },
};
"""


async def listed_for_u1(relay: RelayUnderTest) -> list[dict[str, Any]]:
    body = {"session": {"type": "realtime", "relay": {"user_id": "u1"}}}
    async with relay.http.post(relay.url("/api/demo/client_secret"), json=body) as minted:
        secret = (await minted.json())["value"]
    headers = {"Authorization": f"Bearer {secret}"}
    async with relay.http.get(relay.url("/api/conversations"), headers=headers) as response:
        assert response.status == 200, await response.text()
        data: list[dict[str, Any]] = (await response.json())["data"]
        return data


async def opening_context(call: Any) -> str:
    """The text of the first item the browser added to ``call`` (at the emulator): what
    "Continue this conversation" carries."""

    def text() -> str:
        for event in call.client_events:
            if isinstance(event, dict) and event.get("type") == "conversation.item.create":
                return str(event["item"]["content"][0]["text"])
        return ""

    await wait_until(lambda: bool(text()), 10, "the context item at the emulator")
    return text()


async def history_loaded(p: Any) -> bool:
    return bool(await p.evaluate("window.realtimeApp.historyLoaded"))


async def test_relay_history_survives_a_reload_and_continues(
    start_relay: RelayFactory, launch: Any, open_page: Any, call_wav: Path, tmp_path: Path
) -> None:
    relay = await start_relay(
        **PATIENT, recording_policy="all", recording_dir=str(tmp_path / "recordings")
    )
    browser = await launch(wav=call_wav)
    page = await open_page(browser, relay.url("/"), init_scripts=(TOKEN_SCRIPT,))
    p = page.page
    assert await history_loaded(p)  # nothing yet: an empty list
    await expect(p.locator("#empty")).to_be_visible()

    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    state = await page.wait_state(
        "s.messages.some((m) => m.role === 'user' && m.final && m.text)"
        " && s.messages.some((m) => m.role === 'assistant' && m.final && m.text)",
        40,
    )
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    said = [m["text"] for m in state["messages"] if m["role"] == "user" and m["final"]]
    await wait_until(lambda: listed_for_u1(relay), 10, "the call's recording finished")

    # A reload: a fresh client secret of the same user reads the conversation back.
    before = await p.evaluate("window.mintedSecrets.length")
    await p.reload()
    await p.wait_for_function("() => !!window.realtimeApp")
    assert await history_loaded(p)
    assert await p.evaluate("window.mintedSecrets.length") == 1 and before >= 2
    await expect(p.locator(".history-divider")).to_have_text("Earlier conversation")
    earlier_user = p.locator("#messages .message.earlier.user .message-text")
    await expect(earlier_user.first).to_be_visible()
    shown = await earlier_user.all_text_contents()
    assert said and all(text in shown for text in said), (said, shown)
    await expect(p.locator("#messages .message.earlier.assistant").first).to_be_visible()
    # Nothing of it is kept in the browser's storage.
    assert await p.evaluate(f"localStorage.getItem('{HISTORY_KEY}')") is None

    # Continue: the recorded turns open the new session, as with the browser's history.
    await p.get_by_role("button", name="Continue this conversation").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    context = await opening_context(await emulator_sessions(relay).wait_for_call(2))
    assert f"User: {said[0]}" in context
    await p.get_by_role("button", name="End call").click()
    assert page.unexpected_errors() == []
