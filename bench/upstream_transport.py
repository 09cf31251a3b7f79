"""The relay's two upstream transports side by side, in one run: CPU per call and added
latency with ``RELAY_UPSTREAM_TRANSPORT=webrtc`` (the default) and ``websocket``.

    .venv/bin/python -m bench.upstream_transport [--calls 1,8] [--seconds 15]
                                                  [--latency-seconds 15] [--json out.json]

1. **CPU per call.** For each transport and each N of ``--calls``: a fresh relay
   (``bench/load_relayproc.py``, noise suppression ``webrtc``, the default) pinned to
   core 0; the project's emulator (``bench/load_upstream.py``, emulator mode: it hears
   the callers' speech and answers it, over WebRTC or over its WebSocket transport) and N
   callers (``bench/load_callers.py``: pre-encoded browser-like Opus of real speech,
   lean RTP) on core 1. After a warm-up, the relay's CPU time over the window
   (``/proc/<pid>/stat``) per call, and the packets the callers sent and received per
   call-second (nominal 50 up; down is 50 too: both transports send the agent's track
   continuously, silence included).
2. **Added latency.** ``bench.latency``'s tone-onset method (see its docstring) for the
   variants ``direct`` (the floor), ``relay-off`` (WebRTC upstream) and ``relay-off-wsup``
   (WebSocket upstream; the probe answers ``GET /v1/realtime`` with OpenAI's event
   protocol, sending the downlink as 20 ms deltas in real time).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bench.common import gather_on, write_json
from bench.latency import run_all
from bench.latency_probe import Probe
from bench.latency_report import report
from bench.load_callers import CallFailed, LoadCaller
from bench.load_lean import Pump
from bench.load_media import EncodedLoop, caller_signal, encode_opus, load_speech
from bench.load_options import LOAD_CORE, RELAY_CORE
from bench.procs import Proc, clean_env, free_port
from bench.runinfo import machine_lines

TRANSPORTS = ("webrtc", "websocket")
WARMUP_S = 4.0
LATENCY_VARIANTS = ("direct", "relay-off", "relay-off-wsup")
ADMIN = "bench-admin-" + secrets.token_hex(8)


@dataclass
class CpuPoint:
    transport: str
    calls: int
    relay_cpu_pct: float | None = None
    up_per_call_s: float = 0.0
    down_per_call_s: float = 0.0
    #: What the relay itself says it sent, per call-second: to OpenAI, to the callers.
    relay_up_per_call_s: float = 0.0
    relay_down_per_call_s: float = 0.0
    failed: int = 0
    error: str | None = None

    @property
    def per_call_pct(self) -> float | None:
        return None if self.relay_cpu_pct is None else self.relay_cpu_pct / self.calls


class Bench:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.key = "sk-bench-" + secrets.token_hex(12)
        self.up_port = free_port()
        self.base_up = f"http://127.0.0.1:{self.up_port}"
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.pump = Pump()
        speech, _ = load_speech()
        self.loop = EncodedLoop(encode_opus(caller_signal(speech)))
        argv = [sys.executable, "-m", "bench.load_upstream", "--port", str(self.up_port)]
        argv += ["--key", self.key, "--mode", "emulator"]
        log = logdir / "upstream.log"
        self.upstream = Proc("upstream", argv, clean_env(), log, LOAD_CORE)

    async def start(self) -> None:
        await self.upstream.start()
        await self.upstream.wait_http(self.http, f"{self.base_up}/healthz", 60)
        self.pump.start()

    async def stop(self) -> None:
        await self.pump.stop()
        await self.upstream.stop()
        await self.http.close()

    def _relay(self, transport: str, port: int) -> Proc:
        env = clean_env()
        env.update(
            OPENAI_API_KEY=self.key,
            OPENAI_BASE_URL=f"{self.base_up}/v1",
            RELAY_UPSTREAM_TRANSPORT=transport,
            RELAY_ICE_ADDRESSES="127.0.0.1",
            RELAY_OPEN="1",
            RELAY_HOST="127.0.0.1",
            RELAY_PORT=str(port),
            RELAY_NOISE_SUPPRESSION="webrtc",
            RELAY_WORKERS="1",
            RELAY_ADMIN_TOKEN=ADMIN,
            # admission by loop load is not what is measured here (a shared machine)
            RELAY_MAX_LOOP_LOAD="0",
            RELAY_MAX_LOOP_LAG_MS="2000",
        )
        argv = [sys.executable, "-m", "bench.load_relayproc", "relay", "serve"]
        return Proc(
            f"relay-{transport}", argv, env, self.logdir / f"relay-{transport}.log", RELAY_CORE
        )

    async def _relay_frames(self, base: str) -> tuple[int, int]:
        """Frames the relay sent upstream and to the callers, over its live calls."""
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with self.http.get(f"{base}/api/calls", headers=headers) as response:
            calls = (await response.json())["data"]
        up = sum(c["audio"]["upstream_frames_out"] for c in calls)
        return up, sum(c["audio"]["caller_frames_out"] for c in calls)

    async def cpu_point(self, transport: str, calls: int, seconds: float) -> CpuPoint:
        point = CpuPoint(transport, calls)
        port = free_port()
        relay = self._relay(transport, port)
        callers: list[LoadCaller] = []
        base = f"http://127.0.0.1:{port}"
        try:
            await relay.start()
            await relay.wait_http(self.http, f"{base}/healthz", 60)
            callers = [LoadCaller(self.loop, self.pump) for _ in range(calls)]
            results = await asyncio.gather(
                *(c.connect(self.http, f"{base}/v1/realtime/calls") for c in callers),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise CallFailed(f"{len(errors)} of {calls} calls failed: {errors[0]}")
            await asyncio.sleep(WARMUP_S)
            sent0 = sum(c.sent for c in callers)
            got0 = sum(c.counter.packets for c in callers)
            relay0 = await self._relay_frames(base)
            cpu0, t0 = relay.cpu_seconds(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, elapsed = relay.cpu_seconds(), time.monotonic() - t0
            relay1 = await self._relay_frames(base)
            point.relay_up_per_call_s = (relay1[0] - relay0[0]) / elapsed / calls
            point.relay_down_per_call_s = (relay1[1] - relay0[1]) / elapsed / calls
            point.up_per_call_s = (sum(c.sent for c in callers) - sent0) / elapsed / calls
            point.down_per_call_s = (
                (sum(c.counter.packets for c in callers) - got0) / elapsed / calls
            )
            point.failed = sum(1 for c in callers if c.ended)
            if cpu0 is not None and cpu1 is not None:
                point.relay_cpu_pct = (cpu1 - cpu0) / elapsed * 100
        except Exception as exc:  # reported in the table, the run goes on
            point.error = str(exc) or repr(exc)
        finally:
            await asyncio.gather(
                *(c.hangup(self.http, base) for c in callers), return_exceptions=True
            )
            await relay.stop()
        return point


def cpu_table(points: list[CpuPoint]) -> str:
    lines = [
        "relay CPU (% of one core, over the window) with N calls of real speech, "
        "noise suppression webrtc; frames per call-second (nominal 50): sent by the callers, "
        "sent upstream by the relay, sent to the callers by the relay, received by them",
        f"{'transport':<11}{'calls':>6}{'relay %':>9}{'per call %':>12}"
        f"{'up sent':>9}{'up relay':>10}{'down relay':>12}{'down recv':>11}{'ended':>7}",
    ]
    for p in points:
        if p.error:
            lines.append(f"{p.transport:<11}{p.calls:>6}  FAILED: {p.error[:120]}")
            continue
        cpu = f"{p.relay_cpu_pct:.1f}" if p.relay_cpu_pct is not None else "-"
        per = f"{p.per_call_pct:.2f}" if p.per_call_pct is not None else "-"
        lines.append(
            f"{p.transport:<11}{p.calls:>6}{cpu:>9}{per:>12}{p.up_per_call_s:>9.1f}"
            f"{p.relay_up_per_call_s:>10.1f}{p.relay_down_per_call_s:>12.1f}"
            f"{p.down_per_call_s:>11.1f}{p.failed:>7}"
        )
    return "\n".join(lines)


async def run(calls: Sequence[int], seconds: float, latency_s: float, out: Path | None) -> int:
    gather_on(["127.0.0.1"])
    logdir = Path(tempfile.mkdtemp(prefix="bench-upstream-transport-"))
    header = machine_lines()
    print("\n".join(header), flush=True)
    bench = Bench(logdir)
    points: list[CpuPoint] = []
    await bench.start()
    try:
        for n in calls:
            for transport in TRANSPORTS:
                print(f"CPU: {transport} upstream, {n} calls, {seconds:g} s ...", file=sys.stderr)
                points.append(await bench.cpu_point(transport, n, seconds))
    finally:
        await bench.stop()
    probe = Probe()
    await probe.start()
    try:
        latency = await run_all(LATENCY_VARIANTS, probe, latency_s, logdir)
    finally:
        await probe.stop()
    print()
    print(cpu_table(points))
    print()
    print(report(latency, latency_s), flush=True)
    print(f"\nlogs: {logdir}")
    if out is not None:
        data = {
            "machine": header,
            "cpu": [asdict(p) for p in points],
            "latency": [asdict(r) for r in latency],
        }
        write_json(out, data)
    return 1 if any(p.error for p in points) or any(r.error for r in latency) else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.upstream_transport",
        description="CPU per call and added latency, WebRTC vs WebSocket upstream.",
    )
    parser.add_argument("--calls", default="1,8", help="N values for the CPU points (1,8)")
    parser.add_argument("--seconds", type=float, default=15.0, help="CPU window per point (15)")
    parser.add_argument(
        "--latency-seconds", type=float, default=15.0, help="latency window per variant (15)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    calls = sorted({int(x) for x in args.calls.split(",") if x.strip()})
    if not calls or calls[0] < 1:
        parser.error("--calls: positive integers")
    sys.exit(asyncio.run(run(calls, args.seconds, args.latency_seconds, args.json)))


if __name__ == "__main__":
    main()
