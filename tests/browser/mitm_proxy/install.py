"""mitmproxy's ``mitmdump`` (a TLS-inspecting HTTP proxy, from PyPI) for profile (d) of
the network tests, in a virtualenv of its own: mitmproxy pins its own versions of
cryptography, h2, aioquic and more, which must not meet the relay's.

It is installed once per pinned version into a cache under the temporary folder (a
fresh machine installs it on first use, ``pip install``, bounded). The tests run in a
loopback-only namespace (``scripts/run-tests.sh``), which reaches no registry, so that
script runs this first::

    .venv/bin/python tests/browser/mitm_proxy/install.py
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Pinned: 11.0.x is the last series that runs on the project's Python 3.11.
VERSION = "11.0.2"
INSTALL_TIMEOUT_SECS = 300


class InstallFailed(RuntimeError):
    pass


def venv_dir() -> Path:
    root = Path(os.environ.get("RELAY_TEST_MITM_CACHE", tempfile.gettempdir()))
    return root / f"relay-mitmproxy-{VERSION}"


def mitmdump() -> Path:
    return venv_dir() / "bin" / "mitmdump"


def ensure_mitmdump() -> Path:
    """The ``mitmdump`` executable, installing it first if needed (one installer at a
    time, under a lock; ``complete`` is written last, so a half-built venv is redone)."""
    target = venv_dir()
    done = target / "complete"
    if done.is_file():
        return mitmdump()
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return mitmdump()
        shutil.rmtree(target, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(target)], "python -m venv")
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        _run([*pip, f"mitmproxy=={VERSION}"], f"pip install mitmproxy=={VERSION}")
        if not mitmdump().is_file():
            raise InstallFailed(f"mitmproxy {VERSION} installed no mitmdump")
        done.write_text(VERSION)
    return mitmdump()


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECS, check=False
        )
    except subprocess.TimeoutExpired:
        raise InstallFailed(
            f"`{what}` did not finish in {INSTALL_TIMEOUT_SECS} s (is PyPI reachable?)"
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise InstallFailed(
            f"`{what}` failed (exit {done.returncode}); PyPI may be unreachable from here (the "
            "tests' loopback-only namespace cannot reach it: run "
            f"`.venv/bin/python tests/browser/mitm_proxy/install.py` outside it first):\n{tail}"
        )


if __name__ == "__main__":
    try:
        print(ensure_mitmdump())
    except InstallFailed as exc:
        sys.exit(str(exc))
