"""A proxy server a network test starts (squid, mitmdump): in a folder of its own, its
output in a file there, up once it listens, stopped (idempotent) with the folder gone."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from netns import stop_process


class ProxyProcess:
    def __init__(
        self,
        name: str,
        folder: Path,
        command: list[str],
        port: int,
        *,
        ready: Callable[[], bool] = lambda: True,
        timeout_secs: float = 15.0,
    ) -> None:
        self.name, self.folder = name, folder
        self.log = folder / f"{name}.out"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.logs()}")
            done = subprocess.run(
                ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
            )
            if str(port) in done.stdout and ready():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{name} not listening on {port}: {self.logs()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def logs(self) -> str:
        """The tail of each log file in its folder, and of its output."""
        parts = [p.read_text(errors="replace")[-1500:] for p in self.folder.glob("*.log*")]
        return "\n".join([*parts, self.output()[-1500:]])

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)
