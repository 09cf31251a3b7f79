"""A stand-in for OpenAI's Realtime API over WebRTC, written from the published
protocol (``/work/shared/reference/openai-realtime-protocol.md``). It is the upstream
"oracle" of the relay's tests, so it shares no code with the relay: nothing here
imports ``relay.*`` outside ``relay.emulator`` (``tests/emulator/
test_emulator_independent.py`` checks it), and it runs on stock aiortc, its own ICE
settings applying to its own peer connections only.

Modules, one concept each:

* :mod:`.settings`: :class:`EmulatorSettings` and the default model names;
* :mod:`.app`: HTTP routes and errors; ``create_emulator_app(settings)``;
* :mod:`.appstate`: app keys ``SETTINGS``, ``KEYS``, ``SESSIONS`` and key checks;
* :mod:`.websocket`: OpenAI's WebSocket transport (``GET /v1/realtime?model=`` and
  the ``?call_id=`` sideband);
* :mod:`.keys`: ephemeral keys with expiry;
* :mod:`.core`: one emulated session, whatever its transport (conversation, cap,
  events, sideband listeners, close);
* :mod:`.session`: one emulated WebRTC call (peer connection, ``oai-events``, audio);
* :mod:`.ice`: host addresses and strict consent, per peer connection;
* :mod:`.turns`: turn-taking (VAD -> commit -> transcription -> response, barge-in);
* :mod:`.transcription`: the transcript of an utterance and its events;
* :mod:`.planning`: what a response says (``response.create`` checks, tool calls);
* :mod:`.responses`: one response's event sequence and audio;
* :mod:`.client_events`: client-event parsing and dispatch;
* :mod:`.items`: the client's ``conversation.item.*`` commands;
* :mod:`.events`, :mod:`.outlet`: server events in the GA and beta dialects, and
  where a call's events and agent audio go;
* :mod:`.session_config`: session defaults, ``session.update`` and effective values;
* :mod:`.session_schema`: request schemas of both dialects (OpenAI's error codes);
* :mod:`.registry`: every call of an app (``app[SESSIONS]``);
* :mod:`.conversation`: conversation items;
* :mod:`.vad`, :mod:`.voice`, :mod:`.playout`, :mod:`.capture`: energy VAD, agent
  speech synthesis, the paced outgoing track, the record of received audio;
* :mod:`.sdp`, :mod:`.schema`, :mod:`.errors`, :mod:`.ids`: helpers.

Test hook: ``app[SESSIONS]`` (:class:`.registry.CallRegistry`) holds every call; each
:class:`.session.EmulatedCall` has ``received`` (:class:`.capture.ReceivedAudio`),
``client_events`` and ``server_events``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_emulator_app
    from .appstate import KEYS, SESSIONS, SETTINGS
    from .capture import ReceivedAudio
    from .core import EmulatedSession
    from .registry import CallRegistry
    from .session import EmulatedCall
    from .settings import EmulatorSettings

#: Name -> module: loaded on first use, so that ``relay.config`` can import
#: ``relay.emulator.settings`` without loading aiortc.
_EXPORTS = {
    "KEYS": "appstate",
    "SESSIONS": "appstate",
    "SETTINGS": "appstate",
    "create_emulator_app": "app",
    "ReceivedAudio": "capture",
    "CallRegistry": "registry",
    "EmulatedCall": "session",
    "EmulatedSession": "core",
    "EmulatorSettings": "settings",
}

__all__ = [
    "KEYS",
    "SESSIONS",
    "SETTINGS",
    "CallRegistry",
    "EmulatedCall",
    "EmulatedSession",
    "EmulatorSettings",
    "ReceivedAudio",
    "create_emulator_app",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
