"""Unmodified npm packages the browser tests serve to Chromium, fetched from the npm
registry with ``npm install`` (pinned versions, bounded in time), once per version,
into a cache under the temporary folder.

``npm install --prefer-offline`` uses npm's own cache when it has the tarballs, so the
tests' loopback-only namespace (``scripts/run-tests.sh``) works once a package was
fetched on this machine; ``scripts/run-tests.sh`` fetches them before entering it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_TIMEOUT_SECS = 240


class InstallFailed(RuntimeError):
    pass


def cache_dir(package: str, version: str) -> Path:
    root = Path(os.environ.get("RELAY_TEST_NPM_CACHE", tempfile.gettempdir()))
    name = package.lstrip("@").replace("/", "-")
    return root / f"relay-{name}-{version}"


def package_dir(package: str, version: str) -> Path:
    """Where ``package@version`` is (or will be) installed."""
    return cache_dir(package, version) / "node_modules" / package


def ensure_package(package: str, version: str, required: str) -> Path:
    """The folder of ``package@version``, installing it first if its file ``required``
    (a path inside the package) is not there yet."""
    installed = package_dir(package, version)
    if (installed / required).is_file():
        return installed
    npm = shutil.which("npm")
    if npm is None:
        raise InstallFailed("`npm` is not installed (Node.js 20+ with npm is needed)")
    cache = cache_dir(package, version)
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    try:
        (staging / "package.json").write_text('{"name": "relay-test-deps", "private": true}\n')
        _npm_install(npm, staging, f"{package}@{version}")
        if not (staging / installed.relative_to(cache) / required).is_file():
            raise InstallFailed(f"{package}@{version} has no {required}")
        try:
            staging.rename(cache)  # atomic: a concurrent run may have won, which is fine
        except OSError:
            if not (installed / required).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return installed


def _npm_install(npm: str, folder: Path, spec: str) -> None:
    command = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--prefer-offline",
        "--no-save",
        spec,
    ]
    try:
        done = subprocess.run(
            command,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InstallFailed(
            f"`npm install {spec}` did not finish in {INSTALL_TIMEOUT_SECS} s "
            "(is the npm registry reachable?)"
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise InstallFailed(
            f"`npm install {spec}` failed (exit {done.returncode}); the npm registry may be "
            "unreachable from here (the tests' loopback-only namespace cannot reach it: "
            "scripts/run-tests.sh fetches the test packages before entering it):\n" + tail
        )
