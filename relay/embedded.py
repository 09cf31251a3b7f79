"""The relay app as the entry points build it: with the built-in OpenAI emulator
in-process when no OpenAI key is set (``make run``'s default, and most tests).

The HTTP app factory (:func:`relay.http.app.create_app`) knows nothing of the
emulator: it is handed an upstream to talk to. Here the emulator's socket is bound
first, so its URL is known when the relay app is built, and the emulator is served for
the relay app's lifetime (a cleanup context: up before the first request, down after
every call has closed)."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from .config import Secret, Settings
from .emulator.app import create_emulator_app
from .http.app import Upstream, create_app

logger = logging.getLogger(__name__)

#: The in-process OpenAI emulator, when no OpenAI key is configured.
EMULATOR = web.AppKey("embedded_emulator", web.Application)


def build_app(settings: Settings, **options: Any) -> web.Application:
    """The relay app for ``settings``; ``options`` go to :func:`create_app`."""
    if not settings.embedded_emulator:
        return create_app(settings, **options)
    key = Secret("sk-embedded-" + secrets.token_hex(16))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    emulator = create_emulator_app(
        dataclasses.replace(
            settings.emulator,
            host="127.0.0.1",
            port=port,
            api_keys=(key.value,),
            ice_addresses=settings.ice_addresses,
        )
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    app = create_app(settings, upstream=Upstream(base_url, key), **options)
    app[EMULATOR] = emulator
    app.cleanup_ctx.append(_serve_emulator(emulator, sock, base_url))
    return app


def _serve_emulator(
    emulator: web.Application, sock: socket.socket, base_url: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def serve(app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(emulator, handle_signals=False)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
            logger.info("no OPENAI_API_KEY: using the built-in OpenAI emulator at %s", base_url)
            yield
        finally:
            await runner.cleanup()
            sock.close()

    return serve
