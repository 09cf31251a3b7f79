"""``realtime-relay``: the only place that reads the environment and argv."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from aiohttp import web

from .auth import DEMO_NOT_SERVED, is_loopback_host, local_demo
from .config import (
    BETA_MODEL,
    Dialect,
    EmulatorSettings,
    NoiseSuppression,
    RecordingPolicy,
    Secret,
    Settings,
    UpstreamTransport,
    check,
)

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


def emulator_settings_from(env: Mapping[str, str], args: argparse.Namespace) -> EmulatorSettings:
    defaults = EmulatorSettings()
    keys = _list(env, "RELAY_EMULATOR_API_KEYS")
    return EmulatorSettings(
        host=getattr(args, "host", None) or defaults.host,
        port=getattr(args, "port", None) or defaults.port,
        # Plain strings: EmulatorSettings keeps its keys out of its repr.
        api_keys=keys or defaults.api_keys,
        ice_addresses=_list(env, "RELAY_ICE_ADDRESSES"),
        max_session_secs=float(
            env.get("RELAY_EMULATOR_MAX_SESSION_SECS", defaults.max_session_secs)
        ),
        strict_consent=_flag(env, "RELAY_EMULATOR_STRICT_CONSENT", defaults.strict_consent),
        allow_secret_reuse=_flag(env, "RELAY_EMULATOR_SECRET_REUSE", defaults.allow_secret_reuse),
        # On by default where a person runs it (make run): they hear their own words back.
        recognition=_flag(env, "RELAY_EMULATOR_RECOGNITION", True),
        recognition_timeout_secs=float(
            env.get("RELAY_EMULATOR_RECOGNITION_TIMEOUT_SECS", defaults.recognition_timeout_secs)
        ),
        real_voice=_flag(env, "RELAY_EMULATOR_REAL_VOICE", True),
    )


_CHOICES: dict[str, tuple[str, ...]] = {
    "Dialect": get_args(Dialect),
    "NoiseSuppression": get_args(NoiseSuppression),
    "RecordingPolicy": get_args(RecordingPolicy),
    "UpstreamTransport": get_args(UpstreamTransport),
}


def _parse(setting: dataclasses.Field[Any], raw: str) -> object:
    """One environment value as the type of its settings field (a clear exit if not)."""
    env, kind = setting.metadata["env"], str(setting.type)
    try:
        if kind in _CHOICES:
            if raw not in _CHOICES[kind]:
                raise ValueError(f"one of {', '.join(_CHOICES[kind])}")
            return raw
        converters: dict[str, Callable[[str], object]] = {
            "int": int,
            "float": float,
            "bool": lambda v: v.strip().lower() in _TRUE,
            "Secret | None": lambda v: Secret(v.strip()) if v.strip() else None,
            "tuple[str, ...]": lambda v: tuple(p.strip() for p in v.split(",") if p.strip()),
        }
        return converters.get(kind, str)(raw)
    except ValueError as exc:
        raise SystemExit(f"{env}: {raw!r} is not valid ({exc})") from None


def settings_from(env: Mapping[str, str], args: argparse.Namespace) -> Settings:
    """Build the frozen settings from the environment, then the flags on top. Each
    field's variable and flag are spelled once, in :class:`Settings`' metadata."""
    values: dict[str, Any] = {}
    for setting in dataclasses.fields(Settings):
        if "env" not in setting.metadata:
            continue
        flag_value = getattr(args, setting.name, None)
        if flag_value not in (None, False):
            values[setting.name] = flag_value
        elif env.get(setting.metadata["env"], "") != "":
            values[setting.name] = _parse(setting, env[setting.metadata["env"]])
    if not values.get("webhook_events", True):  # a list of nothing: the default
        del values["webhook_events"]
    if "openai_model" not in values and values.get("openai_dialect") == "beta":
        values["openai_model"] = BETA_MODEL
    if "open_mode" not in values:
        # Without any key, the embedded default is open on loopback only (and says so).
        keys = values.get("openai_api_key"), values.get("relay_api_key")
        values["open_mode"] = keys == (None, None) and is_loopback_host(
            values.get("host", Settings.host)
        )
    return Settings(**values, emulator=emulator_settings_from(env, argparse.Namespace()))


def settings_table() -> str:
    """The README's settings table, generated from :class:`Settings`' metadata."""
    lines = ["| variable | flag | default | meaning |", "| --- | --- | --- | --- |"]
    for setting in dataclasses.fields(Settings):
        meta = setting.metadata
        if "env" in meta:
            flag = f"`{meta['flag']}`" if meta["flag"] else ""
            lines.append(f"| `{meta['env']}` | {flag} | {meta['shown']} | {meta['doc']} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime-relay", description=__doc__)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the relay")
    for setting in dataclasses.fields(Settings):
        flag = setting.metadata.get("flag")
        if not flag:
            continue
        kind, help_text = (
            str(setting.type),
            f"{setting.metadata['doc']} ({setting.metadata['env']})",
        )
        if kind == "bool":
            serve.add_argument(flag, dest=setting.name, action="store_true", help=help_text)
        else:
            serve.add_argument(
                flag,
                dest=setting.name,
                type=int if kind == "int" else str,
                choices=_CHOICES.get(kind),
                help=help_text,
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
    from . import turn

    problems = check(settings) + turn.check(settings)
    if problems:
        raise SystemExit("; ".join(problems))
    from .embedded import build_app

    _log_access(settings)
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
    from .serving import serve

    # SIGINT/SIGTERM: on_shutdown closes every call within shutdown_timeout_secs, then
    # cleanup contexts run.
    asyncio.run(serve(build_app(settings), settings))


def _log_access(settings: Settings) -> None:
    """Who may call, and whether the demo page at / can start a call (and if not, why)."""
    if settings.open_mode:
        logger.warning(
            "open mode: calls are accepted without any key%s",
            " (embedded default on a loopback address)" if is_loopback_host(settings.host) else "",
        )
    elif local_demo(settings):
        logger.warning(
            "demo page: http://%s:%d/ mints client secrets for browsers on this machine only "
            "(loopback address, no RELAY_API_KEY); every other route needs a key",
            settings.host,
            settings.port,
        )
    else:
        logger.info("demo page: %s", DEMO_NOT_SERVED)


def _emulator(settings: EmulatorSettings) -> None:
    # The emulator alone: none of the relay's aiortc workarounds; its ICE settings
    # (ice_addresses, strict_consent) apply to its own peer connections.
    from .emulator.app import create_emulator_app

    logger.info("OpenAI emulator on http://%s:%d/v1", settings.host, settings.port)
    _run(create_emulator_app(settings), settings.host, settings.port, 10.0)


def _run(app: web.Application, host: str, port: int, shutdown_timeout: float) -> None:
    kwargs: dict[str, Any] = {"host": host, "port": port, "print": None}
    web.run_app(app, shutdown_timeout=shutdown_timeout, **kwargs)


if __name__ == "__main__":
    main()
