"""Each failure a person can meet on the voice page shows its own actionable message."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from browser_harness import WEB_DIR, screenshot, wait_until
from playwright.async_api import expect
from relay_fixtures import RelayFactory

from relay.config import Secret

pytestmark = pytest.mark.browser

# Chrome logs every non-2xx fetch as "Failed to load resource"; that is expected here.
HTTP_NOISE = ("Failed to load resource",)


async def banner(page: Any) -> dict[str, str]:
    await expect(page.locator("#banner")).to_be_visible(timeout=15000)
    code = await page.get_attribute("#banner", "data-code") or "unknown"
    await screenshot(page, f"error-{code}.png")
    return {
        "code": await page.get_attribute("#banner", "data-code") or "",
        "title": await page.inner_text("#banner-title"),
        "message": await page.inner_text("#banner-message"),
        "action": await page.inner_text("#banner-action")
        if await page.is_visible("#banner-action")
        else "",
    }


async def test_microphone_permission_denied(
    launch: Any, open_page: Any, static_site: str, silent_wav: Path
) -> None:
    browser = await launch(wav=silent_wav, permission="deny")
    page = await open_page(browser, static_site)
    await page.page.get_by_role("button", name="Start call").click()
    shown = await banner(page.page)
    assert shown["code"] == "mic_permission_denied"
    assert shown["title"] == "Microphone access denied"
    assert "Allow the microphone for this site" in shown["message"]
    assert shown["action"] == "Try again"
    await expect(page.page.locator("#status-text")).to_have_text("Not connected")
    await expect(page.page.locator("#start")).to_be_enabled()
    # The person can dismiss it with the keyboard.
    await page.page.focus("#banner-close")
    await page.page.keyboard.press("Enter")
    await expect(page.page.locator("#banner")).to_be_hidden()
    assert page.unexpected_errors() == []


async def test_no_microphone(launch: Any, open_page: Any, static_site: str) -> None:
    browser = await launch(mic="none")
    page = await open_page(browser, static_site)
    await page.page.get_by_role("button", name="Start call").click()
    shown = await banner(page.page)
    assert shown["code"] == "no_mic"
    assert shown["title"] == "No microphone found"
    assert "Plug in or enable a microphone" in shown["message"]
    assert page.unexpected_errors() == []


async def test_insecure_origin(launch: Any, open_page: Any, silent_wav: Path) -> None:
    """A plain-http page on a real host name (not localhost) gets no microphone API."""

    async def serve(route: Any) -> None:
        path = route.request.url.split("voice.example", 1)[1].split("?", 1)[0]
        file = WEB_DIR / ("index.html" if path in ("", "/") else path.removeprefix("/web/"))
        types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
        await route.fulfill(
            status=200, body=file.read_bytes(), content_type=types.get(file.suffix, "text/plain")
        )

    browser = await launch(wav=silent_wav)
    page = await open_page(
        browser, "http://voice.example/", routes={"http://voice.example/**": serve}
    )
    assert await page.page.evaluate("window.isSecureContext") is False
    shown = await banner(page.page)  # shown as soon as the page loads
    assert shown["code"] == "insecure_origin"
    await page.page.get_by_role("button", name="Start call").click()
    shown = await banner(page.page)
    assert shown["code"] == "insecure_origin"
    assert shown["title"] == "This page is not secure"
    assert "https://" in shown["message"] and "http://voice.example" in shown["message"]
    assert page.unexpected_errors() == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_relay_unreachable(
    launch: Any, open_page: Any, static_site: str, silent_wav: Path
) -> None:
    port = closed_port()
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, static_site, config={"baseUrl": f"http://127.0.0.1:{port}"})
    await page.page.get_by_role("button", name="Start call").click()
    shown = await banner(page.page)
    assert shown["code"] == "relay_unreachable"
    assert shown["title"] == "Relay unreachable"
    assert f"127.0.0.1:{port}" in shown["message"]
    # No microphone stays open after a failed start.
    assert await page.page.evaluate("window.realtimeApp.client.peerConnection") is None
    assert page.unexpected_errors(("ERR_CONNECTION_REFUSED", *HTTP_NOISE)) == []


async def test_relay_refuses_the_key_401(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """The host app's backend hands out a key the relay does not know: HTTP 401."""
    relay = await start_relay()

    async def stale_token(route: Any) -> None:
        await route.fulfill(
            status=200, content_type="application/json", body=json.dumps({"value": "ek_revoked"})
        )

    browser = await launch(wav=silent_wav)
    page = await open_page(
        browser, relay.url("/"), routes={"**/api/demo/client_secret": stale_token}
    )
    await page.page.get_by_role("button", name="Start call").click()
    shown = await banner(page.page)
    assert shown["code"] == "unauthorized"
    assert shown["title"] == "Session key refused (HTTP 401)"
    assert "HTTP 401" in shown["message"] and "press Start to get a new one" in shown["message"]
    assert len(relay.registry) == 0
    assert page.unexpected_errors(HTTP_NOISE) == []


