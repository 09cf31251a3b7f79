"""The operator console (``/monitor/``) in real headless Chromium, against the real
operator routes and real recordings: live calls, a call's detail, history search and
playback in step with the transcript, layout at 1280 and 390 px, and axe-core."""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from axe import serious_violations
from browser_harness import BASE_ARGS, CHROMIUM, PHONE_VIEWPORT, SCREENSHOTS
from ops.fakes import FakeCall, FakeDirectory
from ops.recordings import Turn, feed_audio, ops_with_recorder, record_call
from playwright.async_api import expect
from pytest_aiohttp import AiohttpServer
from relay_fixtures import RelayFactory
from support import PacedAudioSource, realtime_client

from relay.config import Secret
from relay.ops.recording import Recorder
from relay.taps import LinkStats, MediaStats

pytestmark = pytest.mark.browser

ADMIN = "console-token"
DESKTOP = {"width": 1280, "height": 900}
PLAYED_TURNS: list[Turn] = [
    (1.5, "user", "Good morning, is my order on its way?"),
    (3.0, "agent", "It left the warehouse this morning."),
    (4.5, "user", "Wonderful, thank you."),
    (6.0, "agent", "You are welcome."),
]
OTHER_TURNS: list[Turn] = [(1.0, "user", "I would like to cancel my subscription.")]


@dataclass
class Console:
    url: str
    directory: FakeDirectory
    live: FakeCall
    played: FakeCall
    other: FakeCall
    recorder: Recorder


@pytest.fixture
async def console(aiohttp_server: AiohttpServer, tmp_path: Path) -> AsyncIterator[Console]:
    ops = ops_with_recorder(tmp_path / "rec", ADMIN)
    directory, recorder, clock = ops.directory, ops.recorder, ops.clock
    server = await aiohttp_server(ops.app, host="127.0.0.1")
    clock.shift = -86400.0  # yesterday's call
    other = await record_call(directory, recorder, clock, OTHER_TURNS, 2.0, "upstream_failed")
    clock.shift = 0.0
    played = await record_call(directory, recorder, clock, PLAYED_TURNS, 7.0)
    live = directory.start(FakeCall(model="gpt-realtime-mini"))
    feeder = asyncio.create_task(feed_audio(directory, live))
    try:
        yield Console(str(server.make_url("/monitor/")), directory, live, played, other, recorder)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*BASE_ARGS, "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_console(browser: Any, url: str, viewport: dict[str, int]) -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport=viewport)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
    await page.goto(url)
    await page.fill("#token", ADMIN)
    await page.click("#token-form button")
    return page, errors


def stats(call_id: str, sample: int) -> MediaStats:
    """The n-th media-stats sample of a call: 40 + 10n ms RTT to the caller, 5 ms of
    jitter, 2 of 50 packets lost since the previous sample."""
    link = LinkStats("caller", "in", "1", 48 * sample, 2 * sample, 0.005)
    return MediaStats(call_id, {}, {}, links=[link], rtt_secs={"caller": 0.04 + 0.01 * sample})


