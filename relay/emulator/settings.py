"""The emulator's own settings and model names.

The emulator is the upstream "oracle" of the relay's tests, so it shares no code with
the relay: ``relay.config`` imports :class:`EmulatorSettings` from here (the relay may
use the emulator), never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The model of GA sessions that name none (``session.model``).
GA_MODEL = "gpt-realtime"
#: The model of beta sessions that name none (``/v1/realtime?model=`` unset).
BETA_MODEL = "gpt-4o-realtime-preview-2024-12-17"
#: The standard key an emulator accepts when it is given none.
DEFAULT_API_KEY = "sk-emulator"


@dataclass(frozen=True)
class EmulatorSettings:
    """Settings of the built-in OpenAI emulator (``realtime-relay emulator``)."""

    host: str = "127.0.0.1"
    port: int = 8090
    #: Standard API keys the emulator accepts (like ``sk-...`` keys at OpenAI). Any
    #: ``str`` works, a ``str`` subclass that hides itself too; they stay out of the
    #: settings' repr, so logging the settings never shows a key.
    api_keys: tuple[str, ...] = field(default=(DEFAULT_API_KEY,), repr=False)
    #: Addresses the emulator gathers ICE candidates on, for its own peer connections
    #: only; empty means aioice's default (every interface but loopback).
    ice_addresses: tuple[str, ...] = ()
    #: GA session cap (OpenAI: 60 min); the beta dialect uses half of it, as OpenAI did.
    max_session_secs: float = 3600.0
    #: Behave like OpenAI's ICE-lite media servers that stop answering consent
    #: checks without USE-CANDIDATE once the call is up.
    strict_consent: bool = False
    #: Whether one ephemeral key may open more than one call (OpenAI's spec: yes).
    allow_secret_reuse: bool = True
    #: Seconds between a finished utterance and the first response event.
    response_delay_secs: float = 0.05
    #: Whether the emulator recognises the caller's words (:mod:`.hearing`: Moonshine,
    #: offline; ~0.4 s of CPU per second of speech, on every core). Off, or without
    #: ``moonshine-cpp``, transcripts say "I spoke for N seconds". Off by default (tests,
    #: load); ``realtime-relay emulator`` turns it on (``RELAY_EMULATOR_RECOGNITION``).
    recognition: bool = False
    #: A recognition that takes longer is abandoned (the fallback transcript is used).
    recognition_timeout_secs: float = 15.0
    #: Failures every call starts with (:mod:`.faults`: ``response_failed``,
    #: ``transcription_failed``, ``server_error``); tests switch them per call too.
    faults: tuple[str, ...] = ()
    #: Whether the agent speaks with espeak-ng (:mod:`.speaking`) instead of the
    #: synthetic voice (``RELAY_EMULATOR_REAL_VOICE``, on for ``realtime-relay emulator``).
    real_voice: bool = False
