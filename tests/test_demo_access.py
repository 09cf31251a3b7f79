"""The demo page's token route with ``OPENAI_API_KEY`` (issue 15): `make run` on loopback
serves it to this machine's browsers; every other bind, key or request gets a 404 that
says exactly what to set, and the log says which case the relay is in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from relay_fixtures import BASE_SETTINGS

from relay.auth import DEMO_NOT_SERVED
from relay.cli import _log_access, build_parser, settings_from
from relay.config import EmulatorSettings, Secret, Settings
from relay.embedded import build_app
from relay.emulator.app import create_emulator_app

OPENAI_KEY = "sk-test-standard-0123456789abcdef"
RELAY_KEY = "relay-test-key-0123456789"
DEMO = "/api/demo/client_secret"


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    """A standalone emulator standing in for OpenAI, with a standard key."""
    app = create_emulator_app(
        EmulatorSettings(api_keys=(OPENAI_KEY,), ice_addresses=("127.0.0.1",))
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/v1"))
    await server.close()


def with_openai_key(emulator_url: str, **overrides: Any) -> Settings:
    """As ``make run`` with ``OPENAI_API_KEY`` builds them (open mode off)."""
    settings = settings_from({"OPENAI_API_KEY": OPENAI_KEY}, build_parser().parse_args(["serve"]))
    assert settings.open_mode is False
    return replace(
        BASE_SETTINGS,
        open_mode=False,
        openai_api_key=Secret(OPENAI_KEY),
        openai_base_url=emulator_url,
        **overrides,
    )


async def demo_status(settings: Settings, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(server.make_url(DEMO), json={}, headers=headers or {}) as r,
        ):
            return r.status, await r.json()
    finally:
        await server.close()


async def test_loopback_relay_with_an_openai_key_serves_its_own_browsers(emulator: str) -> None:
    status, body = await demo_status(with_openai_key(emulator))
    assert status == 200 and body["value"].startswith("ek_")
    # A browser on this machine sends its page's origin.
    status, _ = await demo_status(
        with_openai_key(emulator), {"Origin": "http://localhost:8080", "Host": "localhost:8080"}
    )
    assert status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.7"},  # through a reverse proxy
        {"Forwarded": "for=203.0.113.7"},
        {"X-Real-IP": "203.0.113.7"},
        {"Host": "attacker.example:8080"},  # DNS rebinding: another site's name
        {"Origin": "http://attacker.example"},  # another site's page
        {"Origin": "null"},
    ],
)
async def test_requests_that_are_not_from_this_machine_are_refused(
    emulator: str, headers: dict[str, str]
) -> None:
    status, body = await demo_status(with_openai_key(emulator), headers)
    assert status == 404
    assert body["error"]["message"] == DEMO_NOT_SERVED


@pytest.mark.parametrize(
    "overrides",
    [
        {"host": "0.0.0.0"},  # noqa: S104 - the setting under test, not a bind
        {"host": "192.0.2.10"},
        {"relay_api_key": Secret(RELAY_KEY)},  # an app backend mints: the demo route is off
    ],
)
async def test_other_binds_and_app_backends_do_not_serve_it(
    emulator: str, overrides: dict[str, Any]
) -> None:
    status, body = await demo_status(with_openai_key(emulator, **overrides))
    assert status == 404
    message = body["error"]["message"]
    assert "RELAY_OPEN=1" in message and "RELAY_HOST=127.0.0.1" in message
    assert "tokenUrl" in message


def test_the_log_says_whether_the_demo_page_can_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    local = replace(BASE_SETTINGS, open_mode=False, openai_api_key=Secret(OPENAI_KEY))
    _log_access(local)
    assert "browsers on this machine only" in caplog.text
    caplog.clear()
    _log_access(replace(local, host="0.0.0.0"))  # noqa: S104
    assert DEMO_NOT_SERVED in caplog.text
    assert OPENAI_KEY not in caplog.text
