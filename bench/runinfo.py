"""What a benchmark run ran on (machine, package versions, git revision) and what the
relay under test said (its warnings, errors and tracebacks)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.common import REPO

PACKAGES = ("aiortc", "aioice", "av", "numpy", "livekit", "aiohttp", "realtime-relay")
_LEVELS = ("WARNING", "ERROR", "CRITICAL")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


def machine_lines() -> list[str]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return [
        f"machine: {model}, {os.cpu_count()} cores ({affinity} usable), "
        f"{platform.system()} {platform.release()}, load average {load}",
        f"versions: Python {platform.python_version()}, " + ", ".join(versions),
    ]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
    ).stdout


def tree_state() -> str:
    """The git revision of the tree under test, and what is modified in relay/ and bench/."""
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
        status = _git("status", "--porcelain", "--", "relay", "bench").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "tree: (git not available)"
    changed = [line[3:] for line in status if not line[3:].startswith("bench/load")]
    return f"tree: {head or '?'}" + (
        f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean relay/)"
    )


def relay_notes(text: str) -> list[str]:
    """Warnings, errors and tracebacks a relay printed (minus the expected open-mode one)."""
    notes: list[str] = []
    in_traceback = False
    for line in text.splitlines():
        if line.startswith("Traceback"):
            in_traceback = True
        flagged = in_traceback or any(f" {level} " in line for level in _LEVELS)
        if flagged and "open mode" not in line:
            notes.append(line)
        if in_traceback and line and not line.startswith((" ", "Traceback")):
            in_traceback = False
    return notes[:200]


def dedupe(lines: list[str]) -> list[str]:
    """Log lines without their time stamps, each once, with a count and the first time."""
    counts: dict[str, list[Any]] = {}
    for line in lines:
        stamp = _STAMP.match(line)
        key = line[stamp.end() :] if stamp else line
        if key not in counts:
            counts[key] = [0, stamp.group(0).strip() if stamp else ""]
        counts[key][0] += 1
    out = []
    for key, (count, first) in counts.items():
        prefix = f"[x{count}] " if count > 1 else ""
        if first:
            prefix = f"[x{count}, first {first}] "
        out.append(prefix + key)
    return out
