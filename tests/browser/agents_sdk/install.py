"""OpenAI's Agents SDK for the browser (``@openai/agents-realtime``), unmodified, from npm.

The package ships its own browser build (``dist/bundle/*.mjs``: one ES module and the
chunks it imports, no bare imports); the test serves those files as they are. They are
installed once per pinned version into a cache under the temporary folder, so repeated
runs are fast; a fresh machine installs them on first use (``npm install``, bounded).

``npm install --prefer-offline`` uses npm's own cache when it has the tarballs, so the
tests' loopback-only namespace (``scripts/run-tests.sh``) works once the package was
fetched on this machine; to fetch it before entering the namespace run::

    .venv/bin/python tests/browser/agents_sdk/install.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "@openai/agents-realtime"
VERSION = "0.20.0"  # pinned: the test checks this SDK's WebRTC transport against the relay
ENTRY = "openai-realtime-agents.mjs"
INSTALL_TIMEOUT_SECS = 240


class InstallFailed(RuntimeError):
    pass


def cache_dir() -> Path:
    root = Path(os.environ.get("RELAY_TEST_NPM_CACHE", tempfile.gettempdir()))
    return root / f"relay-agents-realtime-{VERSION}"


def bundle_dir() -> Path:
    return cache_dir() / "node_modules" / "@openai" / "agents-realtime" / "dist" / "bundle"


def ensure_bundle() -> Path:
    """The folder of the SDK's browser bundle, installing it first if needed."""
    bundle = bundle_dir()
    if (bundle / ENTRY).is_file():
        return bundle
    npm = shutil.which("npm")
    if npm is None:
        raise InstallFailed("`npm` is not installed (Node.js 20+ with npm is needed)")
    cache = cache_dir()
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    try:
        (staging / "package.json").write_text('{"name": "agents-sdk-test", "private": true}\n')
        command = [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--prefer-offline",
            "--no-save",
            f"{PACKAGE}@{VERSION}",
        ]
        try:
            done = subprocess.run(
                command,
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InstallFailed(
                f"`npm install {PACKAGE}@{VERSION}` did not finish in {INSTALL_TIMEOUT_SECS} s "
                "(is the npm registry reachable?)"
            ) from None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise InstallFailed(
                f"`npm install {PACKAGE}@{VERSION}` failed (exit {done.returncode}); the npm "
                "registry may be unreachable from here (the tests' loopback-only namespace "
                "cannot reach it: run `.venv/bin/python tests/browser/agents_sdk/install.py` "
                f"outside it first):\n{tail}"
            )
        if not (staging / bundle.relative_to(cache) / ENTRY).is_file():
            raise InstallFailed(f"{PACKAGE}@{VERSION} has no dist/bundle/{ENTRY}")
        try:
            staging.rename(cache)  # atomic: a concurrent run may have won, which is fine
        except OSError:
            if not (bundle / ENTRY).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundle


if __name__ == "__main__":
    try:
        print(ensure_bundle())
    except InstallFailed as exc:
        sys.exit(str(exc))