async def test_console_lists_a_live_call_and_shows_its_detail(
    console: Console, browser: Any
) -> None:
    page, errors = await open_console(browser, console.url, DESKTOP)
    row = page.locator(f'tr[data-call-id="{console.live.id}"]')
    await row.wait_for(timeout=10_000)
    await page.fill("#call-filter", "no-such-call")
    await row.wait_for(state="detached", timeout=5_000)
    await page.fill("#call-filter", "mini")
    await row.focus()
    polls = await page.evaluate("window.__monitor.polls")
    await page.wait_for_function(f"window.__monitor.polls > {polls}", timeout=10_000)
    focused = await page.evaluate("document.activeElement.dataset.callId")
    assert focused == console.live.id  # the list's refresh keeps the keyboard's place
    await page.keyboard.press("Enter")  # keyboard: choose the call
    await page.wait_for_function(
        "window.__monitor.levels.caller > -20 && window.__monitor.levels.agent < -20",
        timeout=10_000,
    )
    assert await page.locator("#legs").inner_text() != ""
    assert "connected" in await page.locator("#legs").inner_text()
    assert await page.locator("#vad-caller").inner_text() == "speaking"

    for sample in range(1, 4):
        console.directory.media_stats(stats(console.live.id, sample))
    await page.wait_for_function("window.__monitor.stats >= 3", timeout=10_000)
    assert await page.locator('output[data-series="rtt-caller"]').inner_text() == "70 ms"
    assert await page.locator('output[data-series="jitter-caller"]').inner_text() == "5 ms"
    assert await page.locator('output[data-series="loss-caller"]').inner_text() == "4.0 %"
    path = await page.get_attribute("#spark-rtt-caller path", "d")
    assert path is not None and path.count("L") == 2  # three points: one line, two segments

    console.directory.event(
        console.live,
        "server",
        {"type": "response.output_audio_transcript.done", "item_id": "a", "transcript": "Hi."},
        time.time(),
    )
    await page.wait_for_function(
        "document.querySelector('#transcript').textContent.includes('Hi.')", timeout=10_000
    )
    summary = page.locator("#events summary", has_text="response.output_audio_transcript.done")
    await summary.last.click()  # the event's JSON, expanded
    await expect(page.locator("#events details[open] pre")).to_contain_text(
        '"transcript": "Hi."', timeout=5_000
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-live.png"), full_page=True)
    assert await serious_violations(page) == []
    assert errors == [], errors


async def test_console_plays_listen_in_and_shows_the_end_of_a_call(
    console: Console, browser: Any
) -> None:
    page, errors = await open_console(browser, console.url, DESKTOP)
    await page.locator(f'tr[data-call-id="{console.live.id}"]').click(timeout=10_000)
    await page.wait_for_function("window.__monitor.levels.caller > -20", timeout=10_000)
    now = time.time()
    user_done = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_user",
        "transcript": "Is the line clear?",
    }
    console.directory.event(console.live, "server", user_done, now)
    for delta in ("Crystal ", "clear."):
        event = {"type": "response.output_audio_transcript.delta", "item_id": "b", "delta": delta}
        console.directory.event(console.live, "server", event, now)
    await page.wait_for_function(
        "document.querySelector('#transcript').textContent.includes('Crystal clear.')",
        timeout=10_000,
    )
    assert "Is the line clear?" in await page.locator("#transcript").inner_text()

    await page.click("#listen")
    await page.wait_for_function(
        "window.__monitor.scheduledSecs > 1 && window.__monitor.listenLevel() > -30",
        timeout=10_000,
    )
    assert await page.get_attribute("#listen", "aria-pressed") == "true"
    console.directory.end(console.live, "hangup")
    await page.wait_for_function(
        "document.querySelector('#detail-state').textContent.startsWith('ended')",
        timeout=10_000,
    )
    assert await page.get_attribute("#listen", "aria-pressed") == "false"
    assert await page.is_disabled("#hangup")
    assert errors == [], errors


