"""The voice page (``GET /``) in real headless Chromium, calling through the relay to the
built-in OpenAI emulator: what a person sees and hears."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    LEVEL_SAMPLER_JS,
    PHONE_VIEWPORT,
    RECORD_GUM_JS,
    screenshot,
    wait_until,
)
from playwright.async_api import expect
from relay_fixtures import RelayFactory
from support import rms_dbfs

from relay.taps import CallEnd, CallInfo, Observer, Speaker, TappedEvent

pytestmark = pytest.mark.browser

MIC_CONSTRAINTS = {
    "echoCancellation": True,
    "noiseSuppression": True,
    "autoGainControl": True,
    "sampleRate": 24000,
    "channelCount": 1,
}

# Records every distinct (userTranscript, settled?) the page's client goes through.
RECORD_USER_TRANSCRIPT_JS = """() => {
  window.__userHistory = [];
  window.realtimeApp.client.subscribe((s) => {
    const entry = {text: s.userTranscript, final: s.userTranscriptFinal};
    const prev = window.__userHistory[window.__userHistory.length - 1];
    const changed = !prev || prev.text !== entry.text || prev.final !== entry.final;
    if (changed) window.__userHistory.push(entry);
  });
}"""


# Counts, after each render, the times the "now speaking" strip showed a turn, and the turns it
# showed that the conversation also showed as a bubble (the strip shows turns in progress only).
RECORD_STRIP_JS = """() => {
  window.__strip = {shown: {user: 0, agent: 0}, repeated: []};
  window.realtimeApp.client.subscribe((s) => {
    for (const [side, role] of [["user", "user"], ["agent", "assistant"]]) {
      if (document.getElementById(`${side}-live`).hidden) continue;
      window.__strip.shown[side] += 1;
      const turn = [...s.messages].reverse().find((m) => m.role === role);
      const bubble = turn && document.querySelector(`#messages li[data-id$="${turn.id}"]`);
      if (bubble) window.__strip.repeated.push(bubble.textContent);
    }
  });
}"""


class CallTap(Observer):
    """A relay call observer: the caller's audio as the relay sends it on to OpenAI's
    side (the emulator), the events it forwards, and how each call ended."""

    name = "call-tap"

    def __init__(self) -> None:
        self.caller_frames: list[tuple[float, float]] = []  # (arrival, dBFS)
        self.events: list[tuple[float, str, str]] = []
        self.started: list[str] = []
        self.ended: dict[str, str] = {}

    def call_started(self, call: CallInfo) -> None:
        self.started.append(call.call_id)

    def audio(self, call_id: str, speaker: Speaker, pcm: Any, wallclock: float) -> None:
        if speaker == "caller":
            self.caller_frames.append((time.monotonic(), rms_dbfs(pcm)))

    def event(self, call_id: str, event: TappedEvent) -> None:
        self.events.append((time.monotonic(), event.direction, event.type))

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        self.ended[call.call_id] = end.outcome

    def caller_frames_since(self, t: float) -> list[float]:
        return [db for arrival, db in self.caller_frames if arrival >= t]

    def server_events_since(self, t: float, kind: str) -> int:
        return sum(1 for at, d, k in self.events if at >= t and d == "server" and k == kind)


@pytest.mark.parametrize("upstream_transport", ["webrtc", "websocket"])
async def test_voice_call_through_the_relay(
    start_relay: RelayFactory, launch: Any, open_page: Any, call_wav: Path, upstream_transport: str
) -> None:
    """Speak, see both transcripts, hear the agent, mute, hang up: all through the relay
    (whichever transport the relay uses to OpenAI: the page cannot tell)."""
    relay = await start_relay(upstream_transport=upstream_transport)
    tap = CallTap()
    relay.registry.add_observer(tap)
    browser = await launch(wav=call_wav)
    page = await open_page(
        browser,
        relay.url("/"),
        # Incremental transcription deltas (whisper-1 sends one delta with everything).
        config={"transcriptionModel": "gpt-4o-transcribe"},
        init_scripts=(RECORD_GUM_JS, LEVEL_SAMPLER_JS),
    )
    p = page.page
    await p.evaluate(RECORD_USER_TRANSCRIPT_JS)
    await p.evaluate(RECORD_STRIP_JS)
    await expect(p.locator("#status-text")).to_have_text("Not connected")
    await expect(p.locator("#mute")).to_be_disabled()

    # Start: connected, with the microphone captured exactly as specified.
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    assert await p.evaluate("window.__gumCalls") == [{"audio": MIC_CONSTRAINTS}]
    await expect(p.locator("#mute")).to_be_enabled()
    call_id = (await page.state())["callId"]
    assert call_id and relay.registry.get_call(call_id) is not None

    # The speaking indicator follows the server's VAD, and the level meter moves.
    await expect(p.locator("#speaking")).to_have_attribute("data-state", "speaking", timeout=10000)
    await expect(p.locator("#speaking-text")).to_have_text("You are speaking")
    await p.wait_for_function("window.__levels.maxMic > 0.01", timeout=5000)
    await p.wait_for_function(
        "Number(document.getElementById('mic-meter').getAttribute('aria-valuenow')) > 0",
        timeout=5000,
    )
    await expect(p.locator("#speaking")).not_to_have_attribute(
        "data-state", "speaking", timeout=10000
    )

    # The user's words appear progressively, then settle.
    state = await page.wait_state(
        "s.messages.some((m) => m.role === 'user' && m.source === 'voice' && m.final && m.text)", 25
    )
    final_user = next(
        m for m in state["messages"] if m["role"] == "user" and m["final"] and m["text"]
    )
    history = await p.evaluate("window.__userHistory")
    partial = [h for h in history if not h["final"] and h["text"]]
    assert partial, f"no progressive user transcript: {history}"
    assert any(
        final_user["text"].startswith(h["text"]) and len(h["text"]) < len(final_user["text"])
        for h in partial
    ), history
    await expect(p.locator("#messages .message.user").first).to_contain_text(
        final_user["text"][:20]
    )
    await expect(p.locator("#user-transcript[data-final='true']")).not_to_have_text("")

    # The agent's words appear, in the live strip and in the conversation.
    await expect(p.locator("#agent-transcript")).not_to_have_text("", timeout=20000)
    await expect(p.locator("#messages .message.assistant").first).not_to_have_text("", timeout=5000)

    # The agent's audio really plays: decoded samples with energy, and a level on the
    # analyser of the stream that the <audio> element plays.
    async def agent_audible() -> bool:
        stats = await page.audio_stats()
        levels = await p.evaluate("window.__levels")
        inbound = (stats or {}).get("inbound") or {}
        return (
            inbound.get("totalSamplesReceived", 0) > 0
            and inbound.get("totalAudioEnergy", 0) > 0
            and levels["maxOut"] > 0.02
        )

    await wait_until(agent_audible, 20, "the agent's audio to play")
    stats = await page.audio_stats()
    assert stats["inbound"]["codec"] == "audio/opus"
    assert stats["inbound"]["bytesReceived"] > 1000
    assert await p.evaluate("document.getElementById('agent-audio').srcObject !== null")

    # Mid-call, once the agent has answered a whole turn: what a person sees.
    await page.wait_state(
        "s.messages.some((m) => m.role === 'assistant' && m.final && !m.interrupted && m.text)", 25
    )
    shot = await screenshot(p, "call.png")
    await p.set_viewport_size(PHONE_VIEWPORT)
    await screenshot(p, "call-phone.png")
    await p.set_viewport_size({"width": 1200, "height": 900})
    assert shot.stat().st_size > 10_000

    # The caller's speech reached the relay's upstream side before muting...
    assert sum(1 for db in tap.caller_frames_since(0) if db > -45) > 20
    # ...and mute stops it: the relay keeps receiving frames, all silent.
    await p.get_by_role("button", name="Mute").click()
    await expect(p.locator("#mute")).to_have_attribute("aria-pressed", "true")
    await expect(p.locator("#speaking-text")).to_have_text("Muted")
    await asyncio.sleep(0.5)  # frames already in flight
    muted_at = time.monotonic()
    await asyncio.sleep(3.0)
    muted = tap.caller_frames_since(muted_at)
    assert len(muted) > 100, f"the relay stopped receiving frames: {len(muted)}"
    assert max(muted) < -60, f"speech got through while muted: {max(muted):.1f} dBFS"
    assert tap.server_events_since(muted_at, "input_audio_buffer.speech_started") == 0
    assert await p.get_attribute("#mic-meter", "aria-valuenow") == "0"
    await p.get_by_role("button", name="Unmute").click()
    await expect(p.locator("#mute")).to_have_attribute("aria-pressed", "false")

    # Hang up: the call ends on the relay.
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    await wait_until(
        lambda: relay.registry.get_call(call_id) is None, 5, "the relay to end the call"
    )
    await wait_until(lambda: call_id in tap.ended, 5, "the call_ended tap")
    assert tap.ended[call_id] == "hangup"
    # The page's session.update was accepted, and OpenAI's side reported no error.
    assert any(d == "client" and k == "session.update" for _, d, k in tap.events)
    assert any(d == "server" and k == "session.updated" for _, d, k in tap.events)
    assert not any(d == "server" and k == "error" for _, d, k in tap.events)
    await expect(p.locator("#start")).to_be_enabled()
    # The strip showed both sides' turns in progress, naming the assistant so, and never
    # repeated a bubble; after the call it is gone, no "…" bubble hangs at the bottom, and
    # every bubble has words.
    strip = await p.evaluate("window.__strip")
    assert strip["shown"]["user"] > 0 and strip["shown"]["agent"] > 0, strip
    assert strip["repeated"] == [], strip
    await expect(p.locator("#agent-live .live-label")).to_have_text("Assistant")
    await expect(p.locator("#live")).to_be_hidden()
    texts = await p.locator("#messages .message-text").all_text_contents()
    assert texts and all(t.strip() and t.strip() != "…" for t in texts), texts
    assert page.unexpected_errors() == []


async def tab_to(page: Any, element_id: str, presses: int = 12) -> None:
    """Press Tab until ``element_id`` has the focus, as a keyboard user would."""
    for _ in range(presses):
        focused = await page.evaluate("document.activeElement && document.activeElement.id")
        if focused == element_id:
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} is not reachable with Tab")


async def test_typed_message_gets_a_spoken_answer(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """With the keyboard only: start, type a message, hear the answer, end."""
    relay = await start_relay()
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"), init_scripts=(LEVEL_SAMPLER_JS,))
    p = page.page
    await tab_to(p, "start")
    await p.keyboard.press("Enter")
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    before = (await page.audio_stats())["inbound"] or {}

    box = p.get_by_label("Type a message to the assistant")
    await tab_to(p, "message")
    await p.keyboard.type("What will the weather be like tomorrow?")
    await p.keyboard.press("Enter")
    await expect(box).to_have_value("")
    await expect(p.locator("#messages .message.user")).to_contain_text(
        "What will the weather be like tomorrow?"
    )
    state = await page.wait_state(
        "s.messages.some((m) => m.role === 'assistant' && m.final && m.text)", 20
    )
    answer = next(m for m in state["messages"] if m["role"] == "assistant")
    assert answer["text"].strip()
    await expect(p.locator("#agent-transcript")).to_have_text(state["agentTranscript"])

    async def spoken() -> bool:
        inbound = ((await page.audio_stats()) or {}).get("inbound") or {}
        levels = await p.evaluate("window.__levels")
        return (
            inbound.get("totalAudioEnergy", 0) > before.get("totalAudioEnergy", 0)
            and levels["maxOut"] > 0.02
        )

    await wait_until(spoken, 20, "the spoken answer to play")
    call_id = state["callId"]
    await p.keyboard.press("Shift+Tab")  # from the message box back to "End call"
    assert await p.evaluate("document.activeElement.id") == "end"
    await p.keyboard.press("Enter")
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    await wait_until(
        lambda: relay.registry.get_call(call_id) is None, 5, "the relay to end the call"
    )
    assert page.unexpected_errors() == []


async def test_direct_mode_calls_openai_itself(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """Direct mode: the relay only hands out an OpenAI ephemeral key; the browser's call
    goes to OpenAI (here the emulator) without the relay in the media path."""
    relay = await start_relay(enable_direct_session=True)
    # OpenAI's API answers browsers' CORS preflights; the browser cannot call it otherwise.
    async with relay.http.options(
        f"{relay.emulator_base_url}/realtime/calls",
        headers={
            "Origin": relay.url("/").rstrip("/"),
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    ) as preflight:
        cors = "Access-Control-Allow-Origin" in preflight.headers
        status = preflight.status
    assert cors, f"no CORS on the emulator (HTTP {status})"
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"), config={"mode": "direct"})
    p = page.page
    await expect(p.locator("#mode")).to_have_value("direct")
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#status-text")).to_have_text("Connected", timeout=15000)
    assert len(relay.registry) == 0  # not through the relay
    stats = await page.audio_stats()
    assert stats["pair"]["remote"] == "127.0.0.1"
    await p.get_by_label("Type a message to the assistant").fill("Hello there")
    await p.keyboard.press("Enter")
    await page.wait_state("s.messages.some((m) => m.role === 'assistant' && m.final && m.text)", 20)
    await p.get_by_role("button", name="End call").click()
    await expect(p.locator("#status-text")).to_have_text("Call ended")
    assert page.unexpected_errors() == []


async def test_direct_mode_disabled(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    relay = await start_relay()  # enable_direct_session is off by default
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"))
    p = page.page
    await p.get_by_text("Settings").click()
    await p.get_by_label("Connection").select_option("direct")
    await p.get_by_role("button", name="Start call").click()
    await expect(p.locator("#banner")).to_be_visible()
    assert await p.get_attribute("#banner", "data-code") == "direct_mode_disabled"
    await expect(p.locator("#banner-title")).to_have_text("Direct mode unavailable (HTTP 404)")
    await expect(p.locator("#banner-message")).to_contain_text("Switch to relay mode")
    assert page.unexpected_errors(("Failed to load resource",)) == []


LABELS_JS = """() => {
  const unlabelled = [];
  for (const el of document.querySelectorAll('button, input, select, [role=meter]')) {
    if (el.closest('[hidden]')) continue;
    const by = el.getAttribute('aria-labelledby');
    const label = el.labels && el.labels.length ? el.labels[0].textContent
      : el.getAttribute('aria-label') || (by && document.getElementById(by).textContent)
        || el.textContent;
    if (!label || !label.trim()) unlabelled.push(el.outerHTML.slice(0, 80));
  }
  return unlabelled;
}"""


async def test_page_fits_a_phone_and_every_control_is_labelled(
    launch: Any, open_page: Any, static_site: str, silent_wav: Path
) -> None:
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, static_site, viewport=PHONE_VIEWPORT)
    p = page.page
    assert await p.evaluate(LABELS_JS) == []
    assert await p.evaluate("document.scrollingElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    for name in ("Start call", "Mute", "End call", "Send"):
        box = await p.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["height"] >= 44, (name, box)  # a finger-sized target
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE_VIEWPORT["width"], (name, box)
        assert box["y"] + box["height"] <= PHONE_VIEWPORT["height"], (name, box)
    await screenshot(p, "idle-phone.png")
    assert page.unexpected_errors() == []


async def test_leaving_the_page_hangs_up(
    start_relay: RelayFactory, launch: Any, open_page: Any, silent_wav: Path
) -> None:
    """Closing the tab mid-call hangs up at once (not only after the relay's media timeout)."""
    relay = await start_relay(media_timeout_secs=30.0)
    tap = CallTap()
    relay.registry.add_observer(tap)
    browser = await launch(wav=silent_wav)
    page = await open_page(browser, relay.url("/"))
    await page.page.get_by_role("button", name="Start call").click()
    await expect(page.page.locator("#status-text")).to_have_text("Connected", timeout=15000)
    call_id = (await page.state())["callId"]
    closed_at = time.monotonic()
    await page.page.close()
    await wait_until(lambda: call_id in tap.ended, 5, "the relay to end the call")
    assert time.monotonic() - closed_at < 3
    # The page's hang-up, or the closed peer connection, whichever the relay sees first.
    assert tap.ended[call_id] in ("hangup", "caller_closed")
