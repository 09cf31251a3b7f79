"""Capacity of the relay per core: N synthetic callers through the relay to the emulator.

    .venv/bin/python -m bench.load                 # full run (~15-20 min)
    .venv/bin/python -m bench.load --quick         # smoke version (~2-3 min)
    .venv/bin/python -m bench.load --variants relay-off --calls 1,8,16,32 --json out.json

Processes (all on 127.0.0.1, no STUN/TURN, ``RTCConfiguration(iceServers=[])``):

* **the relay under test**, pinned to core 0 (``os.sched_setaffinity`` in the child
  before exec): ``realtime-relay serve`` (``RELAY_WORKERS=1``, ``RELAY_NOISE_SUPPRESSION``
  webrtc/off) or the stock aiortc relay of ``bench/stock_relay.py``, both through
  ``bench/load_relayproc.py``, which only adds ``GET /bench/stats`` (asyncio task count,
  event-loop lag) and, on demand, a cProfile window;
* **the upstream**, pinned to core 1: ``bench/load_upstream.py``, the project's emulator
  (``create_emulator_app``) behind a middleware that can instead answer with a cheap
  stand-in (``light``: counts the uplink, sends a pre-encoded speech loop) and answers
  the latency probe's call;
* **the callers** in this process, pinned to core 1: aiortc peer connections sending
  pre-encoded browser-like Opus (libopus mono 32 kb/s ``voip``, real speech), through the
  lean RTP path of ``bench/load_lean.py``. Up to ``--probes`` (2) of the N callers are
  *probes*: they send tone bursts through aiortc's own sender and decode the downlink,
  and their upstream end is a probe stand-in that decodes the uplink and sends tone
  bursts down (the latency of both directions comes from these calls, pooled).

For each variant the relay is started fresh and N is ramped up (calls stay up between
points); at each N, after a warm-up, a window measures: relay CPU (``/proc/<pid>/stat``
utime+stime over the window; the main thread's share from ``/proc/<pid>/task/<pid>``),
frames delivered upstream (counted by the emulator / stand-in) and downstream (counted
by the callers) against the nominal 50 per call-second, the tone-onset latency of the
probe calls in both directions minus a direct (no relay) floor, the relay's RSS,
threads, fds, tasks and loop lag, the load side's own loop lag, pacing and CPU, and
the busy time of both cores (``/proc/stat``) and the load average, so that other work
on the machine shows. A point whose load side lagged is marked LOAD and not counted.
Then 20 calls are set up at once (a few rounds) for the setup time, and, for the relay
variants, a fresh relay takes ``--leak-calls`` short calls one wave after another while
its RSS, threads, fds and tasks are sampled every 50 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pstats
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.latency import machine_lines, match_onsets, relay_notes
from bench.load_callers import CallFailed, LoadCaller
from bench.load_lean import Pump
from bench.load_media import (
    PROBE_PERIOD,
    RATE,
    EncodedLoop,
    LagProbe,
    caller_signal,
    encode_opus,
    encoded_probe_loop,
    lag_summary,
    load_speech,
)
from bench.load_procs import (
    REPO,
    Proc,
    clean_env,
    core_busy_pct,
    core_times,
    free_port,
    loadavg,
)
from relay import aiortc_patches

VARIANTS: dict[str, str] = {
    "relay-webrtc": "realtime-relay, noise suppression webrtc (the default)",
    "relay-off": "realtime-relay, noise suppression off",
    "stock-webrtc": "stock aiortc relay (default jitter buffer, MediaRelay, PyAV "
    "resampling) + livekit APM NS per frame",
    "stock-off": "stock aiortc relay, no noise suppression",
}
DEFAULT_VARIANTS = tuple(VARIANTS)
RELAY_CORE, LOAD_CORE = 0, 1

#: Capacity criteria (issue 5).
MIN_DELIVERED = 0.995
MAX_ADDED_P99_MS = 50.0
#: The load side is "keeping up" while these hold.
MAX_LOAD_LAG_P99_MS = 10.0
MIN_SOURCE_PACE = 0.995
#: A LOAD point, or a saturated one while other processes used core 0, is measured
#: again (same calls) up to this many times: other work on a shared machine comes and goes.
RETRIES = 2
#: More than this much of core 0 used by other processes is flagged.
MAX_OTHER_ON_RELAY_CORE = 10.0
#: Targets (issue 5), % of one core per call, calls per core, MB, ms.
TARGET_CPU_PER_CALL = {"relay-webrtc": 4.5, "relay-off": 2.5}
TARGET_CALLS = {"relay-webrtc": 22, "relay-off": 40}
TARGET_RATIO = 2.0
TARGET_RSS_PER_CALL_MB = 3.0
TARGET_SETUP_P50_MS, TARGET_SETUP_P99_MS = 150.0, 400.0
#: Leak check: growth between the 50th call and the last that counts as "none".
LEAK_RSS_MB_PER_100 = 0.5
LEAK_TOLERANCE = {"threads": 1, "fds": 2, "tasks": 2}

SETUP_LOG = re.compile(r"call (rtc_\w+) set up in (\d+) ms")


# -- results ---------------------------------------------------------------------------


@dataclass
class Latency:
    n: int = 0
    unmatched: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None


@dataclass
class Point:
    variant: str
    n: int
    upstream: str
    window_s: float = 0.0
    relay_cpu_pct: float | None = None
    relay_main_cpu_pct: float | None = None
    cpu_per_call_pct: float | None = None
    up_delivered: float | None = None  # received by the upstream / nominal
    down_delivered: float | None = None  # received by the callers / nominal
    down_min_call: float | None = None  # the worst caller's downlink / nominal
    callers_pace: float | None = None  # sent by the callers / nominal
    upstream_pace: float | None = None  # sent by the upstream / nominal
    lat_up: Latency = field(default_factory=Latency)
    lat_down: Latency = field(default_factory=Latency)
    rss_mb: float | None = None
    threads: int | None = None
    fds: int | None = None
    tasks: int | None = None
    relay_lag: dict[str, Any] = field(default_factory=dict)
    load_lag: dict[str, Any] = field(default_factory=dict)
    upstream_lag: dict[str, Any] = field(default_factory=dict)
    pump_late_ms: float | None = None
    load_cpu_pct: float | None = None
    upstream_cpu_pct: float | None = None
    core0_busy_pct: float | None = None
    core1_busy_pct: float | None = None
    core0_other_pct: float | None = None
    loadavg: tuple[float, float, float] | None = None
    #: Calls that ended under the callers (the relay or its upstream closed them), and
    #: the relay's own count of live calls at the end of the window.
    calls_ended: int = 0
    relay_calls: int | None = None
    status: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def counted(self) -> bool:
        """The load side kept up: the point says something about the relay."""
        return self.status in ("ok", "FAIL", "SAT")

    @property
    def unsaturated(self) -> bool:
        return self.status in ("ok", "FAIL")

    @property
    def passed(self) -> bool:
        return self.status == "ok"


@dataclass
class Fit:
    slope: float | None = None
    intercept: float | None = None
    points: int = 0


@dataclass
class Leak:
    calls: int = 0
    failed: int = 0
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    calls_left: int | None = None
    verdict: str = ""


@dataclass
class VariantResult:
    name: str
    idle: dict[str, Any] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)
    setup_ms: list[float] = field(default_factory=list)
    setup_relay_ms: list[float] = field(default_factory=list)
    setup_failed: list[str] = field(default_factory=list)
    setup_upstream: str = ""
    leak: Leak | None = None
    cpu_fit: Fit = field(default_factory=Fit)
    rss_fit: Fit = field(default_factory=Fit)
    capacity: int | None = None
    capacity_note: str = ""
    #: relay CPU % / N at the largest passing N (the fit's slope is the marginal cost)
    cpu_per_call_at_capacity: float | None = None
    profile: list[str] = field(default_factory=list)
    setup_profile: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    relay_log: str = ""
    #: Speed of the relay's core just before the variant ran (see ``calibrate``).
    core_speed: dict[str, float] = field(default_factory=dict)
    #: The git revision the relay process started from (the tree may change mid-run).
    tree: str = ""


@dataclass
class Options:
    variants: list[str]
    calls: list[int] | None
    window_s: float
    warmup_s: float
    leak_calls: int
    leak_parallel: int
    setup_calls: int
    setup_rounds: int
    upstream: str
    emulator_max: int
    probes: int
    max_calls: int
    profile: bool
    profile_s: float
    floor_s: float
    variant_budget_s: float
    nice: int
    quick: bool
    json: Path | None


# -- statistics ----------------------------------------------------------------------------


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    if len(xs) < 2 or len(set(xs)) < 2:
        return Fit(points=len(xs))
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return Fit(float(slope), float(intercept), len(xs))


def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def onset_latencies(
    source: Sequence[float], received: Sequence[float], window: tuple[float, float]
) -> tuple[list[float], int]:
    """Latencies (ms) of the onsets sent within ``window``, and how many of those
    were never received."""
    pairs = match_onsets(source, received, PROBE_PERIOD / RATE)
    start, end = window
    values = [lat * 1000 for s, lat in pairs if start <= s <= end]
    matched = {s for s, _ in pairs}
    lost = sum(1 for s in source if start <= s <= end and s not in matched)
    return values, lost


def latency_stats(values: list[float], lost: int, floor: float) -> Latency:
    out = Latency(n=len(values), unmatched=lost)
    if values:
        out.p50_ms, out.p99_ms, out.max_ms = pct(values, 50), pct(values, 99), max(values)
        out.added_p50_ms = (out.p50_ms or 0.0) - floor
        out.added_p99_ms = (out.p99_ms or 0.0) - floor
    return out


# -- the load side ---------------------------------------------------------------------------


class Harness:
    """What lives across variants: the upstream process, callers' media, HTTP."""

    def __init__(self, opts: Options, logdir: Path) -> None:
        self.opts = opts
        self.logdir = logdir
        self.key = "sk-bench-" + secrets.token_hex(12)
        self.up_port = free_port()
        self.base_up = f"http://127.0.0.1:{self.up_port}"
        self.upstream: Proc | None = None
        self.http: aiohttp.ClientSession | None = None
        self.pump = Pump()
        self.lag = LagProbe(0.01)
        speech, self.speech_source = load_speech()
        self.caller_loop = EncodedLoop(encode_opus(caller_signal(speech)))
        self.probe_loop = encoded_probe_loop()
        self.floor_up = 0.0
        self.floor_down = 0.0
        self.floor_note = ""
        self.mode = ""

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        argv = [sys.executable, "-m", "bench.load_upstream", "--port", str(self.up_port)]
        argv += ["--key", self.key, "--mode", "emulator"]
        self.upstream = Proc(
            "upstream", argv, clean_env(), self.logdir / "upstream.log", LOAD_CORE, self.opts.nice
        )
        await self.upstream.start()
        await self.upstream.wait_http(self.http, f"{self.base_up}/healthz", 60)
        self.mode = "emulator"
        self.pump.start()
        self.lag.start()

    async def stop(self) -> None:
        await self.pump.stop()
        await self.lag.stop()
        if self.upstream is not None:
            await self.upstream.stop()
        if self.http is not None:
            await self.http.close()

    async def get(self, url: str) -> Any:
        assert self.http is not None
        async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return await response.json()

    async def post(self, url: str, body: Any = None) -> Any:
        assert self.http is not None
        async with self.http.post(
            url, json=body or {}, timeout=aiohttp.ClientTimeout(total=30)
        ) as response:
            return await response.json()

    async def set_mode(self, mode: str) -> None:
        if mode != self.mode:
            await self.post(f"{self.base_up}/bench/mode", {"mode": mode})
            self.mode = mode

    async def upstream_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"{self.base_up}/bench/stats")
        return result

    async def measure_floor(self) -> None:
        """Probe caller straight to the upstream probe (no relay): the harness floor."""
        await self.post(f"{self.base_up}/bench/probe")
        caller = LoadCaller(self.probe_loop, None, probe=True)
        try:
            assert self.http is not None
            await caller.connect(self.http, f"{self.base_up}/v1/realtime/calls")
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            await asyncio.sleep(self.opts.floor_s)
            t1 = time.monotonic()
            await asyncio.sleep(0.6)
            probe = (await self.get(f"{self.base_up}/bench/probe"))["probes"][-1]
            assert caller.source is not None and caller.receiver is not None
            up = latency_stats(
                *onset_latencies(caller.source.onsets, probe["up_onsets"], (t0, t1)), 0.0
            )
            down = latency_stats(
                *onset_latencies(probe["down_onsets"], caller.receiver.onsets, (t0, t1)), 0.0
            )
            self.floor_up, self.floor_down = up.p50_ms or 0.0, down.p50_ms or 0.0
            self.floor_note = (
                f"direct floor (probe caller <-> upstream probe, no relay, "
                f"{self.opts.floor_s:g} s): up p50 {self.floor_up:.1f} ms ({up.n} onsets), "
                f"down p50 {self.floor_down:.1f} ms ({down.n} onsets)"
            )
            if up.n == 0 or down.n == 0:
                self.floor_note += " -- NO ONSETS: latency figures are not trustworthy"
        finally:
            await caller.hangup(self.http, self.base_up)  # type: ignore[arg-type]


