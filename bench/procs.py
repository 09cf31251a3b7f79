"""Processes of the benchmarks: start them (pinned to a core, for ``bench.load``), and
read what /proc says about them (CPU, per-thread CPU, RSS, threads, open fds) and
about the machine (per-core busy time, load average).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.common import REPO

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This process's environment without the relay's, OpenAI's and Python's settings;
    ``PYTHONPATH`` is this checkout, so the relay under test is the code next to the
    benchmark (not whichever checkout the virtualenv was installed from)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "OPENAI_", "PYTHON"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def own_cpu() -> float:
    """User + system CPU seconds of this process."""
    t = os.times()
    return t.user + t.system


def _stat_cpu(path: str) -> float | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all threads)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def main_thread_cpu(pid: int) -> float | None:
    """utime + stime of the main thread (the event loop's, for our processes)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def status_field(pid: int, name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    kb = status_field(pid, "VmRSS")
    return None if kb is None else kb / 1024


def threads(pid: int) -> int | None:
    return status_field(pid, "Threads")


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat. Busy counts user,
    nice, system, irq, softirq and steal; idle and iowait are not busy."""
    out: dict[int, tuple[float, float]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                parts = line.split()
                values = [float(v) for v in parts[1:9]]
                user, nice, system, idle, iowait, irq, softirq, steal = values
                busy = user + nice + system + irq + softirq + steal
                out[int(parts[0][3:])] = (busy, busy + idle + iowait)
    return out


def core_busy_pct(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]], core: int
) -> float | None:
    if core not in before or core not in after:
        return None
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return 100.0 * busy / total if total > 0 else None


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass
class ProcSample:
    """One reading of a process."""

    cpu_s: float | None
    main_cpu_s: float | None
    rss_mb: float | None
    threads: int | None
    fds: int | None


_LIVE: set[Proc] = set()


@atexit.register
def _kill_leftovers() -> None:
    """If the orchestrator dies without stopping its children (Ctrl-C at the wrong
    moment), kill them: a relay left pinned to core 0 would skew the next run."""
    for proc in list(_LIVE):
        if proc.proc is not None and proc.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.proc.pid, signal.SIGKILL)


@dataclass(eq=False)  # compared and hashed by identity (see _LIVE)
class Proc:
    """A child process (pinned to one core if ``core`` is set), output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    core: int | None = None
    nice: int = 0
    proc: asyncio.subprocess.Process | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def _pin(self) -> Callable[[], None] | None:
        """What the child runs before exec: its core and niceness (None: nothing)."""
        core, nice = self.core, self.nice
        if core is None and not nice:
            return None

        def pin() -> None:
            if core is not None:
                os.sched_setaffinity(0, {core})
            if nice:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, 0, nice)

        return pin

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=str(REPO),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._pin(),
            )
        _LIVE.add(self)

    async def wait_http(
        self, http: aiohttp.ClientSession, url: str, timeout: float, request_timeout: float = 2
    ) -> None:
        """Until ``url`` answers 200 (bounded: RuntimeError), or the process exits
        (RuntimeError with the tail of its output)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.alive:
                tail = "\n".join(self.output().strip().splitlines()[-20:])
                raise RuntimeError(f"{self.name} exited with code {self.returncode}:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                wait = aiohttp.ClientTimeout(total=request_timeout)
                async with http.get(url, timeout=wait) as response:
                    if response.status == 200:
                        return
            if loop.time() > deadline:
                raise RuntimeError(f"{self.name}: {url} did not answer 200 within {timeout:g} s")
            await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float | None:
        return None if self.proc is None else cpu_seconds(self.proc.pid)

    def sample(self) -> ProcSample:
        pid = self.pid
        return ProcSample(
            cpu_seconds(pid), main_thread_cpu(pid), rss_mb(pid), threads(pid), open_fds(pid)
        )

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        _LIVE.discard(self)
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                return await proc.wait()
        return proc.returncode

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def output_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0