async def test_upstream_unreachable_502(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """The relay cannot reach OpenAI (nothing listens at its base URL): HTTP 502."""
    relay = await start_relay(
        openai_api_key=Secret("sk-test-unreachable"),
        openai_base_url=f"http://127.0.0.1:{closed_port()}/v1",
        upstream_timeout_secs=3.0,
    )
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"))
    await page.page.get_by_role("button", name="Start call").click()
    shown = await banner(page.page)
    assert shown["code"] == "upstream_unreachable"
    assert shown["title"] == "Voice service unreachable (HTTP 502)"
    assert "HTTP 502" in shown["message"]
    assert shown["action"] == "Try again"
    assert len(relay.registry) == 0
    assert page.unexpected_errors(HTTP_NOISE) == []


# Chrome's "document-user-activation-required" autoplay policy, which Chrome applies to
# sites a person has not interacted with (headless Chromium does not enforce it): play()
# with sound is refused until the person has clicked or typed in the document. (Playwright
# evaluates its own scripts as user gestures, so the policy watches real input events.)
AUTOPLAY_POLICY_JS = """(() => {
  const play = HTMLMediaElement.prototype.play;
  let interacted = false;
  const mark = (event) => { if (event.isTrusted) interacted = true; };
  for (const type of ['pointerdown', 'keydown']) addEventListener(type, mark, true);
  window.__playRefused = 0;
  HTMLMediaElement.prototype.play = function () {
    if (!interacted) {
      window.__playRefused++;
      return Promise.reject(new DOMException(
        "play() failed because the user didn't interact with the document first.",
        "NotAllowedError"));
    }
    return play.call(this);
  };
})();"""


async def test_autoplay_blocked_then_enabled(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """An app that starts the call without a click: the agent's audio is blocked until
    the person presses "Enable audio"; then it plays."""
    relay = await start_relay()
    browser = await launch(wav=silent_wav)
    # The app connects as soon as the page loads, before the person touches anything.
    auto_connect = "addEventListener('load', () => window.realtimeApp.client.connect());"
    page = await open_page(browser, relay.url("/"), init_scripts=(AUTOPLAY_POLICY_JS, auto_connect))
    p = page.page
    shown = await banner(p)
    assert shown["code"] == "autoplay_blocked"
    assert shown["title"] == "Audio is blocked"
    assert shown["action"] == "Enable audio"
    assert await p.evaluate("window.__playRefused") >= 1
    await expect(p.locator("#status-text")).to_have_text("Connected")  # the call goes on

    await p.get_by_role("button", name="Enable audio").click()
    await expect(p.locator("#banner")).to_be_hidden()
    assert await p.evaluate("document.getElementById('agent-audio').paused") is False
    # The agent's answer to a typed message is now heard.
    await p.get_by_label("Type a message to the assistant").fill("Hello?")
    await p.get_by_role("button", name="Send").click()

    async def heard() -> bool:
        return await p.evaluate("window.realtimeApp.client.getOutputLevel()") > 0.01  # type: ignore[no-any-return]

    await wait_until(heard, 20, "the agent's audio to play", interval_s=0.05)
    await p.get_by_role("button", name="End call").click()
    await wait_until(lambda: len(relay.registry) == 0, 5, "the relay to end the call")
    assert page.unexpected_errors() == []


async def test_transcription_not_arriving(
    start_relay: RelayFactory, launch: Any, open_page: Any, call_wav: Path
) -> None:
    """The app's backend mints the session without transcription (and the page trusts the
    backend's session): the person speaks, the agent answers, no transcript comes."""
    relay = await start_relay()

    async def backend_without_transcription(route: Any) -> None:
        body = json.loads(route.request.post_data or "{}")
        body["session"]["audio"]["input"]["transcription"] = None
        await route.continue_(post_data=json.dumps(body))

    browser = await launch(wav=call_wav)
    page = await open_page(
        browser,
        relay.url("/"),
        config={"sessionUpdateOnOpen": False, "transcriptionTimeoutMs": 3000},
        routes={"**/api/demo/client_secret": backend_without_transcription},
    )
    p = page.page
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    shown = await banner(p)
    assert shown["code"] == "transcription_missing"
    assert shown["title"] == "No transcript yet"
    assert "No transcript of your speech arrived within 3 s" in shown["message"]
    assert "whisper-1" in shown["message"]
    assert await p.get_attribute("#banner", "data-tone") == "warning"
    await expect(p.locator("#status-text")).to_have_text("Connected")  # the call goes on
    await p.get_by_role("button", name="End call").click()
    await wait_until(lambda: len(relay.registry) == 0, 5, "the relay to end the call")
    assert page.unexpected_errors() == []
