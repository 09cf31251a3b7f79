"""Typed, frozen settings.

Only :mod:`relay.cli` reads the environment and argv; everything else receives a
:class:`Settings` (or :class:`EmulatorSettings`) object. Units are in the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# The emulator's settings are its own (it imports nothing from the relay); re-exported.
from .emulator.settings import EmulatorSettings as EmulatorSettings

Dialect = Literal["ga", "beta"]
NoiseSuppression = Literal["webrtc", "rnnoise", "off"]
RecordingPolicy = Literal["off", "all", "opt_in"]
UpstreamTransport = Literal["webrtc", "websocket"]
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


def setting(default: Any, env: str, doc: str, *, flag: str | None = None, shown: str = "") -> Any:
    """A settings field, spelled once: its environment variable, its ``serve`` flag and
    its documentation (the README's settings table is generated from these). ``shown``
    is the default as the table says it, when the value itself would not be clear."""
    shown = shown or _shown(default)
    return field(default=default, metadata={"env": env, "doc": doc, "flag": flag, "shown": shown})


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if default == ():
        return "none"
    if isinstance(default, bool):
        return f"`{int(default)}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


@dataclass(frozen=True)
class Settings:
    """Settings of the relay (``realtime-relay serve``)."""

    host: str = setting("127.0.0.1", "RELAY_HOST", "listen address", flag="--host")
    port: int = setting(8080, "RELAY_PORT", "listen port", flag="--port")
    openai_api_key: Secret | None = setting(
        None, "OPENAI_API_KEY", "the server's OpenAI key; unset runs the built-in emulator"
    )
    openai_base_url: str = setting(
        "https://api.openai.com/v1", "OPENAI_BASE_URL", "OpenAI-compatible base URL"
    )
    openai_dialect: Dialect = setting(
        "ga",
        "RELAY_OPENAI_DIALECT",
        "`ga` (`client_secrets` + `calls`, model `gpt-realtime`) or `beta` (`sessions` + "
        "`/realtime?model=`, `gpt-4o-realtime-preview-2024-12-17`; switched off upstream in 2026)",
        flag="--dialect",
    )
    upstream_transport: UpstreamTransport = setting(
        "webrtc",
        "RELAY_UPSTREAM_TRANSPORT",
        "how the relay reaches OpenAI: `webrtc` (Opus over UDP/ICE) or `websocket` (`wss` "
        "`/v1/realtime?model=`, PCM16 as base64 JSON; for egress that allows only HTTPS; "
        "GA dialect only)",
        flag="--upstream-transport",
    )
    openai_model: str = setting(
        GA_MODEL,
        "RELAY_OPENAI_MODEL",
        "model for sessions that name none",
        shown="`gpt-realtime` (beta: `gpt-4o-realtime-preview-2024-12-17`)",
    )
    relay_api_key: Secret | None = setting(
        None,
        "RELAY_API_KEY",
        "key an app backend uses to mint client secrets (and to call directly)",
    )
    admin_token: Secret | None = setting(
        None,
        "RELAY_ADMIN_TOKEN",
        "token for operator routes (`/api/calls`, monitoring, recordings, hangup of any call)",
    )
    open_mode: bool = setting(
        False,
        "RELAY_OPEN",
        "accept calls without any key (development only)",
        flag="--open",
        shown="on only when no key at all is set and the host is a loopback address",
    )
    ice_addresses: tuple[str, ...] = setting(
        (),
        "RELAY_ICE_ADDRESSES",
        "comma-separated host addresses the relay (and the emulator) gather ICE candidates on",
        shown="all interfaces",
    )
    ice_public_addresses: tuple[str, ...] = setting(
        (),
        "RELAY_ICE_PUBLIC_ADDRESSES",
        "addresses announced in the relay's candidates instead of the bound ones (a relay "
        "behind 1:1 NAT): one for all, or one per `RELAY_ICE_ADDRESSES` entry",
    )
    udp_ports: str = setting(
        "",
        "RELAY_UDP_PORTS",
        "inclusive UDP port range for media, `min-max` (firewalls, Kubernetes); empty: "
        "ephemeral ports",
        shown="any",
    )
    ice_tcp: bool = setting(
        True,
        "RELAY_ICE_TCP",
        "offer a passive ICE-TCP candidate on the listen port, so a browser that can reach "
        "only that port makes a call (UDP stays preferred where it works)",
    )
    ice_tcp_public_port: int = setting(
        0,
        "RELAY_ICE_TCP_PUBLIC_PORT",
        "the port announced in the ICE-TCP candidate when a load balancer or NAT maps another "
        "one (e.g. 443) to the listen port",
        shown="the listen port",
    )
    tls_cert: str = setting(
        "",
        "RELAY_TLS_CERT",
        "PEM certificate chain: serve HTTPS (page, API, WebSockets) on the listen port",
        flag="--tls-cert",
        shown="unset",
    )
    tls_key: str = setting(
        "", "RELAY_TLS_KEY", "PEM private key of `RELAY_TLS_CERT`", flag="--tls-key", shown="unset"
    )
    noise_suppression: NoiseSuppression = setting(
        "webrtc",
        "RELAY_NOISE_SUPPRESSION",
        "caller-audio suppressor: `webrtc` (libwebrtc's, ~52 us per 20 ms), `rnnoise` "
        "(opt-in for steady heavy noise), `off`",
        flag="--noise-suppression",
    )
    client_secret_ttl_secs: int = setting(
        600,
        "RELAY_CLIENT_SECRET_TTL_SECS",
        "lifetime of minted client secrets (10-7200 per request via `expires_after`)",
    )
    upstream_timeout_secs: float = setting(
        10.0, "RELAY_UPSTREAM_TIMEOUT_SECS", "bound on each upstream HTTP step"
    )
    ice_timeout_secs: float = setting(
        10.0, "RELAY_ICE_TIMEOUT_SECS", "bound on the upstream media connection coming up"
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "RELAY_CORS_ORIGINS",
        "comma-separated origins allowed by CORS (`*` for any); `Location` is exposed",
    )
    enable_direct_session: bool = setting(
        False, "RELAY_ENABLE_DIRECT_SESSION", "serve the original `POST /api/realtime/session`"
    )
    max_sdp_bytes: int = setting(64 * 1024, "RELAY_MAX_SDP_BYTES", "largest SDP offer accepted")
    max_event_bytes: int = setting(
        256 * 1024,
        "RELAY_MAX_EVENT_BYTES",
        "largest data-channel event forwarded from a browser (at most the 256 KiB SCTP "
        "message size the relay advertises)",
    )
    media_timeout_secs: float = setting(
        5.0, "RELAY_MEDIA_TIMEOUT_SECS", "a caller whose audio stops this long is hung up"
    )
    caller_grace_secs: float = setting(
        15.0,
        "RELAY_CALLER_GRACE_SECS",
        "a caller whose connection fails (ICE failure, no answer to checks, a WebSocket "
        "dropped without a close) keeps its call and OpenAI session this long, for its "
        "client to reconnect with the call's resume token; 0 ends the call at once",
    )
    shutdown_timeout_secs: float = setting(
        10.0, "RELAY_SHUTDOWN_TIMEOUT_SECS", "bound on closing every call at SIGTERM/SIGINT"
    )
    max_calls: int = setting(
        0,
        "RELAY_MAX_CALLS",
        "calls this process takes before answering 503",
        shown="`0` (no limit)",
    )
    workers: int = setting(
        0,
        "RELAY_WORKERS",
        "worker processes (shards) behind the port",
        flag="--workers",
        shown="one per core",
    )
    max_loop_lag_ms: float = setting(
        100.0,
        "RELAY_MAX_LOOP_LAG_MS",
        "a shard whose event loop lags more than this (median over the last 2 s) refuses "
        "new calls (503)",
    )
    metrics_token: Secret | None = setting(
        None, "RELAY_METRICS_TOKEN", "bearer token required by `GET /metrics` (open when unset)"
    )
    recording_policy: RecordingPolicy = setting(
        "off",
        "RELAY_RECORDING_POLICY",
        "`off`, `all`, or `opt_in` (the client sends `X-Relay-Record: 1` with its offer)",
    )
    recording_dir: str = setting(
        "recordings",
        "RELAY_RECORDING_DIR",
        "folder of recordings (`<dir>/<YYYY-MM-DD>/<call id>/`)",
    )
    recording_retention_days: float = setting(
        30.0,
        "RELAY_RECORDING_RETENTION_DAYS",
        "recordings older than this are deleted (0 keeps all)",
    )
    webhook_urls: tuple[str, ...] = setting(
        (), "RELAY_WEBHOOK_URLS", "comma-separated URLs that receive webhook POSTs"
    )
    webhook_secret: Secret | None = setting(
        None, "RELAY_WEBHOOK_SECRET", "HMAC-SHA256 key of the webhook signature"
    )
    webhook_events: tuple[str, ...] = setting(
        WEBHOOK_EVENT_NAMES,
        "RELAY_WEBHOOK_EVENTS",
        "which of `call.started`, `call.ended`, `transcript.completed`, `error` are sent",
        shown="all",
    )
    webhook_max_attempts: int = setting(
        5, "RELAY_WEBHOOK_MAX_ATTEMPTS", "attempts per delivery, with exponential backoff"
    )
    webhook_timeout_secs: float = setting(
        5.0, "RELAY_WEBHOOK_TIMEOUT_SECS", "bound on one webhook POST"
    )
    web_root: str = setting(
        "", "RELAY_WEB_ROOT", "folder of the browser client", shown="`web/` beside the package"
    )
    turn_urls: tuple[str, ...] = setting(
        (),
        "RELAY_TURN_URLS",
        "comma-separated TURN URLs handed to the relay's web client with short-lived "
        "credentials (`POST /api/turn_credentials`), e.g. "
        "`turn:turn.example.com:3478?transport=udp,turns:turn.example.com:443?transport=tcp`",
    )
    turn_secret: Secret | None = setting(
        None,
        "RELAY_TURN_SECRET",
        "coturn's `static-auth-secret` (its REST-API scheme): the relay mints TURN "
        "credentials with it",
    )
    turn_ttl_secs: int = setting(3600, "RELAY_TURN_TTL_SECS", "lifetime of minted TURN credentials")
    drain_timeout_secs: float = setting(
        0.0,
        "RELAY_DRAIN_TIMEOUT_SECS",
        "on SIGTERM or `POST /admin/drain`: new calls get 503 and `/readyz` says draining, "
        "running calls may go on this long before they are ended (`shutdown`); 0 ends them "
        "at once. Kubernetes: `terminationGracePeriodSeconds` above this plus "
        "`RELAY_SHUTDOWN_TIMEOUT_SECS`",
    )
    rate_mint_per_min: float = setting(
        1200.0,
        "RELAY_RATE_MINT_PER_MIN",
        "client secrets minted per minute per API key (a minute's worth may come at once; "
        "0: no limit); over it: `429` with `Retry-After`",
    )
    rate_mint_per_address_per_min: float = setting(
        300.0,
        "RELAY_RATE_MINT_PER_ADDRESS_PER_MIN",
        "client secrets minted per minute per client address (0: no limit)",
    )
    rate_calls_per_min: float = setting(
        300.0,
        "RELAY_RATE_CALLS_PER_MIN",
        "calls created per minute per key (a client secret, or the API key; 0: no limit)",
    )
    rate_calls_per_address_per_min: float = setting(
        120.0,
        "RELAY_RATE_CALLS_PER_ADDRESS_PER_MIN",
        "calls created per minute per client address (0: no limit)",
    )
    max_calls_per_key: int = setting(
        0,
        "RELAY_MAX_CALLS_PER_KEY",
        "concurrent calls per key (a client secret, or the API key) before `429` (0: no limit)",
        shown="`0` (no limit)",
    )
    tool_webhook_url: str = setting(
        "",
        "RELAY_TOOL_WEBHOOK_URL",
        "the relay POSTs every tool call of every call here (signed with "
        "`RELAY_WEBHOOK_SECRET`) and gives the model the answer; unset: tool calls are the "
        "browser's or the sideband's to answer",
        shown="unset",
    )
    tool_webhook_timeout_secs: float = setting(
        5.0,
        "RELAY_TOOL_WEBHOOK_TIMEOUT_SECS",
        "bound on one tool webhook POST; past it the model is told the tool failed",
    )
    max_loop_load: float = setting(
        0.7,
        "RELAY_MAX_LOOP_LOAD",
        "a shard refuses a call (503) that would take its event loop's load over this: "
        "the fraction of the time the loop is busy in its callbacks or waiting for a CPU "
        "(median over the last 2 s; the built-in emulator's work counts) plus one call's "
        "average share; 0 turns it off",
    )
    redis_url: Secret | None = setting(
        None,
        "RELAY_REDIS_URL",
        "Redis (or Valkey) holding the fleet's call directory, e.g. `redis://redis:6379/0`: "
        "client secrets valid on every node, each call's owner, each node's load; unset: "
        "one machine, no directory",
    )
    cluster_token: Secret | None = setting(
        None,
        "RELAY_CLUSTER_TOKEN",
        "shared secret the nodes of a fleet send each other (`X-Relay-Internal`) when they "
        "forward a request to a call's owner; required with `RELAY_REDIS_URL`",
    )
    cluster_port: int = setting(
        0,
        "RELAY_CLUSTER_PORT",
        "a second, plain-HTTP listener that serves only the other nodes' requests (they "
        "carry `RELAY_CLUSTER_TOKEN`; anything else is refused): what `RELAY_NODE_URL` "
        "points at when the listen port serves TLS; 0: none, the nodes use the listen port",
        flag="--cluster-port",
    )
    cluster_host: str = setting(
        "",
        "RELAY_CLUSTER_HOST",
        "the cluster listener's address (e.g. the pod's IP, or `0.0.0.0` behind a NetworkPolicy)",
        shown="`RELAY_HOST`",
    )
    node_url: str = setting(
        "",
        "RELAY_NODE_URL",
        "this node's base URL as the other nodes reach it (e.g. `http://10.0.3.7:8081`)",
        shown="`http://<host>:<cluster port, else port>`",
    )
    cluster_call_ttl_secs: float = setting(
        15.0,
        "RELAY_CLUSTER_CALL_TTL_SECS",
        "a call's and a node's directory entries expire this long after their owner last "
        "refreshed them (every third of it): the bound on a dead node's calls leaving",
    )
    redis_timeout_secs: float = setting(
        1.0, "RELAY_REDIS_TIMEOUT_SECS", "bound on every Redis operation (connect included)"
    )
    upstream_session_max_secs: float = setting(
        3600.0,
        "RELAY_UPSTREAM_SESSION_MAX_SECS",
        "the upstream session's duration cap (OpenAI's: 60 min); the relay renews a call's "
        "session before it (with the built-in emulator: the emulator's cap, if lower)",
    )
    rollover_lead_secs: float = setting(
        120.0,
        "RELAY_ROLLOVER_LEAD_SECS",
        "how long before the cap the relay opens the next upstream session and waits for a "
        "quiet moment to swap to it (forced just before the cap); 0 turns rollover off",
    )
    rollover_context_tokens: int = setting(
        16000,
        "RELAY_ROLLOVER_CONTEXT_TOKENS",
        "the conversation carried into a renewed session as text, most recent first, in "
        "estimated tokens (4 characters each)",
    )
    upstream_recovery_secs: float = setting(
        1.2,
        "RELAY_UPSTREAM_RECOVERY_SECS",
        "an upstream session that dies: how long after OpenAI was last heard the relay "
        "keeps trying to open a new one with the conversation before the caller gets an "
        "`error` and the call ends; 0 turns recovery off",
    )
    #: Emulator used when ``openai_api_key`` is ``None``.
    emulator: EmulatorSettings = field(default_factory=EmulatorSettings)

    @property
    def embedded_emulator(self) -> bool:
        return self.openai_api_key is None

    @property
    def udp_port_range(self) -> tuple[int, int] | None:
        """``udp_ports`` as ``(low, high)``; :func:`check` has refused a bad one."""
        if not self.udp_ports:
            return None
        low, high = (int(p) for p in self.udp_ports.split("-", 1))
        return low, high


def check(settings: Settings) -> list[str]:
    """What is wrong with ``settings`` that types alone do not catch (empty: nothing)."""
    problems = []
    if settings.udp_ports:
        parts = settings.udp_ports.split("-", 1)
        ok = len(parts) == 2 and all(p.strip().isdigit() for p in parts)
        if not ok or not 1024 <= int(parts[0]) <= int(parts[1]) <= 65535:
            problems.append("RELAY_UDP_PORTS must be `min-max` within 1024-65535")
    if settings.redis_url is not None and settings.cluster_token is None:
        problems.append("RELAY_REDIS_URL needs RELAY_CLUSTER_TOKEN (nodes authenticate each other)")
    if settings.cluster_port and settings.redis_url is None:
        problems.append("RELAY_CLUSTER_PORT needs RELAY_REDIS_URL (it serves only a fleet's nodes)")
    if settings.cluster_port and settings.cluster_port == settings.port:
        problems.append("RELAY_CLUSTER_PORT must differ from RELAY_PORT")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        problems.append("RELAY_TLS_CERT and RELAY_TLS_KEY go together")
    if settings.upstream_transport == "websocket" and settings.openai_dialect == "beta":
        problems.append("RELAY_UPSTREAM_TRANSPORT=websocket needs RELAY_OPENAI_DIALECT=ga")
    return problems
