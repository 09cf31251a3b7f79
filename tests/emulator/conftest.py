"""Fixtures of the emulator's tests: a real emulator on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from emulator_helpers import Emulator

from relay.emulator import SESSIONS, EmulatedCall, create_emulator_app
from relay.emulator.settings import EmulatorSettings

BASE = EmulatorSettings(ice_addresses=("127.0.0.1",), response_delay_secs=0.02)

EmulatorFactory = Callable[..., Coroutine[Any, Any, Emulator]]


@pytest.fixture
async def start_emulator() -> AsyncIterator[EmulatorFactory]:
    """``await start_emulator(max_session_secs=2)``: an emulator with overrides.

    On teardown every call must be closed, with its peer connection."""
    started: list[Emulator] = []

    async def start(**overrides: Any) -> Emulator:
        server = TestServer(create_emulator_app(replace(BASE, **overrides)), host="127.0.0.1")
        await server.start_server()
        emulator = Emulator(server, aiohttp.ClientSession())
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        registry = emulator.app[SESSIONS]
        await emulator.http.close()
        await emulator.server.close()  # on_shutdown closes every live call
        assert not registry.active
        for call in registry.calls():
            assert call.closed.is_set()
            if isinstance(call, EmulatedCall):
                assert call.pc.connectionState == "closed"


@pytest.fixture
async def emulator(start_emulator: EmulatorFactory) -> Emulator:
    return await start_emulator()
