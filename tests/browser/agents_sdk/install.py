"""OpenAI's Agents SDK for the browser (``@openai/agents-realtime``), unmodified, from npm.

The package ships its own browser build (``dist/bundle/*.mjs``: one ES module and the
chunks it imports, no bare imports); the test serves those files as they are. It is
installed once per pinned version (see ``tests/browser/npm_package.py``); to fetch it
before entering the tests' loopback-only namespace run::

    .venv/bin/python tests/browser/agents_sdk/install.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/browser, run as a script
from npm_package import InstallFailed, ensure_package  # noqa: E402

PACKAGE = "@openai/agents-realtime"
VERSION = "0.20.0"  # pinned: the test checks this SDK's WebRTC transport against the relay
ENTRY = "openai-realtime-agents.mjs"

__all__ = ["ENTRY", "VERSION", "InstallFailed", "ensure_bundle"]


def ensure_bundle() -> Path:
    """The folder of the SDK's browser bundle, installing it first if needed."""
    return ensure_package(PACKAGE, VERSION, f"dist/bundle/{ENTRY}") / "dist" / "bundle"


if __name__ == "__main__":
    try:
        print(ensure_bundle())
    except InstallFailed as exc:
        sys.exit(str(exc))
