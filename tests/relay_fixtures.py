"""Fixtures that start the relay (with its embedded emulator) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.config import EmulatorSettings, Settings
from relay.embedded import build_app
from relay.http.state import CONNECTOR, REGISTRY

BASE_SETTINGS = Settings(
    open_mode=True,
    ice_addresses=("127.0.0.1",),
    noise_suppression="off",
    media_timeout_secs=3.0,
    # A caller whose connection fails ends the call at once (the old behaviour), except in
    # the reconnect tests (tests/test_caller_reconnect.py), which set a grace.
    caller_grace_secs=0.0,
    shutdown_timeout_secs=5.0,
    # The tests share 2 cores with Chromium and each other: admission by loop lag is
    # tested on its own (tests/test_admission.py), not left to chance here.
    max_loop_lag_ms=2000.0,
    max_loop_load=0.0,
    emulator=EmulatorSettings(ice_addresses=("127.0.0.1",)),
)


@dataclass
class RelayUnderTest:
    server: TestServer
    http: aiohttp.ClientSession

    @property
    def app(self) -> web.Application:
        return self.server.app

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    @property
    def calls_url(self) -> str:
        return self.url("/v1/realtime/calls")

    @property
    def registry(self) -> Any:
        return self.app[REGISTRY]

    @property
    def emulator_base_url(self) -> str:
        return self.app[CONNECTOR].base_url


RelayFactory = Callable[..., Coroutine[Any, Any, RelayUnderTest]]


@pytest.fixture
async def start_relay() -> AsyncIterator[RelayFactory]:
    """Start a relay with settings overrides: ``await start_relay(noise_suppression="webrtc")``."""
    started: list[RelayUnderTest] = []

    async def start(**overrides: Any) -> RelayUnderTest:
        settings = replace(BASE_SETTINGS, **overrides)
        server = TestServer(build_app(settings), host="127.0.0.1")
        await server.start_server()
        relay = RelayUnderTest(server, aiohttp.ClientSession())
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.http.close()
        await relay.server.close()


@pytest.fixture
async def relay(start_relay: RelayFactory) -> RelayUnderTest:
    return await start_relay()


@dataclass
class ServedRelay:
    """A relay on a real listener (its one port: HTTP or HTTPS, and ICE-TCP media)."""

    runner: web.AppRunner
    base: str
    http: aiohttp.ClientSession

    @property
    def app(self) -> web.Application:
        return self.runner.app

    @property
    def registry(self) -> Any:
        return self.app[REGISTRY]

    def url(self, path: str) -> str:
        return self.base + path


ServeRelay = Callable[..., Coroutine[Any, Any, ServedRelay]]


@pytest.fixture
async def serve_relay() -> AsyncIterator[ServeRelay]:
    """``await serve_relay(host=..., port=..., tls_cert=...)``: the relay as
    ``realtime-relay serve`` runs it (relay.serving), on the given address."""
    from relay.serving import start_site

    served: list[ServedRelay] = []

    async def start(**overrides: Any) -> ServedRelay:
        settings = replace(BASE_SETTINGS, **overrides)
        runner = web.AppRunner(build_app(settings), handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        site = await start_site(runner, settings)
        scheme = "https" if settings.tls_cert else "http"
        relay = ServedRelay(
            runner, f"{scheme}://{settings.host}:{site.port}", aiohttp.ClientSession()
        )
        served.append(relay)
        return relay

    yield start
    for relay in served:
        await relay.http.close()
        await relay.runner.cleanup()