async def test_console_finds_a_call_by_a_word_and_plays_it_in_step(
    console: Console, browser: Any
) -> None:
    page, errors = await open_console(browser, console.url, DESKTOP)
    await page.click("#tab-history")
    results = page.locator("#recordings .console-result")
    await results.nth(1).wait_for(timeout=10_000)  # both recordings, unfiltered
    await page.fill("#history-q", "subscription")
    await page.press("#history-q", "Enter")
    await page.wait_for_function("window.__monitor.history.searches >= 2", timeout=10_000)
    assert await page.evaluate("window.__monitor.history.results") == [console.other.id]
    assert "cancel my subscription" in await results.first.inner_text()

    # By date (from the browser's today) and by outcome, with the form's other fields.
    await page.fill("#history-q", "")
    today = await page.evaluate("new Date().toLocaleDateString('en-CA')")  # YYYY-MM-DD
    await page.fill("#history-since", today)
    await page.press("#history-q", "Enter")
    await page.wait_for_function("window.__monitor.history.searches >= 3", timeout=10_000)
    found = await page.evaluate("window.__monitor.history.results")
    assert console.played.id in found and console.other.id not in found  # yesterday's
    await page.fill("#history-since", "")
    await page.fill("#history-outcome", "upstream_failed")
    await page.press("#history-q", "Enter")
    await page.wait_for_function("window.__monitor.history.searches >= 4", timeout=10_000)
    assert await page.evaluate("window.__monitor.history.results") == [console.other.id]
    await page.fill("#history-outcome", "")

    await page.fill("#history-q", "warehouse")
    await page.press("#history-q", "Enter")
    await page.wait_for_function("window.__monitor.history.searches >= 5", timeout=10_000)
    assert await page.evaluate("window.__monitor.history.results") == [console.played.id]
    await results.first.focus()
    await page.keyboard.press("Enter")  # keyboard: open the recording
    await page.locator("#player-transcript li").nth(len(PLAYED_TURNS) - 1).wait_for()
    await page.wait_for_function(
        "document.querySelector('#player-audio').duration > 6.9", timeout=10_000
    )
    assert await page.locator("#waveform path.wave-caller").count() == 1

    # Playing: the highlighted line is the one being said (between the previous line's
    # completion and its own), and it moves on as the audio plays.
    starts = [0.0] + [offset for offset, _, _ in PLAYED_TURNS[:-1]]
    await page.evaluate("document.querySelector('#player-audio').play()")
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now, active = await page.evaluate(
            """() => [document.querySelector('#player-audio').currentTime,
                      [...document.querySelectorAll('#player-transcript li')]
                        .findIndex((li) => li.hasAttribute('data-active'))]"""
        )
        expected = max(i for i, start in enumerate(starts) if start <= now)
        if abs(now - starts[expected]) > 0.3:  # not at a boundary, where timeupdate lags
            assert active == expected, (now, active)
            if not seen or seen[-1] != active:
                seen.append(active)
        if now > 4.8:
            break
        await asyncio.sleep(0.1)
    assert seen[:4] == [0, 1, 2, 3][: len(seen)] and len(seen) >= 3, seen

    # A click on a line seeks to where it is said.
    await page.evaluate("document.querySelector('#player-audio').pause()")
    await page.locator("#player-transcript li button").nth(1).click()
    current = await page.evaluate("document.querySelector('#player-audio').currentTime")
    assert abs(current - starts[1]) < 0.05
    assert await page.locator("#player-transcript li").nth(1).get_attribute("data-active") == ""
    await page.focus("#waveform")
    await page.keyboard.press("ArrowRight")  # the waveform seeks by 5 s from the keyboard
    current = await page.evaluate("document.querySelector('#player-audio').currentTime")
    assert abs(current - (starts[1] + 5)) < 0.05
    assert await page.get_attribute("#waveform", "aria-valuenow") == str(round(current))

    async with page.expect_download() as started:
        await page.click('[data-download="audio.wav"]')
    download = await started.value
    assert download.suggested_filename == f"{console.played.id}-audio.wav"
    on_disk = console.recorder.file_path(console.played.id, "audio.wav")
    assert on_disk is not None
    assert await asyncio.to_thread(filecmp.cmp, await download.path(), on_disk, False)
    await page.screenshot(path=str(SCREENSHOTS / "console-history.png"), full_page=True)
    assert await serious_violations(page) == []
    assert errors == [], errors


