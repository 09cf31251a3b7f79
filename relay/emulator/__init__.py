"""A stand-in for OpenAI's Realtime API over WebRTC, written from the published
protocol (``/work/shared/reference/openai-realtime-protocol.md``) and sharing no code
with the relay's call/upstream logic, so tests are never the relay agreeing with itself.

Modules, one concept each:

* :mod:`.app`: HTTP routes and errors; ``create_emulator_app(settings)``; app keys
  ``SETTINGS``, ``KEYS``, ``SESSIONS``;
* :mod:`.keys`: ephemeral keys with expiry;
* :mod:`.session`: one emulated call (peer connection, ``oai-events``, audio, cap);
* :mod:`.turns`: turn-taking (VAD -> commit -> transcription -> response, barge-in);
* :mod:`.responses`: one response's event sequence and audio;
* :mod:`.client_events`: client-event parsing and dispatch;
* :mod:`.events`: server events in the GA and beta dialects;
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

from .app import KEYS, SESSIONS, SETTINGS, create_emulator_app
from .capture import ReceivedAudio
from .registry import CallRegistry
from .session import EmulatedCall

__all__ = [
    "KEYS",
    "SESSIONS",
    "SETTINGS",
    "CallRegistry",
    "EmulatedCall",
    "ReceivedAudio",
    "create_emulator_app",
]
