"""Typed, frozen settings.

Only :mod:`relay.cli` reads the environment and argv; everything else receives a
:class:`Settings` (or :class:`EmulatorSettings`) object. Units are in the names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Dialect = Literal["ga", "beta"]
NoiseSuppression = Literal["webrtc", "rnnoise", "off"]
RecordingPolicy = Literal["off", "all", "opt_in"]
WEBHOOK_EVENT_NAMES = ("call.started", "call.ended", "transcript.completed", "error")

GA_MODEL = "gpt-realtime"
BETA_MODEL = "gpt-4o-realtime-preview-2024-12-17"


class Secret(str):
    """A string that never shows itself in a repr, a log line or an f-string."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    @property
    def value(self) -> str:
        """The real value, for the few places (auth headers) that need it."""
        return str.__str__(self)


@dataclass(frozen=True)
class EmulatorSettings:
    """Settings of the built-in OpenAI emulator (``realtime-relay emulator``)."""

    host: str = "127.0.0.1"
    port: int = 8090
    #: Standard API keys the emulator accepts (like ``sk-...`` keys at OpenAI).
    api_keys: tuple[Secret, ...] = (Secret("sk-emulator"),)
    #: Addresses the emulator gathers ICE candidates on; empty means all interfaces.
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


@dataclass(frozen=True)
class Settings:
    """Settings of the relay (``realtime-relay serve``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: The server's OpenAI key. ``None`` runs the embedded emulator instead.
    openai_api_key: Secret | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    #: ``ga`` (client_secrets + calls) or ``beta`` (sessions + ``/realtime?model=``).
    openai_dialect: Dialect = "ga"
    #: Default model for sessions whose client did not name one.
    openai_model: str = GA_MODEL
    #: Key an app backend uses to mint browser client secrets on the relay.
    relay_api_key: Secret | None = None
    #: Token for /api/calls, monitoring and (if set) /metrics.
    admin_token: Secret | None = None
    #: Accept calls without any key. Only for development on a trusted host.
    open_mode: bool = False
    #: Host addresses to gather ICE candidates on (empty: all interfaces).
    ice_addresses: tuple[str, ...] = ()
    #: Caller-audio noise suppression: ``webrtc`` (libwebrtc's), ``rnnoise`` or ``off``.
    noise_suppression: NoiseSuppression = "webrtc"
    #: Lifetime of relay client secrets minted for browsers.
    client_secret_ttl_secs: int = 600
    #: Bound on each upstream step (mint key, post offer).
    upstream_timeout_secs: float = 10.0
    #: Bound on ICE gathering / connection of a leg.
    ice_timeout_secs: float = 10.0
    #: Origins allowed by CORS (``*`` allows any); empty disables CORS headers.
    cors_origins: tuple[str, ...] = ()
    #: Serve the original ``POST /api/realtime/session`` (hands out OpenAI ephemeral keys).
    enable_direct_session: bool = False
    #: Largest SDP offer accepted.
    max_sdp_bytes: int = 64 * 1024
    #: Largest data-channel message forwarded (OpenAI advertises 1 GiB; we keep it sane).
    max_event_bytes: int = 1024 * 1024
    #: A caller whose media has stopped for this long is hung up.
    media_timeout_secs: float = 5.0
    #: Bound on closing all calls at shutdown.
    shutdown_timeout_secs: float = 10.0
    #: Largest number of concurrent calls in this process (0: unlimited).
    max_calls: int = 0
    #: Worker processes (shards) behind the port; 0 means one per core.
    workers: int = 0
    #: A shard whose event loop keeps lagging more than this (median over 2 s) takes no
    #: new calls.
    max_loop_lag_ms: float = 100.0
    #: Token for ``GET /metrics``; unset leaves it open.
    metrics_token: Secret | None = None
    #: Which calls are recorded: ``off``, ``all``, or ``opt_in`` (the client asks with
    #: the ``X-Relay-Record: 1`` header on its offer).
    recording_policy: RecordingPolicy = "off"
    #: Folder of recordings (``<dir>/<YYYY-MM-DD>/<call id>/``).
    recording_dir: str = "recordings"
    #: Recordings older than this are deleted (0 keeps them all).
    recording_retention_days: float = 30.0
    #: URLs that receive webhook POSTs.
    webhook_urls: tuple[str, ...] = ()
    #: HMAC-SHA256 key for webhook signatures.
    webhook_secret: Secret | None = None
    #: Webhook events sent.
    webhook_events: tuple[str, ...] = WEBHOOK_EVENT_NAMES
    #: Attempts per webhook delivery (exponential backoff between them).
    webhook_max_attempts: int = 5
    #: Bound on one webhook POST.
    webhook_timeout_secs: float = 5.0
    #: Folder of the browser client (``web/``); empty: the one next to the package.
    web_root: str = ""
    #: Emulator used when ``openai_api_key`` is ``None``.
    emulator: EmulatorSettings = field(default_factory=EmulatorSettings)

    @property
    def embedded_emulator(self) -> bool:
        return self.openai_api_key is None

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
