"""The relay's web client under a client secret's policy: its ``session.update`` on open
keeps what the app's backend set (voice, instructions, transcription) instead of
overwriting it with the page's defaults, so the relay refuses nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from relay_fixtures import RelayFactory

from relay.taps import Observer, TappedEvent

pytestmark = pytest.mark.browser


class Events(Observer):
    name = "test_events"

    def __init__(self) -> None:
        self.events: list[TappedEvent] = []

    def event(self, call_id: str, event: TappedEvent) -> None:
        self.events.append(event)


async def test_web_client_update_keeps_backend_set_fields(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    relay = await start_relay()
    tap = Events()
    relay.registry.add_observer(tap)
    minted = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"),
        json={
            "session": {
                "type": "realtime",
                "instructions": "You are the backend's agent.",
                "audio": {
                    "input": {"transcription": {"model": "gpt-4o-transcribe"}},
                    "output": {"voice": "verse"},
                },
            }
        },
    )
    secret = (await minted.json())["value"]

    async def token(route: Any) -> None:  # the app's backend hands out its own secret
        await route.fulfill(json={"value": secret})

    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"), routes={"**/api/demo/client_secret": token})
    p = page.page
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected")
    await p.wait_for_function(
        "() => window.realtimeApp.client.state.callId !== null", timeout=10000
    )

    def seen(kind: str) -> list[TappedEvent]:
        return [e for e in tap.events if e.type == kind]

    for _ in range(100):
        if seen("session.updated"):
            break
        await p.wait_for_timeout(100)
    updates = [e for e in seen("session.update") if e.direction == "client"]
    assert updates, [e.type for e in tap.events]
    sent = updates[0].data["session"]
    assert "instructions" not in sent and "model" not in sent
    assert "voice" not in (sent.get("audio") or {}).get("output", {})
    assert not seen("relay.policy_denied")
    assert not [e for e in seen("error") if e.direction == "server"]
    session = seen("session.updated")[-1].data["session"]
    assert session["instructions"] == "You are the backend's agent."
    assert session["audio"]["output"]["voice"] == "verse"
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
    await p.get_by_role("button", name="End call").click()
