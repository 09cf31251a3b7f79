"""The voice page's languages, history and "continue this conversation", in real Chromium
through the relay to the emulator (issue 15)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from browser_harness import DESKTOP_VIEWPORT, PageUnderTest, wait_until
from playwright.async_api import expect
from relay_fixtures import RelayFactory

from relay.embedded import EMULATOR
from relay.emulator import SESSIONS
from relay.taps import Observer, TappedEvent

pytestmark = pytest.mark.browser

#: These tests are not about the media watchdog: on 2 busy cores a fake microphone can
#: stall for seconds, which the tests' default 3 s watchdog takes for a caller gone.
PATIENT = {"media_timeout_secs": 20.0}

HISTORY_KEY = "realtime-relay.history.v1"
SCROLLED_TO_END_JS = """() => {
  const c = document.getElementById('conversation');
  return c.scrollHeight > c.clientHeight + 50 && c.scrollTop + c.clientHeight >= c.scrollHeight - 4;
}"""
SCROLL_JS = """() => {
  const c = document.getElementById('conversation');
  return {top: c.scrollTop, height: c.scrollHeight, client: c.clientHeight};
}"""


async def shows_its_end(p: Any) -> None:
    """The conversation (long enough to scroll) is scrolled to its end."""
    try:
        await p.wait_for_function(SCROLLED_TO_END_JS, timeout=5000, polling=100)
    except Exception as exc:
        raise AssertionError(f"not at the end: {await p.evaluate(SCROLL_JS)}") from exc


class Events(Observer):
    name = "test_events"

    def __init__(self) -> None:
        self.events: list[TappedEvent] = []

    def event(self, call_id: str, event: TappedEvent) -> None:
        self.events.append(event)

    def of(self, kind: str, direction: str = "client") -> list[TappedEvent]:
        return [e for e in self.events if e.type == kind and e.direction == direction]


Localised = Callable[..., Awaitable[PageUnderTest]]


@pytest.fixture
async def localised() -> AsyncIterator[Localised]:
    """``await localised(browser, url, locale="fr-FR")``: a page in a browser context whose
    languages (``navigator.languages``, ``Accept-Language``) are ``locale``'s."""
    contexts: list[Any] = []

    async def open_(browser: Any, url: str, *, locale: str) -> PageUnderTest:
        context = await browser.new_context(viewport=DESKTOP_VIEWPORT, locale=locale)
        contexts.append(context)
        page = await context.new_page()
        result = PageUnderTest(page)
        page.on("console", lambda m: m.type == "error" and result.console_errors.append(m.text))
        page.on("pageerror", lambda e: result.page_errors.append(str(e)))
        await page.goto(url)
        await page.wait_for_function("() => !!window.realtimeApp", timeout=10000)
        return result

    yield open_
    for context in contexts:
        with contextlib.suppress(Exception):
            await context.close()


def emulator_sessions(relay: Any) -> Any:
    return relay.app[EMULATOR][SESSIONS]


async def test_french_browser_gets_a_french_page_and_french_transcription(
    start_relay: RelayFactory, launch: Any, localised: Localised, silent_wav: Path
) -> None:
    relay = await start_relay(**PATIENT)
    browser = await launch(wav=silent_wav)
    page = await localised(browser, relay.url("/"), locale="fr-FR")
    p = page.page
    assert await p.evaluate("navigator.language") == "fr-FR"
    await expect(p.locator("html")).to_have_attribute("lang", "fr")
    await expect(p.locator("h1")).to_have_text("Conversation vocale")
    await expect(p.locator("#status-text")).to_have_text("Non connecté")
    await expect(p.get_by_label("Écrire un message à l’assistant")).to_be_disabled()
    # The page says what it talks to: here the built-in emulator.
    await expect(p.locator("#upstream")).to_have_text(
        "Émulateur OpenAI intégré (hors ligne, sans clé OpenAI)"
    )

    await p.get_by_role("button", name="Démarrer l’appel").click()
    await expect(p.locator("#status-text")).to_have_text("Connecté", timeout=15000)
    await expect(p.locator("#mute-text")).to_have_text("Couper le micro")
    # The transcription language reached OpenAI's side (the emulator's session).
    call = await emulator_sessions(relay).wait_for_call(1)
    assert call.config.data["audio"]["input"]["transcription"]["language"] == "fr"
    await p.get_by_label("Écrire un message à l’assistant").fill("Bonjour")
    await p.keyboard.press("Enter")
    await page.wait_state("s.messages.some((m) => m.role === 'assistant' && m.final)", 20)
    await expect(p.locator("#messages .message.assistant .message-who")).to_have_text("Assistant")
    await expect(p.locator("#messages .message.user .message-who")).to_have_text("Vous")
    await p.get_by_role("button", name="Raccrocher").click()
    await expect(p.locator("#status-text")).to_have_text("Appel terminé")

    # Switched to Spanish on the page: its strings, and the choice outlives a reload.
    await p.get_by_text("Réglages").click()
    await p.get_by_label("Langue").select_option("es")
    await expect(p.locator("h1")).to_have_text("Chat de voz")
    await p.reload()
    await p.wait_for_function("() => !!window.realtimeApp")
    await expect(p.locator("#start-text")).to_have_text("Iniciar llamada")
    await expect(p.locator("html")).to_have_attribute("lang", "es")
    await expect(p.locator("#messages .message.user .message-who")).to_have_text("Tú")
    await p.get_by_role("button", name="Iniciar llamada").click()
    await expect(p.locator("#status-text")).to_have_text("Conectado", timeout=15000)
    call = await emulator_sessions(relay).wait_for_call(2)
    assert call.config.data["audio"]["input"]["transcription"]["language"] == "es"
    await p.get_by_role("button", name="Colgar").click()
    assert page.unexpected_errors() == []


