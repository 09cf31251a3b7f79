"""`make run` with ``OPENAI_API_KEY`` (issue 15): the demo page on a loopback relay starts a
call out of the box. The "OpenAI" here is a standalone emulator with a standard key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import expect
from relay_fixtures import RelayFactory

from relay.config import EmulatorSettings, Secret
from relay.emulator import SESSIONS
from relay.emulator.app import create_emulator_app
from relay.taps import CallEnd, CallInfo, Observer

pytestmark = pytest.mark.browser

#: These tests are not about the media watchdog: on 2 busy cores a fake microphone can
#: stall for seconds, which the tests' default 3 s watchdog takes for a caller gone.
PATIENT = {"media_timeout_secs": 20.0}

OPENAI_KEY = "sk-test-standard-0123456789abcdef"


class Outcomes(Observer):
    name = "outcomes"

    def __init__(self) -> None:
        self.ended: list[str] = []

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        self.ended.append(end.outcome)


@pytest.fixture
async def openai() -> AsyncIterator[TestServer]:
    app = create_emulator_app(
        EmulatorSettings(api_keys=(OPENAI_KEY,), ice_addresses=("127.0.0.1",))
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_demo_page_calls_with_an_openai_key_on_loopback(
    start_relay: RelayFactory, openai: TestServer, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    relay = await start_relay(
        **PATIENT,
        open_mode=False,
        openai_api_key=Secret(OPENAI_KEY),
        openai_base_url=str(openai.make_url("/v1")),
    )
    outcomes = Outcomes()
    relay.registry.add_observer(outcomes)
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"))
    p = page.page
    await expect(p.locator("#upstream")).to_have_text("OpenAI Realtime")
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    await expect(p.locator("#banner")).to_be_hidden()
    await p.get_by_label("Type a message to the assistant").fill("Hello")
    await p.keyboard.press("Enter")
    try:
        state = await page.wait_state(
            "s.messages.some((m) => m.role === 'assistant' && m.final && m.text)", 20
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the relay's call ended: {outcomes.ended}") from None
    assert state["isConnected"], state
    calls = openai.app[SESSIONS].calls()
    assert len(calls) == 1, calls  # the call went to "OpenAI"
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    assert page.unexpected_errors() == []


async def test_the_page_says_what_to_set_when_the_demo_route_is_off(
    start_relay: RelayFactory, openai: TestServer, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """A relay with an app backend key: the demo route is off, and the banner says why."""
    relay = await start_relay(
        **PATIENT,
        open_mode=False,
        openai_api_key=Secret(OPENAI_KEY),
        openai_base_url=str(openai.make_url("/v1")),
        relay_api_key=Secret("relay-test-key-0123456789"),
    )
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"))
    p = page.page
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#banner-title")).to_have_text("Could not start a session (HTTP 404)")
    message = p.locator("#banner-message")
    await expect(message).to_contain_text("RELAY_OPEN=1")
    await expect(message).to_contain_text("without RELAY_API_KEY")
    await expect(message).to_contain_text("tokenUrl")
    assert ".)." not in (await message.text_content() or "")  # no doubled punctuation
    assert ".." not in (await message.text_content() or "")
    assert "relay-test-key" not in await p.content()
