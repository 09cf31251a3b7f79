"""Settings are spelled once: the README's table is what the Settings object says, and
the environment reaches every field."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from relay.cli import build_parser, settings_from, settings_table
from relay.config import Secret, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_is_generated_from_settings() -> None:
    assert settings_table() in README.read_text()


def test_every_relay_variable_in_the_readme_is_a_setting_or_documented_elsewhere() -> None:
    text = README.read_text()
    table = text[text.index("## Settings") : text.index("## Architecture")]
    named = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    fields = {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata}
    others = {n for n in named if n.startswith("RELAY_EMULATOR_")} | {"RELAY_LOG_LEVEL"}
    assert named == fields | others


def test_environment_reaches_every_setting() -> None:
    args = build_parser().parse_args(["serve"])
    env = {"OPENAI_API_KEY": "sk-test"}
    for setting in dataclasses.fields(Settings):
        meta = setting.metadata
        if "env" not in meta or meta["env"] in env:
            continue
        env[meta["env"]] = {
            "int": "7",
            "float": "2.5",
            "bool": "0" if setting.default else "1",
            "Secret | None": "s3cret",
            "tuple[str, ...]": "a,b",
            "Dialect": "beta",
            "NoiseSuppression": "rnnoise",
            "RecordingPolicy": "all",
            "UpstreamTransport": "websocket",
        }.get(str(setting.type), "custom")
    settings = settings_from(env, args)
    for setting in dataclasses.fields(Settings):
        if "env" in setting.metadata:
            assert getattr(settings, setting.name) != setting.default, setting.name
    assert isinstance(settings.admin_token, Secret) and "s3cret" not in repr(settings)


def test_flags_override_the_environment() -> None:
    args = build_parser().parse_args(["serve", "--port", "9001", "--dialect", "ga", "--open"])
    settings = settings_from({"RELAY_PORT": "9000", "RELAY_OPENAI_DIALECT": "beta"}, args)
    assert (settings.port, settings.openai_dialect, settings.open_mode) == (9001, "ga", True)


def test_bad_values_exit_with_the_variable_named() -> None:
    args = argparse.Namespace()
    with pytest.raises(SystemExit, match="RELAY_MAX_CALLS"):
        settings_from({"RELAY_MAX_CALLS": "many"}, args)
    with pytest.raises(SystemExit, match="RELAY_RECORDING_POLICY"):
        settings_from({"RELAY_RECORDING_POLICY": "sometimes"}, args)