def earlier_turns(count: int) -> list[dict[str, Any]]:
    turns = []
    for i in range(count):
        turns.append({"id": f"old_u{i}", "role": "user", "text": f"Earlier question {i}", "at": i})
        turns.append(
            {"id": f"old_a{i}", "role": "assistant", "text": f"Earlier answer {i}", "at": i}
        )
    return turns


async def test_history_survives_reloads_and_continues_into_a_new_session(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    relay = await start_relay(**PATIENT)
    tap = Events()
    relay.registry.add_observer(tap)
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"))
    p = page.page
    # Earlier calls' turns, as the page keeps them: enough to scroll.
    await p.evaluate(
        "([key, turns]) => localStorage.setItem(key, JSON.stringify(turns))",
        [HISTORY_KEY, earlier_turns(15)],
    )
    await p.reload()
    await p.wait_for_function("() => !!window.realtimeApp")
    await expect(p.locator("#messages .message.earlier")).to_have_count(30)
    await expect(p.locator(".history-divider")).to_have_text("Earlier conversation")
    await expect(p.locator("#empty")).to_be_hidden()
    await shows_its_end(p)

    # Continue: the earlier turns open the new session, in one user message the relay's
    # policy lets a browser send.
    await p.get_by_role("button", name="Continue this conversation").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    await expect(p.get_by_role("button", name="Continue this conversation")).to_be_hidden()
    call = await emulator_sessions(relay).wait_for_call(1)

    def context_text() -> str:
        for event in call.client_events:
            if isinstance(event, dict) and event.get("type") == "conversation.item.create":
                return str(event["item"]["content"][0]["text"])
        return ""

    await wait_until(lambda: bool(context_text()), 10, "the context item at the emulator")
    text = context_text()
    assert "User: Earlier question 0" in text and "Assistant: Earlier answer 14" in text
    assert text.index("Earlier question 3") < text.index("Earlier answer 3")
    assert not tap.of("relay.policy_denied") and not tap.of("error", "server")
    # The context asks for no answer: no response before the person says something.
    assert not tap.of("response.create")

    box = p.get_by_label("Type a message to the assistant")
    await box.fill("What will the weather be like tomorrow?")
    await p.keyboard.press("Enter")
    state = await page.wait_state(
        "s.messages.some((m) => m.role === 'assistant' && m.final && m.text)", 20
    )
    answer = next(m["text"] for m in state["messages"] if m["role"] == "assistant")
    # The person scrolled up to read; the call ends: the list shows its end again.
    await p.evaluate("document.getElementById('conversation').scrollTop = 0")
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    await shows_its_end(p)

    # A reload: every turn is there, the new ones last.
    await p.reload()
    await p.wait_for_function("() => !!window.realtimeApp")
    await expect(p.locator("#messages .message")).to_have_count(32)
    await expect(p.locator("#messages .message.user").last).to_have_text(
        "YouWhat will the weather be like tomorrow?"
    )
    await expect(p.locator("#messages .message.assistant").last).to_have_text(f"Assistant{answer}")
    stored = json.loads(await p.evaluate(f"localStorage.getItem('{HISTORY_KEY}')"))
    assert [m["text"] for m in stored[-2:]] == ["What will the weather be like tomorrow?", answer]

    # Clear forgets it, for good.
    await p.get_by_text("Settings").click()
    await p.get_by_role("button", name="Clear conversation").click()
    await expect(p.locator("#messages .message")).to_have_count(0)
    await p.reload()
    await p.wait_for_function("() => !!window.realtimeApp")
    await expect(p.locator("#empty")).to_be_visible()
    await expect(p.get_by_role("button", name="Continue this conversation")).to_be_hidden()
    assert page.unexpected_errors() == []


async def test_history_is_bounded(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """A long history keeps its last 200 turns, in the browser's storage and on the page."""
    relay = await start_relay(**PATIENT)
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"))
    p = page.page
    await p.evaluate(
        "([key, turns]) => localStorage.setItem(key, JSON.stringify(turns))",
        [HISTORY_KEY, earlier_turns(150)],
    )
    await p.reload()
    await p.wait_for_function("() => !!window.realtimeApp")
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    await p.get_by_label("Type a message to the assistant").fill("Hello")
    await p.keyboard.press("Enter")
    await page.wait_state("s.messages.some((m) => m.role === 'assistant' && m.final)", 20)
    await p.get_by_role("button", name="End call").click()
    stored = json.loads(await p.evaluate(f"localStorage.getItem('{HISTORY_KEY}')"))
    assert len(stored) == 200
    assert stored[0]["text"] == "Earlier question 51" and stored[-2]["text"] == "Hello"
    assert page.unexpected_errors() == []
