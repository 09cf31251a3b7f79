"""``realtime-relay``: the only place that reads the environment and argv."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from .config import EmulatorSettings, Secret, Settings

logger = logging.getLogger("relay")

_TRUE = {"1", "true", "yes", "on"}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    return default if value is None or value == "" else value.strip().lower() in _TRUE


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    value = env.get(name, "").strip()
    return Secret(value) if value else None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in env.get(name, "").split(",") if p.strip())


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise SystemExit(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def emulator_settings_from(env: Mapping[str, str], args: argparse.Namespace) -> EmulatorSettings:
    defaults = EmulatorSettings()
    keys = _list(env, "RELAY_EMULATOR_API_KEYS")
    return EmulatorSettings(
        host=getattr(args, "host", None) or defaults.host,
        port=getattr(args, "port", None) or defaults.port,
        api_keys=tuple(Secret(k) for k in keys) or defaults.api_keys,
        ice_addresses=_list(env, "RELAY_ICE_ADDRESSES"),
        max_session_secs=float(
            env.get("RELAY_EMULATOR_MAX_SESSION_SECS", defaults.max_session_secs)
        ),
        strict_consent=_flag(env, "RELAY_EMULATOR_STRICT_CONSENT", defaults.strict_consent),
        allow_secret_reuse=_flag(env, "RELAY_EMULATOR_SECRET_REUSE", defaults.allow_secret_reuse),
    )


def settings_from(env: Mapping[str, str], args: argparse.Namespace) -> Settings:
    """Build the frozen settings from the environment, then the flags on top."""
    d = Settings()
    host = args.host or env.get("RELAY_HOST") or d.host
    openai_key = _secret(env, "OPENAI_API_KEY")
    relay_key = _secret(env, "RELAY_API_KEY")
    # Without any key, the embedded default is open on loopback only (and says so).
    open_default = openai_key is None and relay_key is None and _is_loopback(host)
    dialect = (args.dialect or env.get("RELAY_OPENAI_DIALECT") or d.openai_dialect).lower()
    if dialect not in ("ga", "beta"):
        raise SystemExit(f"RELAY_OPENAI_DIALECT must be 'ga' or 'beta', not {dialect!r}")
    ns = args.noise_suppression or env.get("RELAY_NOISE_SUPPRESSION") or d.noise_suppression
    if ns not in ("webrtc", "rnnoise", "off"):
        raise SystemExit(f"RELAY_NOISE_SUPPRESSION must be webrtc, rnnoise or off, not {ns!r}")
    default_model = "gpt-4o-realtime-preview-2024-12-17" if dialect == "beta" else d.openai_model
    return Settings(
        host=host,
        port=int(args.port or env.get("RELAY_PORT") or d.port),
        openai_api_key=openai_key,
        openai_base_url=env.get("OPENAI_BASE_URL") or d.openai_base_url,
        openai_dialect=dialect,  # type: ignore[arg-type]
        openai_model=env.get("RELAY_OPENAI_MODEL") or default_model,
        relay_api_key=relay_key,
        admin_token=_secret(env, "RELAY_ADMIN_TOKEN"),
        open_mode=_flag(env, "RELAY_OPEN", open_default) or bool(args.open),
        ice_addresses=_list(env, "RELAY_ICE_ADDRESSES"),
        noise_suppression=ns,  # type: ignore[arg-type]
        client_secret_ttl_secs=int(
            env.get("RELAY_CLIENT_SECRET_TTL_SECS", d.client_secret_ttl_secs)
        ),
        upstream_timeout_secs=float(
            env.get("RELAY_UPSTREAM_TIMEOUT_SECS", d.upstream_timeout_secs)
        ),
        ice_timeout_secs=float(env.get("RELAY_ICE_TIMEOUT_SECS", d.ice_timeout_secs)),
        cors_origins=_list(env, "RELAY_CORS_ORIGINS"),
        enable_direct_session=_flag(env, "RELAY_ENABLE_DIRECT_SESSION", d.enable_direct_session),
        max_sdp_bytes=int(env.get("RELAY_MAX_SDP_BYTES", d.max_sdp_bytes)),
        max_event_bytes=int(env.get("RELAY_MAX_EVENT_BYTES", d.max_event_bytes)),
        media_timeout_secs=float(env.get("RELAY_MEDIA_TIMEOUT_SECS", d.media_timeout_secs)),
        shutdown_timeout_secs=float(
            env.get("RELAY_SHUTDOWN_TIMEOUT_SECS", d.shutdown_timeout_secs)
        ),
        max_calls=int(env.get("RELAY_MAX_CALLS", d.max_calls)),
        workers=int(args.workers or env.get("RELAY_WORKERS") or d.workers),
        max_loop_lag_ms=float(env.get("RELAY_MAX_LOOP_LAG_MS", d.max_loop_lag_ms)),
        metrics_token=_secret(env, "RELAY_METRICS_TOKEN"),
        recording_policy=_choice(
            env, "RELAY_RECORDING_POLICY", ("off", "all", "opt_in"), d.recording_policy
        ),  # type: ignore[arg-type]
        recording_dir=env.get("RELAY_RECORDING_DIR") or d.recording_dir,
        recording_retention_days=float(
            env.get("RELAY_RECORDING_RETENTION_DAYS", d.recording_retention_days)
        ),
        webhook_urls=_list(env, "RELAY_WEBHOOK_URLS"),
        webhook_secret=_secret(env, "RELAY_WEBHOOK_SECRET"),
        webhook_events=_list(env, "RELAY_WEBHOOK_EVENTS") or d.webhook_events,
        webhook_max_attempts=int(env.get("RELAY_WEBHOOK_MAX_ATTEMPTS", d.webhook_max_attempts)),
        webhook_timeout_secs=float(env.get("RELAY_WEBHOOK_TIMEOUT_SECS", d.webhook_timeout_secs)),
        web_root=env.get("RELAY_WEB_ROOT", ""),
        emulator=emulator_settings_from(env, argparse.Namespace()),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime-relay", description=__doc__)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the relay")
    serve.add_argument("--host", help="listen address (RELAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (RELAY_PORT, default 8080)")
    serve.add_argument("--dialect", choices=["ga", "beta"], help="RELAY_OPENAI_DIALECT")
    serve.add_argument(
        "--noise-suppression", choices=["webrtc", "rnnoise", "off"], help="RELAY_NOISE_SUPPRESSION"
    )
    serve.add_argument("--open", action="store_true", help="accept calls without keys (RELAY_OPEN)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (RELAY_WORKERS, default one per core)"
    )
    emulator = commands.add_parser("emulator", help="run the OpenAI emulator alone")
    emulator.add_argument("--host", help="listen address (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, help="listen port (default 8090)")
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    level = (args.log_level or env.get("RELAY_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        _serve(settings_from(env, args))
    else:
        _emulator(emulator_settings_from(env, args))


def _serve(settings: Settings) -> None:
    from .http.app import create_app

    if settings.open_mode:
        logger.warning(
            "open mode: calls are accepted without any key%s",
            " (embedded default on a loopback address)" if _is_loopback(settings.host) else "",
        )
    logger.info(
        "relay on http://%s:%d (upstream: %s, dialect %s, noise suppression %s)",
        settings.host,
        settings.port,
        "built-in emulator" if settings.embedded_emulator else settings.openai_base_url,
        settings.openai_dialect,
        settings.noise_suppression,
    )
    workers = settings.workers or os.cpu_count() or 1
    if workers > 1:
        from .workers import serve_sharded

        serve_sharded(settings, workers, logging.getLogger().level)
        return
    app = create_app(settings)
    # aiohttp handles SIGINT/SIGTERM: on_shutdown closes every call within
    # shutdown_timeout_secs, then cleanup contexts run.
    _run(app, settings.host, settings.port, settings.shutdown_timeout_secs + 5)


def _emulator(settings: EmulatorSettings) -> None:
    from . import aiortc_patches
    from .emulator.app import create_emulator_app

    aiortc_patches.install()
    aiortc_patches.restrict_host_addresses(settings.ice_addresses)
    logger.info("OpenAI emulator on http://%s:%d/v1", settings.host, settings.port)
    _run(create_emulator_app(settings), settings.host, settings.port, 10.0)


def _run(app: web.Application, host: str, port: int, shutdown_timeout: float) -> None:
    kwargs: dict[str, Any] = {"host": host, "port": port, "print": None}
    web.run_app(app, shutdown_timeout=shutdown_timeout, **kwargs)


if __name__ == "__main__":
    main()
