"""Soak: many calls through one relay process, to see that nothing piles up.

    python -m bench.soak --calls 1000 --wave 10

One relay process (``RELAY_WORKERS=1``, run by :mod:`bench.load_relayproc` for its
``/bench/stats``) with the built-in emulator in it, recording every call
(``RELAY_RECORDING_POLICY=all``, into a temporary folder) and an admin token. Calls come
in waves of ``--wave`` at once: lean synthetic callers (:mod:`bench.load_callers`:
pre-encoded speech out, agent packets counted), each watched by a monitor events
WebSocket (``/api/calls/{id}/events``) for its whole life; after ``--hold`` seconds
every caller hangs up, and the next wave starts once the relay has no call left.

Every ``--every`` calls it prints the relay process's RSS, threads, open fds and asyncio
tasks (read between waves, with no call in progress), then a verdict: flat after the
warm-up (``--warm-up`` calls) or not. Flat means fds and tasks back at their post-warm-up
values, the idle relay's threads (read after every wave) within a small range (a slack
for executor threads), and RSS growing by less than ``--max-mb-per-100`` (linear fit
over the post-warm-up samples). Nothing forces a
garbage collection: the figures are what a long-running relay would show.

Everything stays on 127.0.0.1. Admission control (``RELAY_MAX_LOOP_LAG_MS``,
``RELAY_MAX_LOOP_LOAD``) and the per-address call rate are set out of the way, so that
a wave is never turned away on a busy machine: this measures leaks, not capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from bench.common import gather_on
from bench.load_callers import CallFailed, LoadCaller
from bench.load_lean import Pump
from bench.load_media import EncodedLoop, caller_signal, encode_opus, load_speech
from bench.procs import Proc, clean_env, free_port, open_fds, rss_mb, threads
from bench.table import Table, num

#: Threads that may come and go between samples: the default executor's pool, which
#: grows on demand up to its bound.
THREAD_SLACK = 4
FD_SLACK = 2
TASK_SLACK = 2


@dataclass(frozen=True)
class Sample:
    calls: int
    seconds: float
    rss_mb: float
    threads: int
    fds: int
    tasks: int
    refused: int
    failed: int
    agent_packets: int


@dataclass
class Soak:
    opts: argparse.Namespace
    relay: Proc
    base: str
    admin: str
    http: aiohttp.ClientSession
    loop: EncodedLoop
    pump: Pump
    done: int = 0
    refused: int = 0
    failed: int = 0
    monitor_messages: int = 0
    agent_packets: int = 0
    #: (calls so far, threads) read after every wave, once the relay is idle.
    idle_threads: list[tuple[int, int]] = field(default_factory=list)

    async def wave(self, size: int) -> None:
        callers = [LoadCaller(self.loop, self.pump) for _ in range(size)]
        results = await asyncio.gather(*(self._connect(c) for c in callers), return_exceptions=True)
        live = [c for c, ok in zip(callers, results, strict=True) if ok is True]
        monitors = [asyncio.ensure_future(self._monitor(c)) for c in live]
        await asyncio.sleep(self.opts.hold)
        self.agent_packets += sum(c.counter.packets for c in live)
        await asyncio.gather(
            *(c.hangup(self.http, self.base) for c in live),
            *(c.close() for c in callers if c not in live),
            return_exceptions=True,
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await asyncio.gather(*monitors, return_exceptions=True)
        for task in monitors:
            task.cancel()
        self.done += size

    async def _connect(self, caller: LoadCaller) -> bool:
        try:
            await caller.connect(self.http, self.base + "/v1/realtime/calls")
        except CallFailed as exc:
            if " 503" in str(exc):
                self.refused += 1
            else:
                self.failed += 1
                if self.failed <= 3:  # the first few; the count is in every row
                    print(f"  call failed: {exc}", file=sys.stderr)
            return False
        return True

    async def _monitor(self, caller: LoadCaller) -> None:
        """The call's events WebSocket, read to its end (the call's end closes it)."""
        call_id = caller.location.rsplit("/", 1)[-1]
        url = self.base.replace("http", "ws", 1) + f"/api/calls/{call_id}/events"
        protocols = ("relay-monitor", f"bearer.{self.admin}")
        with contextlib.suppress(aiohttp.ClientError):
            async with self.http.ws_connect(url, protocols=protocols) as ws:
                async for _message in ws:
                    self.monitor_messages += 1

    async def idle(self, timeout: float = 20.0) -> None:
        """Until the relay has no call (every leg closed, recordings handed over); then
        note its threads (an ended call's native threads go when it closes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.http.get(self.base + "/readyz") as response:
                if (await response.json()).get("calls") == 0:
                    await asyncio.sleep(0.3)
                    self.idle_threads.append((self.done, threads(self.relay.pid) or 0))
                    return
            await asyncio.sleep(0.1)
        print("  the relay still has calls after the wave", file=sys.stderr)

    async def sample(self, started: float) -> Sample:
        await self.idle()
        await asyncio.sleep(self.opts.settle)  # native threads of ended calls go
        async with self.http.get(self.base + "/bench/stats") as response:
            tasks = int((await response.json())["tasks"])
        pid = self.relay.pid
        return Sample(
            self.done,
            time.monotonic() - started,
            rss_mb(pid) or 0.0,
            threads(pid) or 0,
            open_fds(pid) or 0,
            tasks,
            self.refused,
            self.failed,
            self.agent_packets,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls in all (default 1000)")
    parser.add_argument("--wave", type=int, default=10, help="calls at once (default 10)")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each call lasts")
    parser.add_argument("--every", type=int, default=100, help="print every N calls")
    parser.add_argument("--warm-up", type=int, default=200, help="calls before the baseline")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle before a sample")
    parser.add_argument(
        "--max-mb-per-100", type=float, default=2.0, help="flat: RSS slope below this"
    )
    parser.add_argument(
        "--noise-suppression", default="webrtc", choices=("webrtc", "rnnoise", "off")
    )
    parser.add_argument("--keep", action="store_true", help="keep the recordings folder")
    opts = parser.parse_args(argv)
    if opts.every % opts.wave or opts.warm_up % opts.every:
        parser.error("--every must be a multiple of --wave, --warm-up of --every")
    return opts


def verdict(
    samples: list[Sample],
    idle_threads: list[tuple[int, int]],
    warm_up: int,
    max_mb_per_100: float,
) -> tuple[bool, str]:
    """Flat: after the warm-up, RSS grows less than ``max_mb_per_100`` (a linear fit),
    fds and tasks stay at their first post-warm-up value (small slack), and the threads
    of the idle relay, read after every wave, keep within a small range (threads that
    pile up until a garbage collection make a saw-tooth, whatever the 100-call samples
    happen to catch)."""
    after = [s for s in samples if s.calls >= warm_up]
    if len(after) < 3:
        return False, "not enough calls after the warm-up for a verdict"
    base, last = after[0], after[-1]
    xs = np.array([s.calls for s in after], dtype=float)
    slope = float(np.polyfit(xs, np.array([s.rss_mb for s in after]), 1)[0]) * 100
    problems = []
    if slope > max_mb_per_100:
        problems.append(f"RSS grows {slope:.2f} MB per 100 calls")
    for name, slack in (("fds", FD_SLACK), ("tasks", TASK_SLACK)):
        first, final = getattr(base, name), max(getattr(s, name) for s in after)
        if final > first + slack:
            problems.append(f"{name} {first} -> {final}")
    idle = [count for calls, count in idle_threads if calls >= warm_up] or [base.threads]
    if max(idle) > min(idle) + THREAD_SLACK:
        problems.append(f"threads of the idle relay between waves range {min(idle)}-{max(idle)}")
    summary = (
        f"after the warm-up ({base.calls} calls): RSS {slope:+.2f} MB per 100 calls "
        f"({base.rss_mb:.1f} -> {last.rss_mb:.1f} MB), threads {min(idle)}-{max(idle)} "
        f"after every wave, fds {base.fds} -> {last.fds}, tasks {base.tasks} -> {last.tasks}"
    )
    if problems:
        return False, "NOT FLAT: " + "; ".join(problems) + "\n" + summary
    return True, "FLAT: " + summary


async def run(opts: argparse.Namespace) -> int:
    gather_on(["127.0.0.1"])
    port = free_port()
    admin = "soak-" + secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="relay-soak-"))
    env = clean_env()
    env.update(
        RELAY_HOST="127.0.0.1",
        RELAY_PORT=str(port),
        RELAY_WORKERS="1",
        RELAY_OPEN="1",
        RELAY_ICE_ADDRESSES="127.0.0.1",
        RELAY_ADMIN_TOKEN=admin,
        RELAY_RECORDING_POLICY="all",
        RELAY_RECORDING_DIR=str(workdir / "recordings"),
        RELAY_NOISE_SUPPRESSION=opts.noise_suppression,
        RELAY_MAX_LOOP_LAG_MS="100000",
        RELAY_MAX_LOOP_LOAD="0",
        RELAY_RATE_CALLS_PER_MIN="0",
        RELAY_RATE_CALLS_PER_ADDRESS_PER_MIN="0",
        RELAY_LOG_LEVEL="WARNING",
    )
    argv = [sys.executable, "-m", "bench.load_relayproc", "relay", "serve"]
    relay = Proc("relay", argv, env, workdir / "relay.log")
    speech, source = load_speech()
    pump = Pump()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    table = Table(
        "{:>6}{:>8}{:>10}{:>9}{:>6}{:>7}{:>9}{:>8}",
        "calls,secs,RSS MB,threads,fds,tasks,refused,failed",
    )
    samples: list[Sample] = []
    try:
        await relay.start()
        base = f"http://127.0.0.1:{port}"
        await relay.wait_http(http, base + "/readyz", timeout=60)
        pump.start()
        soak = Soak(
            opts, relay, base, admin, http, EncodedLoop(encode_opus(caller_signal(speech))), pump
        )
        print(
            f"soak: {opts.calls} calls in waves of {opts.wave}, {opts.hold:g} s each, one relay "
            f"process with the built-in emulator, recording on, a monitor WebSocket per call, "
            f"noise suppression {opts.noise_suppression}; speech: {source}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print("\n".join(table.head()))
        started = time.monotonic()
        first = await soak.sample(started)
        samples.append(first)
        print(table.layout.format(*_row(first)), flush=True)
        while soak.done < opts.calls:
            await soak.wave(min(opts.wave, opts.calls - soak.done))
            if soak.done % opts.every == 0 or soak.done >= opts.calls:
                sample = await soak.sample(started)
                samples.append(sample)
                print(table.layout.format(*_row(sample)), flush=True)
            else:
                await soak.idle()
        flat, text = verdict(samples, soak.idle_threads, opts.warm_up, opts.max_mb_per_100)
        delivered = soak.agent_packets / max(1, (soak.done - soak.refused - soak.failed))
        print(
            f"monitor messages: {soak.monitor_messages}; agent packets per call: {delivered:.0f} "
            f"(at most {opts.hold * 50:.0f}: {opts.hold:g} s from the answer, media set-up "
            f"included); load average {os.getloadavg()[0]:.1f}"
        )
        print(text)
        return 0 if flat else 1
    finally:
        await pump.stop()
        await http.close()
        code = await relay.stop()
        if code not in (0, None):
            print(f"relay exited with {code}; its log: {relay.log}", file=sys.stderr)
        if not opts.keep:
            shutil.rmtree(workdir / "recordings", ignore_errors=True)


def _row(sample: Sample) -> tuple[str, ...]:
    return (
        str(sample.calls),
        num(sample.seconds, 0),
        num(sample.rss_mb, 1),
        str(sample.threads),
        str(sample.fds),
        str(sample.tasks),
        str(sample.refused),
        str(sample.failed),
    )


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
