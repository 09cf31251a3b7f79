"""The emulator is the oracle of every relay test, so it shares no code with the relay:
nothing under ``relay/emulator/`` imports ``relay.*`` outside it, and an emulator call
works in a process where no relay module was ever imported (stock aiortc receive path,
stock aioice consent, no process-wide patch)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "relay" / "emulator"
OWN = ("relay", "emulator")


def foreign_imports(source: str, package: tuple[str, ...]) -> list[str]:
    """The imports of ``source`` (a module of ``package``) that reach into ``relay``
    outside ``relay.emulator``, or climb out of it with a relative import."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > len(package):
                found.append(f"line {node.lineno}: relative import above the top package")
                continue
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            # ``from relay import x`` imports the module ``relay.x``.
            targets = (
                [module + [alias.name] for alias in node.names] if len(module) < 2 else [module]
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value.split(".")]
        for parts in targets:
            if parts[0] == "relay" and tuple(parts[:2]) != OWN:
                found.append(f"line {node.lineno}: {'.'.join(parts)}")
    return found


def _package_of(path: Path) -> tuple[str, ...]:
    """``relay.emulator`` for ``relay/emulator/x.py`` and for its ``__init__.py``."""
    return path.relative_to(ROOT).parent.parts


def test_the_checker_finds_what_it_must() -> None:
    package = ("relay", "emulator")
    bad = """
import relay.call
import relay
from relay import aiortc_patches
from relay.config import EmulatorSettings
from .. import aiortc_patches as p
from ..config import GA_MODEL
from ...elsewhere import x
importlib.import_module("relay.taps")
"""
    assert len(foreign_imports(bad, package)) == 8, foreign_imports(bad, package)
    good = """
import aiortc
from . import ids
from .settings import EmulatorSettings
from relay.emulator.ice import configure_ice
from relay import emulator
importlib.import_module(f"{__name__}.app")
"""
    assert foreign_imports(good, package) == []


def test_emulator_imports_nothing_from_the_relay() -> None:
    files = sorted(EMULATOR.rglob("*.py"))
    assert len(files) > 10
    problems = {
        str(path.relative_to(ROOT)): found
        for path in files
        if (found := foreign_imports(path.read_text(), _package_of(path)))
    }
    assert problems == {}


#: Run in a fresh interpreter: an emulator on 127.0.0.1 and an aiortc client asking for
#: a spoken reply; it prints what it saw as JSON.
CALL_SCRIPT = Path(__file__).with_name("emulator_alone.py")


@pytest.mark.timeout(60)
def test_emulator_call_without_any_relay_module() -> None:
    done = subprocess.run(
        [sys.executable, str(CALL_SCRIPT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["relay_modules"] == []
    assert seen["stock_buffer"] and seen["stock_consent"] and seen["stock_gathering"]
    assert seen["receiver_buffers"] == ["aiortc.jitterbuffer"]
    # Gathering on 127.0.0.1 was the emulator's own, per connection.
    assert seen["candidates"] and set(seen["candidates"]) == {"127.0.0.1"}
    assert seen["events"][0] == "session.created"
    assert "response.done" in seen["events"]
    assert seen["loud_frames"] >= 10