# Boxes that must not overlap each other (other than one inside another) nor leave
# the viewport.
LAYOUT_JS = """() => {
  const selector = "h1, h2, h3, label, input, select, button, meter, output, svg, audio, " +
    "td, th, p, .console-card, .console-vad, summary";
  const boxes = [...document.querySelectorAll(selector)]
    .filter((el) => el.getClientRects().length && getComputedStyle(el).visibility !== "hidden")
    .map((el) => ({el, r: el.getBoundingClientRect()}))
    .filter(({r}) => r.width > 0 && r.height > 0);
  const name = (el) => el.id ? `#${el.id}` : `${el.tagName.toLowerCase()}.${el.className}` +
    `:${(el.textContent || "").trim().slice(0, 20)}`;
  const problems = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width) {
    problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`);
  }
  for (const {el, r} of boxes) {
    if (r.left < -0.5 || r.right > width + 0.5) problems.push(`${name(el)} leaves the viewport`);
  }
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      if (a.el.contains(b.el) || b.el.contains(a.el)) continue;
      const w = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
      const h = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
      if (w > 1 && h > 1) problems.push(`${name(a.el)} overlaps ${name(b.el)}`);
    }
  }
  return problems;
}"""


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE_VIEWPORT], ids=["1280px", "390px"])
async def test_console_layout_has_no_overlap_or_sideways_scroll(
    console: Console, browser: Any, viewport: dict[str, int]
) -> None:
    page, errors = await open_console(browser, console.url, viewport)
    row = page.locator(f'tr[data-call-id="{console.live.id}"]')
    await row.click(timeout=10_000)
    console.directory.media_stats(stats(console.live.id, 1))
    await page.wait_for_function("window.__monitor.stats >= 1", timeout=10_000)
    assert await page.evaluate(LAYOUT_JS) == []

    await page.click("#tab-history")
    await page.locator(f'.console-result[data-call-id="{console.played.id}"]').click(timeout=10_000)
    await page.locator("#player-transcript li").nth(len(PLAYED_TURNS) - 1).wait_for()
    await page.wait_for_function("document.querySelector('#waveform path')", timeout=10_000)
    assert await page.evaluate(LAYOUT_JS) == []
    label = f"{viewport['width']}px"
    await page.screenshot(path=str(SCREENSHOTS / f"console-{label}.png"), full_page=True)
    assert errors == [], errors


async def test_console_shows_a_real_calls_legs_and_hangs_it_up(
    start_relay: RelayFactory, browser: Any
) -> None:
    """A real WebRTC call through the relay: its transport and ICE pair in the detail,
    and the console's hang-up (pressed twice) ends it."""
    relay = await start_relay(admin_token=Secret(ADMIN))
    async with realtime_client(PacedAudioSource()) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201, await response.text()
        call_id = (client.location or "").rsplit("/", 1)[-1]
        await client.wait_for("session.created", timeout=10)
        page, errors = await open_console(browser, relay.url("/monitor/"), DESKTOP)
        await page.locator(f'tr[data-call-id="{call_id}"]').click(timeout=10_000)
        caller_leg = page.locator("#legs tr", has_text="caller")
        await caller_leg.get_by_text("127.0.0.1").wait_for(timeout=10_000)
        leg = await caller_leg.inner_text()
        assert "udp" in leg and "connected" in leg, leg  # the path: UDP, host candidates
        assert "(host)" in leg, leg

        await page.click("#hangup")
        assert relay.registry.get(call_id) is not None  # the first press only arms it
        await page.click("#hangup")
        await page.wait_for_function(
            "document.querySelector('#detail-state').textContent.startsWith('ended · hangup')",
            timeout=10_000,
        )
        assert relay.registry.get(call_id) is None
        assert errors == [], errors


async def test_voice_page_has_no_serious_accessibility_violations(
    start_relay: RelayFactory, browser: Any
) -> None:
    relay = await start_relay()
    page = await browser.new_page(viewport=DESKTOP)
    await page.goto(relay.url("/"))
    await page.wait_for_load_state("networkidle")
    assert await serious_violations(page) == []
