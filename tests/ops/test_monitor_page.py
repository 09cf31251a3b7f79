"""The monitor page in real headless Chromium: live calls, live transcript, levels and
listen-in audio played through WebAudio, against the real operator routes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from browser.browser_harness import BASE_ARGS, CHROMIUM  # tests/browser's Chromium flags
from pytest_aiohttp import AiohttpServer

from relay.config import Secret
from relay.http.errors import error_middleware
from relay.http.ops_routes import setup_ops_routes
from relay.ops.components import Ops
from relay.ops.metrics import RelayMetrics
from relay.ops.monitor import MonitorHub

from .fakes import FRAME_SECS, FakeCall, FakeDirectory, tone

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's `chromium` is not installed"),
]

ADMIN = "monitor-page-token"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


async def feed_audio(directory: FakeDirectory, call: FakeCall) -> None:
    """Caller and agent tones in real time, 20 ms frames, until cancelled."""
    t0 = time.time()
    index = 0
    while True:
        stamp = t0 + index * FRAME_SECS
        await asyncio.sleep(max(0.0, stamp - time.time()))
        directory.audio(call, "caller", tone(440, start=index * 480), stamp)
        directory.audio(call, "agent", tone(660, amplitude=0.1, start=index * 480), stamp)
        index += 1


@pytest.fixture
async def live_call(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[str, Any, Any]]:
    metrics = RelayMetrics(process=False)
    directory = FakeDirectory()
    ops = Ops(
        directory=directory,
        metrics=metrics,
        hub=MonitorHub(directory.snapshot_of, metrics),
        admin_token=Secret(ADMIN),
    )
    app = web.Application(middlewares=[error_middleware])
    setup_ops_routes(app, ops)
    server = await aiohttp_server(app, host="127.0.0.1")
    call = directory.start(FakeCall(model="gpt-realtime"))
    feeder = asyncio.create_task(feed_audio(directory, call))
    try:
        yield str(server.make_url("/monitor/")), directory, call
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


async def test_monitor_page_shows_calls_transcript_levels_and_plays_listen_in(
    live_call: tuple[str, FakeDirectory, FakeCall],
) -> None:
    from playwright.async_api import async_playwright

    url, directory, call = live_call
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*BASE_ARGS, "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
            await page.goto(url)
            await page.fill("#token", ADMIN)
            await page.click("#token-form button")
            row = page.locator(f'tr[data-call-id="{call.id}"]')
            await row.wait_for(timeout=10_000)
            await row.click()
            await page.wait_for_function(
                "window.__monitor.levels.caller > -20 && window.__monitor.levels.agent < -20",
                timeout=10_000,
            )

            now = time.time()
            directory.event(
                call,
                "server",
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": "item_user",
                    "transcript": "Is the line clear?",
                },
                now,
            )
            for delta in ("Crystal ", "clear."):
                directory.event(
                    call,
                    "server",
                    {
                        "type": "response.output_audio_transcript.delta",
                        "item_id": "item_agent",
                        "delta": delta,
                    },
                    now,
                )
            await page.wait_for_function(
                "document.querySelector('#transcript').textContent.includes('Crystal clear.')",
                timeout=10_000,
            )
            transcript = await page.locator("#transcript").inner_text()
            assert "Is the line clear?" in transcript

            await page.click("#listen")
            await page.wait_for_function(
                "window.__monitor.scheduledSecs > 1 && window.__monitor.listenLevel() > -30",
                timeout=10_000,
            )
            assert await page.get_attribute("#listen", "aria-pressed") == "true"
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOTS / "monitor.png"), full_page=True)

            directory.end(call, "hangup")
            await page.wait_for_function(
                "document.querySelector('#detail-state').textContent.startsWith('ended')",
                timeout=10_000,
            )
            assert await page.get_attribute("#listen", "aria-pressed") == "false"
            assert errors == [], errors
        finally:
            await browser.close()
