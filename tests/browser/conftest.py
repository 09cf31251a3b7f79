"""Fixtures of the browser tests: Playwright, Chromium launches, pages.

Every browser test is skipped (with the reason) only when Debian's ``chromium`` is not
installed; ``make test`` installs it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_harness import BASE_ARGS, CHROMIUM, DESKTOP_VIEWPORT, WEB_DIR, PageUnderTest, write_wav


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM is not None:
        return
    skip = pytest.mark.skip(
        reason="Debian's `chromium` is not installed "
        "(`make test`, or scripts/install-system-deps.sh, installs it)"
    )
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def call_wav(tmp_path_factory: pytest.TempPathFactory, speech_48k: np.ndarray) -> Path:
    """The fake microphone of a call: the speech, then 5 s of silence in which the agent
    answers (Chromium loops the file)."""
    path = tmp_path_factory.mktemp("mic") / "speech-then-silence.wav"
    return write_wav(path, np.concatenate([speech_48k, np.zeros(5 * 48000, dtype=np.int16)]))


@pytest.fixture(scope="session")
def silent_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A microphone that hears nothing (for typed-message tests)."""
    path = tmp_path_factory.mktemp("mic") / "silence.wav"
    return write_wav(path, np.zeros(2 * 48000, dtype=np.int16))


@pytest.fixture
async def playwright() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        yield p


Launch = Callable[..., Awaitable[Any]]


@pytest.fixture
async def launch(playwright: Any) -> AsyncIterator[Launch]:
    """``await launch(wav=path)``: Chromium with a fake microphone playing ``wav``.

    ``mic="none"`` gives a machine without any microphone; ``permission="deny"`` makes the
    browser refuse microphone access as a person clicking "Block" would; ``args`` adds flags.
    """
    browsers: list[Any] = []

    async def start(
        *,
        wav: Path | None = None,
        mic: str = "fake",
        permission: str = "grant",
        args: tuple[str, ...] = (),
        executable: str | None = None,
    ) -> Any:
        flags = list(BASE_ARGS)
        if mic == "fake":
            flags.append("--use-fake-device-for-media-stream")
            if wav is not None:
                flags.append(f"--use-file-for-fake-audio-capture={wav}")
        flags.append(
            "--use-fake-ui-for-media-stream=deny"
            if permission == "deny"
            else "--use-fake-ui-for-media-stream"
        )
        flags.extend(args)
        browser = await playwright.chromium.launch(
            executable_path=executable or CHROMIUM, headless=True, args=flags
        )
        browsers.append(browser)
        return browser

    yield start
    for browser in browsers:
        with contextlib.suppress(Exception):
            await browser.close()


OpenPage = Callable[..., Awaitable[PageUnderTest]]


@pytest.fixture
async def open_page() -> AsyncIterator[OpenPage]:
    """``await open_page(browser, url, config={...})``: a new context and page, with
    ``window.REALTIME_RELAY_CONFIG = config`` set before the page's scripts run."""
    contexts: list[Any] = []

    async def open_(
        browser: Any,
        url: str,
        *,
        config: dict[str, Any] | None = None,
        init_scripts: tuple[str, ...] = (),
        viewport: dict[str, int] | None = None,
        routes: dict[str, Callable[..., Awaitable[None]]] | None = None,
        goto: bool = True,
    ) -> PageUnderTest:
        context = await browser.new_context(viewport=viewport or DESKTOP_VIEWPORT)
        contexts.append(context)
        if config is not None:
            await context.add_init_script(f"window.REALTIME_RELAY_CONFIG = {json.dumps(config)};")
        for script in init_scripts:
            await context.add_init_script(script)
        page = await context.new_page()
        result = PageUnderTest(page)
        page.on("console", lambda m: m.type == "error" and result.console_errors.append(m.text))
        page.on("pageerror", lambda e: result.page_errors.append(str(e)))
        page.on(
            "response",
            lambda r: (
                r.status >= 400
                and result.http_errors.append(f"{r.request.method} {r.url} -> {r.status}")
            ),
        )
        for pattern, handler in (routes or {}).items():
            await page.route(pattern, handler)
        if goto:
            await page.goto(url)
            await page.wait_for_function("() => !!window.realtimeApp", timeout=10000)
        return result

    yield open_
    for context in contexts:
        with contextlib.suppress(Exception):
            await context.close()


@pytest.fixture
async def static_site() -> AsyncIterator[str]:
    """The page's files served as the relay serves them (``/`` and ``/web/``), without a
    relay behind them: for failures that happen in the browser before any call."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/web/", WEB_DIR)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/"))
    await server.close()