class VariantRun:
    """One relay variant: its process, its calls, its measurements."""

    def __init__(self, harness: Harness, name: str) -> None:
        self.h = harness
        self.opts = harness.opts
        self.name = name
        self.result = VariantResult(name)
        self.relay: Proc | None = None
        self.port = 0
        self.calls: list[LoadCaller] = []
        self.calls_mode = ""
        #: The probe callers and the id of the upstream probe that answered each.
        self.probes: list[tuple[LoadCaller, str]] = []
        self.deadline = 0.0

    # -- relay process --

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start_relay(self, tag: str) -> None:
        self.port = free_port()
        env = clean_env()
        upstream_url = f"{self.h.base_up}/v1"
        if self.name.startswith("relay-"):
            env.update(
                OPENAI_API_KEY=self.h.key,
                OPENAI_BASE_URL=upstream_url,
                RELAY_ICE_ADDRESSES="127.0.0.1",
                RELAY_OPEN="1",
                RELAY_HOST="127.0.0.1",
                RELAY_PORT=str(self.port),
                RELAY_NOISE_SUPPRESSION=self.name.removeprefix("relay-"),
                RELAY_WORKERS="1",
            )
            argv = [sys.executable, "-m", "bench.load_relayproc", "relay", "serve"]
        else:
            ns = self.name.removeprefix("stock-")
            argv = [sys.executable, "-m", "bench.load_relayproc", "stock"]
            argv += ["--port", str(self.port), "--upstream", upstream_url]
            argv += ["--api-key", self.h.key, "--noise-suppression", ns]
        if self.opts.profile:
            env["BENCH_LOAD_PROFILE"] = "1"
        log = self.h.logdir / f"{self.name}-{tag}.log"
        self.relay = Proc(self.name, argv, env, log, RELAY_CORE, self.opts.nice)
        self.result.relay_log = str(log)
        await self.relay.start()
        assert self.h.http is not None
        await self.relay.wait_http(self.h.http, f"{self.base}/healthz", 60)

    async def stop_relay(self) -> None:
        relay, self.relay = self.relay, None
        if relay is None:
            return
        code = await relay.stop()
        notes = dedupe(relay_notes(relay.output()))
        if code not in (0, None, -15):
            notes.append(f"(exited with code {code})")
        self.result.notes.extend(f"{relay.log.name}: {n}" for n in notes[:40])

    async def relay_calls(self) -> int | None:
        path = "/readyz" if self.name.startswith("relay-") else "/healthz"
        assert self.h.http is not None
        try:
            async with self.h.http.get(
                self.base + path, timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                return int((await response.json())["calls"])
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            return None

    async def relay_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.h.get(f"{self.base}/bench/stats")
        return result

    async def wait_relay_idle(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.relay_calls() == 0:
                return True
            await asyncio.sleep(0.2)
        return False

    # -- calls --

    async def connect(self, callers: list[LoadCaller]) -> list[str]:
        """Set these callers up at once; returns the errors (failed ones are closed)."""
        assert self.h.http is not None
        url = f"{self.base}/v1/realtime/calls"
        results = await asyncio.gather(
            *(c.connect(self.h.http, url) for c in callers), return_exceptions=True
        )
        errors = []
        for caller, outcome in zip(callers, results, strict=True):
            if isinstance(outcome, BaseException):
                errors.append(str(outcome) or repr(outcome))
                await caller.close()
        return errors

    async def wait_media(self, callers: list[LoadCaller], packets: int, timeout: float) -> int:
        """Until each caller has received ``packets`` downlink packets; returns how many
        have not."""
        deadline = time.monotonic() + timeout
        while True:
            missing = sum(1 for c in callers if not c.closed and c.counter.packets < packets)
            if missing == 0 or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.1)

    def split(self, n: int) -> tuple[int, int]:
        """(probe calls, bulk calls) of a point with ``n`` calls."""
        probes = min(self.opts.probes, n)
        return probes, n - probes

    async def grow_to(self, n: int) -> None:
        """Bring the number of live calls (probes included) to ``n``."""
        assert self.h.http is not None
        want_probes, bulk = self.split(n)
        while len(self.calls) > bulk:
            await self.calls.pop().hangup(self.h.http, self.base)
        while len(self.probes) > want_probes:
            await self.probes.pop()[0].hangup(self.h.http, self.base)
        while len(self.probes) < want_probes:
            await self.connect_probe()
        batch = 10
        while len(self.calls) < bulk:
            k = min(batch, bulk - len(self.calls))
            new = [LoadCaller(self.h.caller_loop, self.h.pump) for _ in range(k)]
            errors = await self.connect(new)
            if errors:
                raise CallFailed(f"{len(errors)} of {k} calls failed to set up: {errors[0]}")
            self.calls.extend(new)
            self.calls_mode = self.h.mode
            missing = await self.wait_media(new, 5, 15)
            if missing:
                raise CallFailed(f"{missing} of {k} new calls got no downlink audio in 15 s")

    async def drop_all(self) -> None:
        assert self.h.http is not None
        callers = self.calls + [c for c, _ in self.probes]
        self.calls, self.probes = [], []
        await asyncio.gather(
            *(c.hangup(self.h.http, self.base) for c in callers), return_exceptions=True
        )

    async def connect_probe(self) -> None:
        """One more probe call (set up alone, so the newest upstream probe is its)."""
        known = {probe_id for _, probe_id in self.probes}
        await self.h.post(f"{self.h.base_up}/bench/probe")
        probe = LoadCaller(self.h.probe_loop, None, probe=True)
        errors = await self.connect([probe])
        if errors:
            raise CallFailed(f"a probe call failed: {errors[0]}")
        live = (await self.h.get(f"{self.h.base_up}/bench/probe"))["probes"]
        new = [p["id"] for p in live if p["id"] not in known]
        if len(new) != 1:
            await probe.close()
            raise CallFailed(f"expected one new upstream probe, found {len(new)}")
        self.probes.append((probe, new[0]))
        if await self.wait_media([probe], 10, 15):
            raise CallFailed("a probe call got no downlink audio in 15 s")

    # -- one measured point --

    async def measure(self, n: int) -> Point:
        assert self.relay is not None and self.h.upstream is not None
        assert self.probes
        point = Point(self.name, n, self.h.mode if self.calls else "probe")
        callers = [*self.calls, *(c for c, _ in self.probes)]
        relay, upstream = self.relay, self.h.upstream

        await self.relay_stats()  # resets the relay's lag window
        self.h.lag.take()
        self.h.pump.take_lateness()
        u0 = await self.h.upstream_stats()
        c0 = core_times()
        r0, up0 = relay.sample(), upstream.sample()
        own0 = _own_cpu()
        sent0 = sum(c.sent for c in callers)
        recv0 = [c.counter.packets for c in callers]
        t0 = time.monotonic()
        await asyncio.sleep(self.opts.window_s)
        t1 = time.monotonic()
        recv1 = [c.counter.packets for c in callers]
        sent1 = sum(c.sent for c in callers)
        own1 = _own_cpu()
        r1, up1 = relay.sample(), upstream.sample()
        c1 = core_times()
        u1 = await self.h.upstream_stats()
        rs = await self.relay_stats()
        load_lag = self.h.lag.take()
        _, late_ticks, pump_late = self.h.pump.take_lateness()

        dt = t1 - t0
        point.window_s = dt
        nominal = 50.0 * n * dt
        if r0.cpu_s is not None and r1.cpu_s is not None:
            point.relay_cpu_pct = (r1.cpu_s - r0.cpu_s) / dt * 100
            point.cpu_per_call_pct = point.relay_cpu_pct / n
        if r0.main_cpu_s is not None and r1.main_cpu_s is not None:
            point.relay_main_cpu_pct = (r1.main_cpu_s - r0.main_cpu_s) / dt * 100
        if up0.cpu_s is not None and up1.cpu_s is not None:
            point.upstream_cpu_pct = (up1.cpu_s - up0.cpu_s) / dt * 100
        point.load_cpu_pct = (own1 - own0) / dt * 100
        point.rss_mb, point.threads, point.fds = r1.rss_mb, r1.threads, r1.fds
        point.tasks = rs.get("tasks")
        point.relay_lag = rs.get("lag", {})
        point.load_lag = lag_summary(load_lag)
        point.upstream_lag = u1.get("lag", {})
        point.pump_late_ms = max(pump_late, u1.get("pump", {}).get("max_late_ms", 0) / 1000) * 1000

        def up_in(u: dict[str, Any]) -> int:
            probe = u.get("probe") or {}
            return int(
                u["emulator"]["frames_in"] + u["light"]["frames_in"] + probe.get("frames_in", 0)
            )

        def up_out(u: dict[str, Any]) -> int:
            probe = u.get("probe") or {}
            return int(
                u["emulator"]["frames_out"] + u["light"]["frames_out"] + probe.get("frames_out", 0)
            )

        udt = float(u1["monotonic"] - u0["monotonic"])
        up_nominal = 50.0 * n * udt
        point.up_delivered = (up_in(u1) - up_in(u0)) / up_nominal
        point.upstream_pace = (up_out(u1) - up_out(u0)) / up_nominal
        point.down_delivered = (sum(recv1) - sum(recv0)) / nominal
        per_call = [(b - a) / (50.0 * dt) for a, b in zip(recv0, recv1, strict=True)]
        point.down_min_call = min(per_call)
        point.callers_pace = (sent1 - sent0) / nominal
        point.core0_busy_pct = core_busy_pct(c0, c1, RELAY_CORE)
        point.core1_busy_pct = core_busy_pct(c0, c1, LOAD_CORE)
        if point.core0_busy_pct is not None and point.relay_cpu_pct is not None:
            point.core0_other_pct = max(0.0, point.core0_busy_pct - point.relay_cpu_pct)
        point.loadavg = loadavg()

        await asyncio.sleep(0.8)  # let the last onsets of the window arrive
        live = {p["id"]: p for p in (await self.h.get(f"{self.h.base_up}/bench/probe"))["probes"]}
        up_values: list[float] = []
        down_values: list[float] = []
        up_lost = down_lost = 0
        for caller, probe_id in self.probes:
            probe = live.get(probe_id)
            assert caller.source is not None and caller.receiver is not None
            if probe is None:
                point.problems.append(f"upstream probe {probe_id} is gone")
                continue
            values, lost = onset_latencies(caller.source.onsets, probe["up_onsets"], (t0, t1))
            up_values += values
            up_lost += lost
            values, lost = onset_latencies(probe["down_onsets"], caller.receiver.onsets, (t0, t1))
            down_values += values
            down_lost += lost
        point.lat_up = latency_stats(up_values, up_lost, self.h.floor_up)
        point.lat_down = latency_stats(down_values, down_lost, self.h.floor_down)
        first = next((p for p in self.result.points if p.n == 1 and p.counted), None)
        baseline = (first.lat_up.p50_ms, first.lat_down.p50_ms) if first else (None, None)
        point.calls_ended = sum(1 for c in callers if c.ended)
        point.relay_calls = await self.relay_calls()
        classify(point, baseline)
        return point

    # -- the ramp --

    def next_n(self, points: list[Point]) -> int | None:
        counted = [p for p in points if p.unsaturated]
        last = points[-1].n if points else 0
        if not points:
            return 1
        if last < 4:
            return 4
        fit = linear_fit([p.n for p in counted], [p.relay_cpu_pct or 0.0 for p in counted])
        per_call = fit.slope if fit.slope and fit.slope > 0 else (points[-1].cpu_per_call_pct or 5)
        fixed = fit.intercept if fit.slope and fit.slope > 0 else 0.0
        at_70 = (70.0 - (fixed or 0.0)) / per_call
        step = 2 if last < 12 else 4
        if last + step >= at_70:
            return last + step
        return int(min(max(last + step, 2 * round(at_70 / 2)), 2 * last))

    async def ramp(self) -> None:
        opts = self.opts
        result = self.result
        explicit = list(opts.calls) if opts.calls else None
        edge: Point | None = None  # the first saturated point (or failing after a pass)
        refined = False
        while time.monotonic() < self.deadline:
            if explicit is not None:
                if not explicit:
                    break
                n = explicit.pop(0)
            elif edge is not None:
                below = [p for p in result.points if p.n < edge.n]
                good = [p.n for p in below if p.passed] or [p.n for p in below if p.unsaturated]
                best = max(good, default=0)
                if refined or edge.n - best < 3 or best == 0:
                    break
                n = (best + edge.n) // 2
                refined = True
                # Start again from no calls: a saturated relay's queues (the stock
                # relay's are unbounded) would otherwise still be draining.
                await self.drop_all()
                await self.wait_relay_idle()
            else:
                next_n = self.next_n(result.points)
                if next_n is None:
                    break
                n = next_n
            if n > opts.max_calls:
                result.notes.append(f"ramp stopped at --max-calls {opts.max_calls}")
                break
            mode = self.mode_for(n)
            await self.use_mode(mode)
            started = time.monotonic()
            print(f"  {self.name}: N={n} ({mode} upstream) ...", file=sys.stderr, flush=True)
            try:
                await self.grow_to(n)
            except CallFailed as exc:
                # e.g. the relay's own admission control (HTTP 503 while its loop lags)
                point = Point(self.name, n, mode, status="SAT", problems=[f"set-up: {exc}"])
                result.points.append(point)
                print(f"    SAT  {exc}", file=sys.stderr, flush=True)
                if edge is None:
                    edge = point
                    if explicit is not None:
                        break
                    continue
                break
            await asyncio.sleep(opts.warmup_s)
            point = await self.measure(n)
            for attempt in range(RETRIES):
                if not disturbed(point, result.points, attempt) or time.monotonic() > self.deadline:
                    break
                result.notes.append(
                    f"N={n} measured again (attempt {attempt + 2}): {point.status} "
                    f"({'; '.join(point.problems)})"
                )
                print(f"    {point.status}, measuring again", file=sys.stderr, flush=True)
                await asyncio.sleep(2.0)
                point = await self.measure(n)
            result.points.append(point)
            print(
                f"    {point.status:<4} relay {_f(point.relay_cpu_pct, 0)} % CPU, up "
                f"{_r(point.up_delivered)} down {_r(point.down_delivered)}, +p99 up "
                f"{_f(point.lat_up.added_p99_ms, 0)} down {_f(point.lat_down.added_p99_ms, 0)}"
                f" ms; load {_f(point.load_cpu_pct, 0)}+{_f(point.upstream_cpu_pct, 0)} %"
                f" ({time.monotonic() - started:.0f} s) {'; '.join(point.problems)}",
                file=sys.stderr,
                flush=True,
            )
            if point.status == "LOAD":
                result.notes.append(
                    f"ramp stopped at N={n}: the load side could not keep up "
                    f"({'; '.join(point.problems)})"
                )
                break
            earlier_pass = any(p.passed for p in result.points[:-1])
            if edge is None and (
                point.status == "SAT" or (point.status == "FAIL" and earlier_pass)
            ):
                edge = point
                if explicit is not None:
                    result.notes.append(f"ramp stopped at the first failing point, N={n}")
                    break
            if (
                opts.upstream == "auto"
                and self.split(n)[1] == opts.emulator_max
                and point.counted
                and explicit is None
                and time.monotonic() < self.deadline
            ):
                # The same N on the light upstream: shows what the upstream changes.
                await self.use_mode("light")
                print(f"  {self.name}: N={n} (light upstream, overlap) ...", file=sys.stderr)
                await self.grow_to(n)
                await asyncio.sleep(opts.warmup_s)
                result.points.append(await self.measure(n))
        else:
            result.notes.append("ramp stopped by the per-variant time budget")

    async def use_mode(self, mode: str) -> None:
        if mode == "probe":
            return
        """New calls go to ``mode``'s upstream; calls stay with the upstream that
        answered them, so calls of the other kind are set up again."""
        if self.calls and self.calls_mode != mode:
            await self.drop_bulk()
        await self.h.set_mode(mode)

    def mode_for(self, n: int) -> str:
        """Where the bulk calls of a point with ``n`` calls go (probes always go to the
        upstream's probe stand-ins)."""
        if self.opts.upstream != "auto":
            return self.opts.upstream
        return "emulator" if self.split(n)[1] <= self.opts.emulator_max else "light"

    async def drop_bulk(self) -> None:
        assert self.h.http is not None
        callers, self.calls = self.calls, []
        await asyncio.gather(
            *(c.hangup(self.h.http, self.base) for c in callers), return_exceptions=True
        )
        await asyncio.sleep(0.5)

    # -- profile --

    async def profile_window(self) -> None:
        """cProfile of the relay's loop thread for a few seconds, at the current N."""
        n = len(self.calls) + len(self.probes)
        path = self.h.logdir / f"{self.name}-n{n}.pstats"
        await self.h.post(f"{self.base}/bench/profile", {"action": "start"})
        await asyncio.sleep(self.opts.profile_s)
        await self.h.post(f"{self.base}/bench/profile", {"action": "stop", "path": str(path)})
        self.result.profile = profile_top(
            path, self.opts.profile_s, f"{n} calls in steady state, {self.opts.profile_s:g} s"
        )

    # -- setup time --

    async def setup_bursts(self) -> None:
        opts = self.opts
        await self.h.set_mode(opts_setup_mode(opts))
        self.result.setup_upstream = self.h.mode
        assert self.relay is not None
        for round_ in range(opts.setup_rounds + (1 if opts.profile else 0)):
            profiled = opts.profile and round_ == opts.setup_rounds
            if not await self.wait_relay_idle():
                self.result.notes.append("setup: the relay still had calls before a burst")
            # The relay refuses calls while its loop lagged > 100 ms in the last 2 s
            # (admission control): let the previous burst's close storm age out.
            await asyncio.sleep(3.0)
            offset = self.relay.output_size()
            callers = [LoadCaller(self.h.caller_loop, self.h.pump) for _ in range(opts.setup_calls)]
            if profiled:  # an extra burst, profiled, not counted
                path = self.h.logdir / f"{self.name}-setup.pstats"
                await self.h.post(f"{self.base}/bench/profile", {"action": "start"})
                started = time.monotonic()
                await self.connect(callers)
                seconds = time.monotonic() - started
                await self.h.post(
                    f"{self.base}/bench/profile", {"action": "stop", "path": str(path)}
                )
                self.result.setup_profile = profile_top(
                    path, seconds, f"{opts.setup_calls} calls set up at once, {seconds:.2f} s"
                )
                assert self.h.http is not None
                await asyncio.gather(
                    *(c.hangup(self.h.http, self.base) for c in callers), return_exceptions=True
                )
                continue
            errors = await self.connect(callers)
            self.result.setup_failed.extend(errors)
            self.result.setup_ms += [c.setup_ms for c in callers if c.setup_ms is not None]
            await asyncio.sleep(0.5)
            assert self.h.http is not None
            await asyncio.gather(
                *(c.hangup(self.h.http, self.base) for c in callers), return_exceptions=True
            )
            text = self.relay.output()[offset:]
            self.result.setup_relay_ms += [float(ms) for _, ms in SETUP_LOG.findall(text)]

    # -- leak check --

    async def leak_check(self) -> None:
        opts = self.opts
        leak = Leak()
        self.result.leak = leak
        await self.h.set_mode("emulator")
        await self.start_relay("leak")
        assert self.relay is not None and self.h.http is not None
        started = time.monotonic()
        budget = started + max(120.0, opts.leak_calls * 0.6)
        every = 50 if opts.leak_calls >= 100 else max(10, opts.leak_calls // 5)
        next_sample = every
        try:
            while leak.calls < opts.leak_calls and time.monotonic() < budget:
                k = min(opts.leak_parallel, opts.leak_calls - leak.calls)
                callers = [LoadCaller(self.h.caller_loop, self.h.pump) for _ in range(k)]
                errors = await self.connect(callers)
                leak.failed += len(errors)
                live = [c for c in callers if not c.closed]
                await self.wait_media(live, 3, 5)
                await asyncio.gather(
                    *(c.hangup(self.h.http, self.base) for c in live), return_exceptions=True
                )
                leak.calls += k
                if leak.calls >= next_sample:
                    next_sample += every
                    leak.samples.append(await self.leak_sample(leak.calls))
            if not leak.samples or leak.samples[-1]["calls"] != leak.calls:
                leak.samples.append(await self.leak_sample(leak.calls))
        finally:
            leak.seconds = time.monotonic() - started
            leak.calls_left = await self.relay_calls()
            await self.stop_relay()
        leak.verdict = leak_verdict(leak)

    async def leak_sample(self, calls: int) -> dict[str, Any]:
        assert self.relay is not None
        idle = await self.wait_relay_idle(10)
        await asyncio.sleep(0.3)
        s = self.relay.sample()
        stats = await self.relay_stats()
        return {
            "calls": calls,
            "idle": idle,
            "rss_mb": s.rss_mb,
            "threads": s.threads,
            "fds": s.fds,
            "tasks": stats.get("tasks"),
        }

    # -- the whole variant --

    async def run(self) -> VariantResult:
        opts = self.opts
        result = self.result
        self.deadline = time.monotonic() + opts.variant_budget_s
        result.core_speed = calibrate(RELAY_CORE)
        result.tree = tree_state()
        try:
            await self.h.set_mode(self.mode_for(1))
            await self.start_relay("ramp")
            assert self.relay is not None
            await asyncio.sleep(1.0)
            s = self.relay.sample()
            stats = await self.relay_stats()
            result.idle = {
                "rss_mb": s.rss_mb,
                "threads": s.threads,
                "fds": s.fds,
                "tasks": stats.get("tasks"),
            }
            await self.ramp()
            passing = [p for p in result.points if p.passed]
            if opts.profile and passing:
                best = max(passing, key=lambda p: p.n)
                await self.use_mode(best.upstream)
                await self.grow_to(best.n)
                await asyncio.sleep(2.0)
                await self.profile_window()
            await self.drop_all()
            await self.setup_bursts()
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await self.drop_all()
            await self.stop_relay()
        if opts.leak_calls > 0 and self.name.startswith("relay-"):
            try:
                await self.leak_check()
            except Exception as exc:
                result.notes.append(f"leak check failed: {type(exc).__name__}: {exc}")
                await self.stop_relay()
        summarise(result)
        return result


_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


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


def calibrate(core: int) -> dict[str, float]:
    """How fast one core is right now, in thread CPU time (so time lost to other
    processes does not count, but a slower core does: a busy hyperthread sibling, the
    hypervisor's other guests): 200 libopus encodes with aiortc's settings (48 kHz
    stereo, 96 kb/s, voip) and a small pure-Python loop. Runs of this benchmark on
    the same machine are comparable when these agree."""
    import av
    from av import AudioFrame

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = 96000
        codec.format = "s16"
        codec.layout = "stereo"
        codec.sample_rate = RATE
        codec.options = {"application": "voip"}
        rng = np.random.default_rng(0)
        pcm = (rng.normal(0, 3000, 960 * 2)).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate = RATE
        for _ in range(20):
            codec.encode(frame)
        started = time.thread_time()
        for _ in range(200):
            codec.encode(frame)
        opus_us = (time.thread_time() - started) / 200 * 1e6
        table = {i: str(i) for i in range(64)}
        started = time.thread_time()
        total = 0
        for i in range(200_000):
            total += len(table[i & 63])
        python_ns = (time.thread_time() - started) / 200_000 * 1e9
    finally:
        os.sched_setaffinity(0, previous)
    return {"opus_encode_us": opus_us, "python_loop_ns": python_ns}


def opts_setup_mode(opts: Options) -> str:
    return "light" if opts.upstream == "light" else "emulator"


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def classify(point: Point, baseline: tuple[float | None, float | None]) -> None:
    """ok: meets the capacity criteria; FAIL: misses them without being saturated (the
    stock relay's jitter buffer alone adds > 50 ms); SAT: saturated (frames lost, tone
    onsets lost, or p99 latency 50 ms above this variant's N=1 p50);
    LOAD: the load side lagged, so the point says nothing about the relay."""
    load: list[str] = []
    for label, lag in (("callers' loop", point.load_lag), ("upstream loop", point.upstream_lag)):
        p99 = lag.get("p99_ms")
        if p99 is not None and p99 > MAX_LOAD_LAG_P99_MS:
            load.append(f"{label} lag p99 {p99:.0f} ms")
    if point.callers_pace is not None and point.callers_pace < MIN_SOURCE_PACE:
        load.append(f"callers sent {point.callers_pace:.3f} of nominal")
    if point.upstream_pace is not None and point.upstream_pace < MIN_SOURCE_PACE:
        load.append(f"upstream sent {point.upstream_pace:.3f} of nominal")
    saturated: list[str] = []
    failed: list[str] = []
    if point.calls_ended:
        # The relay dropped calls (e.g. ICE consent expired while its loop was saturated):
        # the sources of those calls stopped, which is not the load side lagging.
        saturated.append(f"{point.calls_ended} of {point.n} calls ended by the relay side")
        load = [x for x in load if "of nominal" not in x]
    if point.up_delivered is None or point.up_delivered < MIN_DELIVERED:
        saturated.append(f"up {_r(point.up_delivered)}")
    if point.down_delivered is None or point.down_delivered < MIN_DELIVERED:
        saturated.append(f"down {_r(point.down_delivered)}")
    for label, lat, base in (
        ("up", point.lat_up, baseline[0]),
        ("down", point.lat_down, baseline[1]),
    ):
        if lat.added_p99_ms is None or lat.p99_ms is None:
            saturated.append(f"no {label} latency onsets")
            continue
        if lat.unmatched > 1:
            saturated.append(f"{lat.unmatched} {label} onsets lost")
        if base is not None and lat.p99_ms > base + MAX_ADDED_P99_MS:
            saturated.append(f"{label} p99 {lat.p99_ms:.0f} ms (N=1 p50: {base:.0f})")
        if lat.added_p99_ms > MAX_ADDED_P99_MS:
            failed.append(f"{label} +p99 {lat.added_p99_ms:.0f} ms")
    if load:
        point.status = "LOAD"
        point.problems = load + saturated + failed
    elif saturated:
        point.status = "SAT"
        point.problems = saturated + failed
    elif failed:
        point.status = "FAIL"
        point.problems = failed
    else:
        point.status = "ok"
    if point.relay_cpu_pct is not None and point.relay_cpu_pct >= 97.0:
        point.problems.append(f"relay CPU {point.relay_cpu_pct:.0f} %")
    if point.core0_other_pct is not None and point.core0_other_pct > MAX_OTHER_ON_RELAY_CORE:
        point.problems.append(f"core 0 shared: {point.core0_other_pct:.0f} % used by others")


def disturbed(point: Point, earlier: list[Point], attempt: int) -> bool:
    """Measure again: the load side lagged (up to RETRIES times), or this is the
    variant's first saturated (or newly failing) point, which is confirmed once, since
    a p99 over a few dozen onsets is close to the window's maximum and one stall of the
    machine can make it."""
    if point.status == "LOAD":
        return True
    first_edge = not any(p.status == "SAT" for p in earlier)
    newly_failed = point.status == "FAIL" and any(p.passed for p in earlier)
    return attempt == 0 and first_edge and (point.status == "SAT" or newly_failed)


def summarise(result: VariantResult) -> None:
    points = result.points
    unsat = [p for p in points if p.unsaturated]
    result.cpu_fit = linear_fit([p.n for p in unsat], [p.relay_cpu_pct or 0 for p in unsat])
    with_rss = [p for p in unsat if p.rss_mb is not None]
    result.rss_fit = linear_fit([p.n for p in with_rss], [p.rss_mb or 0 for p in with_rss])
    sat = [p.n for p in points if p.status == "SAT"]
    limit = min(sat) if sat else math.inf
    passing = [p.n for p in points if p.passed and p.n < limit]
    load = [p.n for p in points if p.status == "LOAD"]
    above = [p.n for p in points if p.counted and not p.passed and p.n > max(passing, default=0)]
    if passing:
        result.capacity = max(passing)
        at = [p for p in points if p.n == result.capacity and p.passed]
        result.cpu_per_call_at_capacity = at[-1].cpu_per_call_pct
        if above:
            result.capacity_note = f"(N={min(above)} failed)"
        elif load:
            result.capacity_note = f">= (load side limit at N={min(load)})"
        else:
            result.capacity_note = ">= (ramp ended before saturation)"
    else:
        first = next((p for p in points if p.counted), None)
        if first is not None:
            result.capacity = 0
            result.capacity_note = f"(N={first.n}: {'; '.join(first.problems)[:60]})"
    if unsat:
        top = max(p.n for p in unsat)
        result.notes.append(
            f"unsaturated up to N={top}"
            + (f"; saturated at N={min(sat)}" if sat else "")
            + (f"; load side limit at N={min(load)}" if load else "")
        )


def leak_verdict(leak: Leak) -> str:
    """Threads, fds and tasks must not grow from the first sample to the last; RSS is
    judged on its slope over the second half of the run (the first calls warm the
    allocator up: a step, where a leak is a slope)."""
    if len(leak.samples) < 2 or leak.calls < 200:
        return "not judged (fewer than 200 calls: RSS still warming up)"
    first, last = leak.samples[0], leak.samples[-1]
    problems = []
    late = [s for s in leak.samples if s["calls"] >= leak.calls / 2 and s["rss_mb"] is not None]
    fit = linear_fit([s["calls"] for s in late], [s["rss_mb"] for s in late])
    if fit.slope is not None and fit.slope * 100 > LEAK_RSS_MB_PER_100:
        problems.append(f"RSS +{fit.slope * 100:.2f} MB per 100 calls over the second half")
    for key, tolerance in LEAK_TOLERANCE.items():
        a, b = first.get(key), last.get(key)
        if a is not None and b is not None and b - a > tolerance:
            problems.append(f"{key} {a} -> {b}")
    if leak.calls_left:
        problems.append(f"{leak.calls_left} calls still live at the end")
    if leak.failed:
        problems.append(f"{leak.failed} calls failed")
    slope = "-" if fit.slope is None else f"{fit.slope * 100:+.2f}"
    summary = f"RSS slope over the second half {slope} MB per 100 calls"
    return ("FAIL: " + "; ".join(problems) if problems else "PASS") + f" ({summary})"


def profile_top(path: Path, seconds: float, what: str, top: int = 15) -> list[str]:
    try:
        stats = pstats.Stats(str(path))
    except (OSError, TypeError, ValueError) as exc:
        return [f"(no profile: {exc})"]
    entries = []
    total = 0.0
    for func, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        entries.append((tt, ct, nc, func))
    entries.sort(reverse=True)
    out = [
        f"cProfile of the relay's event-loop thread ({what}; thread CPU-time clock, so "
        f"idle epoll waits and time lost to other threads do not count; it measured "
        f"{1000 * total / seconds:.0f} ms of CPU per second; the profiler adds overhead: "
        f"use the ranking) {path}",
        f"{'own %':>6} {'own ms/s':>9} {'calls/s':>9} {'us/call':>8} {'cum ms/s':>9}  function",
    ]
    for tt, ct, nc, (file, line, name) in entries[:top]:
        out.append(
            f"{100 * tt / total if total else 0:6.1f} {1000 * tt / seconds:9.1f} "
            f"{nc / seconds:9.0f} {1e6 * tt / nc if nc else 0:8.1f} {1000 * ct / seconds:9.1f}"
            f"  {name} ({_short(file)}:{line})"
        )
    areas: dict[str, float] = {}
    for tt, _ct, _nc, (file, _line, name) in entries:
        area = _area(file, name)
        areas[area] = areas.get(area, 0.0) + tt
    out.append(
        "  own time by area: "
        + ", ".join(
            f"{area} {100 * t / total:.0f} %"
            for area, t in sorted(areas.items(), key=lambda kv: -kv[1])
            if total and t / total >= 0.01
        )
    )
    return out


_AREAS = (
    ("livekit", "noise suppression (livekit APM via FFI)"),
    ("pylibsrtp", "SRTP"),
    ("aiortc/rtcrtpsender", "aiortc RTP send"),
    ("aiortc/rtcrtpreceiver", "aiortc RTP receive"),
    ("aiortc/rtp.py", "aiortc RTP packets"),
    ("aiortc/rtcdtlstransport", "aiortc DTLS/SRTP transport"),
    ("aiortc/rtcsctptransport", "aiortc SCTP (data channels)"),
    ("aiortc/rtcdatachannel", "aiortc SCTP (data channels)"),
    ("aiortc/sdp", "aiortc SDP"),
    ("aiortc/codecs", "aiortc codecs"),
    ("aiortc/contrib", "aiortc MediaRelay"),
    ("aiortc/", "aiortc, other"),
    ("aioice", "aioice (ICE, UDP)"),
    ("pyee", "pyee events"),
    ("OpenSSL", "pyOpenSSL (DTLS)"),
    ("cryptography", "cryptography"),
    ("aiohttp", "aiohttp"),
    ("relay/", "relay code"),
    ("bench/", "bench code"),
    ("numpy", "numpy"),
    ("asyncio", "asyncio"),
    ("logging", "logging"),
)


def _short(file: str) -> str:
    return file.split("site-packages/")[-1].replace(str(Path.cwd()) + "/", "")


def _area(file: str, name: str) -> str:
    for key, label in _AREAS:
        if key in file:
            return label
    if file == "~":
        if (
            name.startswith(("<av.", "<method 'resample'", "<method 'to_ndarray'"))
            or " av." in name
        ):
            return "PyAV"
        if "socket" in name or "epoll" in name:
            return "sockets/epoll"
        if "srtp" in name:
            return "SRTP"
        if "_openssl" in name or "SSL" in name:
            return "pyOpenSSL (DTLS)"
        if "numpy" in name or "ndarray" in name:
            return "numpy"
        return "builtins, other C"
    return "Python stdlib, other"


# -- report ----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1, width: int = 0) -> str:
    text = "-" if value is None else f"{value:.{digits}f}"
    return text.rjust(width) if width else text


def _lag(lag: dict[str, Any]) -> str:
    return _f(lag.get("p99_ms"), 1) + "/" + _f(lag.get("max_ms"), 0)


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(results: list[VariantResult], harness: Harness, opts: Options) -> str:
    out: list[str] = []
    out.append(
        f"1. Per variant and N ({opts.window_s:g} s window after {opts.warmup_s:g} s warm-up; "
        f"relay on core {RELAY_CORE}, callers and upstream on core {LOAD_CORE}, all at nice "
        f"{opts.nice})"
    )
    out.append(harness.floor_note)
    head = (
        f"{'variant':<13}{'N':>3} {'upstr':<5}|{'CPU%':>6}{'main':>6}{'/call':>6}|"
        f"{'up':>6}{'down':>6}{'worst':>6}|{'lat up p50/p99':>15}{'lat dn p50/p99':>15}"
        f"{'+p99 up/dn':>11}|{'RSS':>6}{'thr':>4}{'fds':>4}{'tasks':>6}{'lag p99/max':>12}| status"
    )
    out.append(head)
    out.append("-" * (len(head) + 20))
    for r in results:
        if r.error and not r.points:
            out.append(f"{r.name:<13} FAILED: {r.error}")
            continue
        if r.core_speed:
            out.append(
                f"{r.name:<13}    {r.tree}; core 0 speed before this variant: libopus "
                f"encode {r.core_speed['opus_encode_us']:.0f} us/frame, Python loop "
                f"{r.core_speed['python_loop_ns']:.0f} ns/iteration"
            )
        for p in r.points:
            lag = p.relay_lag
            out.append(
                f"{p.variant:<13}{p.n:>3} {p.upstream[:5]:<5}|{_f(p.relay_cpu_pct, 1, 6)}"
                f"{_f(p.relay_main_cpu_pct, 1, 6)}{_f(p.cpu_per_call_pct, 2, 6)}|"
                f"{_r(p.up_delivered):>6}{_r(p.down_delivered):>6}{_r(p.down_min_call):>6}|"
                f"{_f(p.lat_up.p50_ms, 1) + '/' + _f(p.lat_up.p99_ms, 1):>15}"
                f"{_f(p.lat_down.p50_ms, 1) + '/' + _f(p.lat_down.p99_ms, 1):>15}"
                f"{_f(p.lat_up.added_p99_ms, 0) + '/' + _f(p.lat_down.added_p99_ms, 0):>11}|"
                f"{_f(p.rss_mb, 1, 6)}{p.threads or 0:>4}{p.fds or 0:>4}{p.tasks or 0:>6}"
                f"{_f(lag.get('p99_ms'), 0) + '/' + _f(lag.get('max_ms'), 0):>12}| "
                f"{p.status} {'; '.join(p.problems)}"
            )
        if r.error:
            out.append(f"{r.name:<13} stopped: {r.error}")
    out.append(
        "CPU% = relay process (all threads) in % of one core; main = its event-loop thread; "
        "/call = CPU%/N. up = frames the upstream received / nominal (50 per call-second); "
        "down = frames the callers received / nominal; worst = the worst caller's down. "
        "Latency = tone onset on the probe calls, pooled (ms); +p99 = p99 minus the direct "
        "floor's p50 (the 'added latency'). lag = relay event-loop lag (ms). upstr = where "
        "the bulk calls go: emula(tor), light stand-in, or probe (only probe calls)."
    )
    out.append("")
    out.append("1b. Load side and machine during each window")
    head = (
        f"{'variant':<13}{'N':>3} |{'callers CPU%':>13}{'upstream CPU%':>14}{'core1 busy%':>12}|"
        f"{'lag p99/max callers':>20}{'upstream':>12}{'pace late':>10}|{'core0 busy%':>12}"
        f"{'other':>7}| load average"
    )
    out.append(head)
    out.append("-" * len(head))
    for r in results:
        for p in r.points:
            out.append(
                f"{p.variant:<13}{p.n:>3} |{_f(p.load_cpu_pct, 1, 13)}"
                f"{_f(p.upstream_cpu_pct, 1, 14)}{_f(p.core1_busy_pct, 0, 12)}|"
                f"{_lag(p.load_lag):>20}{_lag(p.upstream_lag):>12}"
                f"{_f(p.pump_late_ms, 0, 10)}|{_f(p.core0_busy_pct, 0, 12)}"
                f"{_f(p.core0_other_pct, 0, 7)}| "
                + (" ".join(f"{x:.2f}" for x in p.loadavg) if p.loadavg else "-")
            )
    out.append(
        "callers = this process (the callers, incl. the probe); upstream = emulator or "
        "stand-in process; pace late = worst lateness (ms) of the lean senders' 20 ms "
        "ticks; other = core-0 busy time not used by the relay (other processes on the "
        "relay's core)."
    )
    pairs = []
    for r in results:
        for e in (p for p in r.points if p.upstream == "emulator"):
            light = [p for p in r.points if p.upstream == "light" and p.n == e.n]
            if light and e.upstream_cpu_pct is not None and light[0].upstream_cpu_pct is not None:
                pairs.append((r.name, e, light[0]))
    if pairs:
        out.append(
            "Emulator vs light stand-in for the same calls (bulk calls on the emulator / on "
            "the stand-in; the probe calls are on probe stand-ins in both):"
        )
        extra = []
        for name, e, light in pairs:
            bulk = max(1, e.n - min(opts.probes, e.n))
            diff = ((e.upstream_cpu_pct or 0) - (light.upstream_cpu_pct or 0)) / bulk
            extra.append(diff)
            out.append(
                f"  {name} N={e.n}: upstream process {_f(e.upstream_cpu_pct)} % vs "
                f"{_f(light.upstream_cpu_pct)} % ({diff:+.1f} % of a core per emulator call); "
                f"relay {_f(e.relay_cpu_pct)} % vs {_f(light.relay_cpu_pct)} %"
            )
        out.append(
            f"  The emulator costs ~{np.median(extra):.0f} % of a core per call more than the "
            "stand-in (it decodes every uplink frame, runs its VAD and encodes the agent's "
            "audio): with the callers on the same core it would be the load side's limit long "
            "before the relay's, so points with more than "
            f"{opts.emulator_max} bulk calls use the light stand-in (same HTTP API, media "
            "and event rate, no decode/encode)."
        )
    out.append("")

    out.append("2. Capacity per core (>= 99.5 % frames both ways, p99 added latency <= 50 ms)")
    head = (
        f"{'variant':<13}|{'calls/core':>11} {'':<36}|{'CPU/call %':>11}{'CPU-s/call-s':>13}"
        f"{'fixed %':>8}{'fit pts':>8}{'at cap':>7}|{'RSS idle':>9}{'MB/call':>8}"
        f"{'threads idle->N':>17}"
    )
    out.append(head)
    out.append("-" * len(head))
    for r in results:
        fit = r.cpu_fit
        last = r.points[-1] if r.points else None
        out.append(
            f"{r.name:<13}|{(str(r.capacity) if r.capacity is not None else '-'):>11} "
            f"{r.capacity_note[:36]:<36}|{_f(fit.slope, 2, 11)}"
            f"{_f(fit.slope / 100 if fit.slope else None, 4, 13)}{_f(fit.intercept, 1, 8)}"
            f"{fit.points:>8}{_f(r.cpu_per_call_at_capacity, 2, 7)}|"
            f"{_f(r.idle.get('rss_mb'), 1, 9)}{_f(r.rss_fit.slope, 2, 8)}"
            f"{str(r.idle.get('threads')) + '->' + str(last.threads if last else '-'):>17}"
        )
    out.append(
        "CPU/call = slope of a linear fit of relay CPU % over the unsaturated points (the "
        "marginal cost of a call; CPU-s/call-s the same as a fraction); fixed = its "
        "intercept; at cap = relay CPU % / N at the capacity point; MB/call = slope of RSS "
        "over the same points. Capacity 0: the criteria fail at N=1 (the stock relay's "
        "jitter buffer alone adds ~90 ms each way)."
    )
    out.append("")

    out.append(f"3. Set-up time, {opts.setup_calls} calls set up at once (POST sent -> 201)")
    head = (
        f"{'variant':<13}{'upstream':>9}{'calls':>6}{'failed':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'max ms':>8}| relay-logged p50/p99 ms"
    )
    out.append(head)
    out.append("-" * len(head))
    for r in results:
        s, rl = r.setup_ms, r.setup_relay_ms
        out.append(
            f"{r.name:<13}{r.setup_upstream:>9}{len(s):>6}{len(r.setup_failed):>7}"
            f"{_f(pct(s, 50), 0, 8)}{_f(pct(s, 99), 0, 8)}{_f(max(s) if s else None, 0, 8)}| "
            f"{_f(pct(rl, 50), 0)}/{_f(pct(rl, 99), 0)}"
        )
        for error in r.setup_failed[:3]:
            out.append(f"    failed: {error[:200]}")
    out.append("")

    leaks = [r for r in results if r.leak is not None]
    if leaks:
        out.append("4. Leak check: short calls one wave after another (fresh relay)")
        for r in leaks:
            leak = r.leak
            assert leak is not None
            out.append(
                f"{r.name}: {leak.calls} calls ({opts.leak_parallel} at a time) in "
                f"{leak.seconds:.0f} s, {leak.failed} failed, calls live at the end: "
                f"{leak.calls_left}; {leak.verdict}"
            )
            out.append(f"    {'calls':>6}{'RSS MB':>8}{'threads':>8}{'fds':>5}{'tasks':>6}")
            for s in leak.samples:
                out.append(
                    f"    {s['calls']:>6}{_f(s['rss_mb'], 1, 8)}{s['threads'] or 0:>8}"
                    f"{s['fds'] or 0:>5}{s['tasks'] or 0:>6}{'' if s['idle'] else '  (not idle)'}"
                )
            if len(leak.samples) >= 2:
                a, b = leak.samples[0], leak.samples[-1]
                out.append(
                    f"    growth from call {a['calls']} to {b['calls']}: RSS "
                    f"{(b['rss_mb'] or 0) - (a['rss_mb'] or 0):+.1f} MB, threads "
                    f"{(b['threads'] or 0) - (a['threads'] or 0):+d}, fds "
                    f"{(b['fds'] or 0) - (a['fds'] or 0):+d}, tasks "
                    f"{(b['tasks'] or 0) - (a['tasks'] or 0):+d}"
                )
        out.append("")

    out.append("5. Ratios: stock / relay CPU per call (fit slopes)")
    by_name = {r.name: r for r in results}
    for ns in ("webrtc", "off"):
        relay, stock = by_name.get(f"relay-{ns}"), by_name.get(f"stock-{ns}")
        if relay and stock and relay.cpu_fit.slope and stock.cpu_fit.slope:
            ratio = stock.cpu_fit.slope / relay.cpu_fit.slope
            out.append(
                f"noise suppression {ns}: stock {stock.cpu_fit.slope:.2f} % / relay "
                f"{relay.cpu_fit.slope:.2f} % = {ratio:.2f}x"
                + (
                    f"; capacity stock {stock.capacity} / relay {relay.capacity} calls"
                    if stock.capacity and relay.capacity
                    else ""
                )
            )
        else:
            out.append(f"noise suppression {ns}: (not measured in this run)")
    out.append("")
    out.extend(targets(results))
    for r in results:
        for profile in (r.profile, r.setup_profile):
            if profile:
                out.append("")
                out.append(f"{r.name}: " + profile[0])
                out.extend("  " + line for line in profile[1:])
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        out.append("")
        out.append("Notes and relay warnings:")
        out.extend(f"  {name}: {note}" for name, note in notes[:80])
    return "\n".join(out)


def targets(results: list[VariantResult]) -> list[str]:
    out = ["Targets (issue 5):"]
    by_name = {r.name: r for r in results}

    def line(ok: bool | None, text: str) -> None:
        mark = "?   " if ok is None else ("PASS" if ok else "FAIL")
        out.append(f"  {mark} {text}")

    for name, limit in TARGET_CPU_PER_CALL.items():
        r = by_name.get(name)
        if r is None:
            continue
        slope = r.cpu_fit.slope
        line(
            None if slope is None else slope <= limit,
            f"{name}: CPU per call {_f(slope, 2)} % <= {limit} %",
        )
        need = TARGET_CALLS[name]
        cap = r.capacity
        capacity_ok: bool | None = None if cap is None else cap >= need
        if cap is not None and cap < need and r.capacity_note.startswith(">="):
            capacity_ok = None  # the load side or the ramp ended first
        line(capacity_ok, f"{name}: calls per core {cap} {r.capacity_note} (>= {need})")
    for ns in ("webrtc", "off"):
        relay, stock = by_name.get(f"relay-{ns}"), by_name.get(f"stock-{ns}")
        if relay and stock:
            if relay.cpu_fit.slope and stock.cpu_fit.slope:
                ratio = stock.cpu_fit.slope / relay.cpu_fit.slope
                line(
                    ratio >= TARGET_RATIO, f"stock/relay CPU per call, NS {ns}: {ratio:.2f}x >= 2x"
                )
            else:
                line(None, f"stock/relay CPU per call, NS {ns}: no fit")
    for r in results:
        if r.name.startswith("relay-"):
            slope = r.rss_fit.slope
            line(
                None if slope is None else slope <= TARGET_RSS_PER_CALL_MB,
                f"{r.name}: RSS per added call {_f(slope, 2)} MB <= {TARGET_RSS_PER_CALL_MB}",
            )
            if r.leak is not None:
                line(
                    None
                    if r.leak.verdict.startswith("not judged")
                    else r.leak.verdict.startswith("PASS"),
                    f"{r.name}: no growth over {r.leak.calls} calls: {r.leak.verdict}",
                )
            s = r.setup_ms
            if s:
                p50, p99 = pct(s, 50) or 0, pct(s, 99) or 0
                line(
                    p50 <= TARGET_SETUP_P50_MS
                    and p99 <= TARGET_SETUP_P99_MS
                    and not r.setup_failed,
                    f"{r.name}: setup p50 {p50:.0f} ms <= 150, p99 {p99:.0f} ms <= 400 "
                    f"({len(s)} calls, {len(r.setup_failed)} failed)",
                )
    return out


# -- main --------------------------------------------------------------------------------------


async def run(opts: Options) -> int:
    cores = os.cpu_count() or 1
    if cores < 2 or not hasattr(os, "sched_setaffinity"):
        print("bench.load needs 2 cores and os.sched_setaffinity", file=sys.stderr)
        return 2
    header = [*machine_lines(), tree_state()]
    os.sched_setaffinity(0, {LOAD_CORE})
    if opts.nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, opts.nice)
    aiortc_patches.install()
    aiortc_patches.restrict_host_addresses(["127.0.0.1"])
    logdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    started = time.monotonic()
    for line in header:
        print(line, flush=True)
    harness = Harness(opts, logdir)
    print(f"speech: {harness.speech_source}; logs: {logdir}", flush=True)
    results: list[VariantResult] = []
    try:
        await harness.start()
        await harness.measure_floor()
        print(harness.floor_note, file=sys.stderr, flush=True)
        for name in opts.variants:
            print(f"{name}: {VARIANTS[name]}", file=sys.stderr, flush=True)
            results.append(await VariantRun(harness, name).run())
    finally:
        await harness.stop()
    end_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    text = report(results, harness, opts)
    print(text)
    print(
        f"\nrun took {(time.monotonic() - started) / 60:.1f} min; load average at the end "
        f"{end_load}; relay and upstream logs in {logdir}"
    )
    if opts.json is not None:
        data = {
            "machine": header,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
            "floor_ms": {"up": harness.floor_up, "down": harness.floor_down},
            "speech": harness.speech_source,
            "results": [asdict(r) for r in results],
        }
        opts.json.write_text(json.dumps(data, indent=2, default=str))
    return 1 if any(r.error for r in results) else 0


def tree_state() -> str:
    """The git revision of the tree under test, and what is modified in relay/ and bench/."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "relay", "bench"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "tree: (git not available)"
    changed = [line[3:] for line in status if not line[3:].startswith("bench/load")]
    return f"tree: {head or '?'}" + (
        f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean relay/)"
    )


def parse_calls(text: str) -> list[int] | None:
    if text in ("", "auto"):
        return None
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or values[0] < 1:
        raise ValueError("--calls: positive integers")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Capacity per core of the relay (and of a stock aiortc relay): CPU per "
        "call, calls per core, RSS per call, setup time, leaks.",
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated from {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--calls", default="auto", help="N values, e.g. 1,4,8,16 (default: a ramp to saturation)"
    )
    parser.add_argument("--window-secs", type=float, default=None, help="measured window (15)")
    parser.add_argument("--warmup-secs", type=float, default=None, help="warm-up per point (4)")
    parser.add_argument("--leak-calls", type=int, default=None, help="leak-check calls (500)")
    parser.add_argument("--leak-parallel", type=int, default=4, help="calls per leak wave (4)")
    parser.add_argument("--setup-calls", type=int, default=20, help="calls set up at once (20)")
    parser.add_argument("--setup-rounds", type=int, default=None, help="bursts per variant (3)")
    parser.add_argument(
        "--upstream",
        choices=["auto", "emulator", "light"],
        default="auto",
        help="auto (default): bulk calls go to the emulator up to --emulator-max of them, "
        "to the light stand-in above",
    )
    parser.add_argument(
        "--emulator-max",
        type=int,
        default=2,
        help="with --upstream auto: most bulk calls on the emulator (2)",
    )
    parser.add_argument("--probes", type=int, default=2, help="latency-probe calls among the N (2)")
    parser.add_argument("--max-calls", type=int, default=80)
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the cProfile window at the best N"
    )
    parser.add_argument("--profile-secs", type=float, default=8.0)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the relay, upstream and callers (e.g. -5 to shield them "
        "from other work on the machine; needs root for negative values)",
    )
    parser.add_argument("--quick", action="store_true", help="a ~3-minute smoke version")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    try:
        calls = parse_calls(args.calls)
    except ValueError as exc:
        parser.error(str(exc))
    quick = args.quick
    if quick and calls is None:
        calls = [1, 4, 8]
    opts = Options(
        variants=names,
        calls=calls,
        window_s=args.window_secs or (5.0 if quick else 15.0),
        warmup_s=args.warmup_secs or (2.0 if quick else 4.0),
        leak_calls=args.leak_calls if args.leak_calls is not None else (40 if quick else 500),
        leak_parallel=max(1, args.leak_parallel),
        setup_calls=args.setup_calls,
        setup_rounds=args.setup_rounds or (1 if quick else 3),
        upstream=args.upstream,
        emulator_max=args.emulator_max,
        probes=max(1, args.probes),
        max_calls=args.max_calls,
        profile=not args.no_profile and not quick,
        profile_s=args.profile_secs,
        floor_s=4.0 if quick else 8.0,
        variant_budget_s=120.0 if quick else 330.0,
        nice=args.nice,
        quick=quick,
        json=args.json,
    )
    if opts.window_s < 3:
        parser.error("--window-secs must be at least 3")
    sys.exit(asyncio.run(run(opts)))


if __name__ == "__main__":
    main()
