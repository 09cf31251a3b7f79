"""One measured point of ``bench.load``: a window at N live calls.

Readings are taken just before and just after the window (the closing one in the
reverse order of the opening one, so that each pair of readings spans the window):
relay CPU (``/proc/<pid>/stat``, all threads and the main one), frames counted by the
upstream and by the callers, frames sent by both, the load side's own CPU, lag and
pacing, both cores' busy time. Then the probe calls' tone onsets of the window give
the latency of both directions, pooled.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.common import lag_summary
from bench.load_callers import LoadCaller
from bench.load_calls import RelayCalls
from bench.load_options import LOAD_CORE, RELAY_CORE
from bench.load_results import Point, latency_stats, onset_latencies
from bench.load_verdicts import classify
from bench.procs import ProcSample, core_busy_pct, core_times, loadavg, own_cpu


@dataclass
class Reading:
    """One end of a measured window."""

    t: float
    upstream: dict[str, Any]
    cores: dict[int, tuple[float, float]]
    relay: ProcSample
    upstream_proc: ProcSample
    own_cpu: float
    sent: int
    received: list[int]


async def _open(rc: RelayCalls, callers: list[LoadCaller]) -> Reading:
    assert rc.relay is not None and rc.h.upstream is not None
    await rc.relay_stats()  # resets the relay's lag window
    rc.h.lag.take()
    rc.h.pump.take_lateness()
    upstream = await rc.h.upstream_stats()
    cores = core_times()
    relay, upstream_proc = rc.relay.sample(), rc.h.upstream.sample()
    own = own_cpu()
    sent = sum(c.sent for c in callers)
    received = [c.counter.packets for c in callers]
    return Reading(time.monotonic(), upstream, cores, relay, upstream_proc, own, sent, received)


async def _close(rc: RelayCalls, callers: list[LoadCaller]) -> Reading:
    assert rc.relay is not None and rc.h.upstream is not None
    t = time.monotonic()
    received = [c.counter.packets for c in callers]
    sent = sum(c.sent for c in callers)
    own = own_cpu()
    relay, upstream_proc = rc.relay.sample(), rc.h.upstream.sample()
    cores = core_times()
    upstream = await rc.h.upstream_stats()
    return Reading(t, upstream, cores, relay, upstream_proc, own, sent, received)


def _cpu(point: Point, a: Reading, b: Reading, dt: float, n: int) -> None:
    r0, r1, up0, up1 = a.relay, b.relay, a.upstream_proc, b.upstream_proc
    if r0.cpu_s is not None and r1.cpu_s is not None:
        point.relay_cpu_pct = (r1.cpu_s - r0.cpu_s) / dt * 100
        point.cpu_per_call_pct = point.relay_cpu_pct / n
    if r0.main_cpu_s is not None and r1.main_cpu_s is not None:
        point.relay_main_cpu_pct = (r1.main_cpu_s - r0.main_cpu_s) / dt * 100
    if up0.cpu_s is not None and up1.cpu_s is not None:
        point.upstream_cpu_pct = (up1.cpu_s - up0.cpu_s) / dt * 100
    point.load_cpu_pct = (b.own_cpu - a.own_cpu) / dt * 100
    point.rss_mb, point.threads, point.fds = r1.rss_mb, r1.threads, r1.fds


def _upstream_frames(u: dict[str, Any], key: str) -> int:
    """Frames in or out (``key``) of every kind of upstream call, ended ones included."""
    probe = u.get("probe") or {}
    return int(u["emulator"][key] + u["light"][key] + probe.get(key, 0))


def _delivery(point: Point, a: Reading, b: Reading, dt: float, n: int) -> None:
    nominal = 50.0 * n * dt
    udt = float(b.upstream["monotonic"] - a.upstream["monotonic"])
    up_nominal = 50.0 * n * udt
    frames_in = _upstream_frames(b.upstream, "frames_in") - _upstream_frames(
        a.upstream, "frames_in"
    )
    frames_out = _upstream_frames(b.upstream, "frames_out") - _upstream_frames(
        a.upstream, "frames_out"
    )
    point.up_delivered = frames_in / up_nominal
    point.upstream_pace = frames_out / up_nominal
    point.down_delivered = (sum(b.received) - sum(a.received)) / nominal
    per_call = [(y - x) / (50.0 * dt) for x, y in zip(a.received, b.received, strict=True)]
    point.down_min_call = min(per_call)
    point.callers_pace = (b.sent - a.sent) / nominal


def _machine(point: Point, a: Reading, b: Reading) -> None:
    point.core0_busy_pct = core_busy_pct(a.cores, b.cores, RELAY_CORE)
    point.core1_busy_pct = core_busy_pct(a.cores, b.cores, LOAD_CORE)
    if point.core0_busy_pct is not None and point.relay_cpu_pct is not None:
        point.core0_other_pct = max(0.0, point.core0_busy_pct - point.relay_cpu_pct)
    point.loadavg = loadavg()


async def _latency(rc: RelayCalls, point: Point, window: tuple[float, float]) -> None:
    """The probe calls' onsets sent within ``window``, both ways, pooled."""
    live = {p["id"]: p for p in (await rc.h.get(f"{rc.h.base_up}/bench/probe"))["probes"]}
    up_values: list[float] = []
    down_values: list[float] = []
    up_lost = down_lost = 0
    for caller, probe_id in rc.probes:
        probe = live.get(probe_id)
        assert caller.source is not None and caller.receiver is not None
        if probe is None:
            point.problems.append(f"upstream probe {probe_id} is gone")
            continue
        values, lost = onset_latencies(caller.source.onsets, probe["up_onsets"], window)
        up_values += values
        up_lost += lost
        values, lost = onset_latencies(probe["down_onsets"], caller.receiver.onsets, window)
        down_values += values
        down_lost += lost
    point.lat_up = latency_stats(up_values, up_lost, rc.h.floor_up)
    point.lat_down = latency_stats(down_values, down_lost, rc.h.floor_down)


async def measure(rc: RelayCalls, n: int) -> Point:
    """A window at the ``n`` live calls of ``rc``, judged (see ``classify``)."""
    assert rc.probes or rc.transport == "websocket"  # -ws: latency is bench.latency's
    point = Point(rc.name, n, rc.h.mode if rc.calls else "probe")
    callers = [*rc.calls, *(c for c, _ in rc.probes)]
    a = await _open(rc, callers)
    await asyncio.sleep(rc.opts.window_s)
    b = await _close(rc, callers)
    rs = await rc.relay_stats()
    load_lag = rc.h.lag.take()
    _, _late_ticks, pump_late = rc.h.pump.take_lateness()

    dt = b.t - a.t
    point.window_s = dt
    _cpu(point, a, b, dt, n)
    point.tasks = rs.get("tasks")
    point.relay_lag = rs.get("lag", {})
    point.load_lag = lag_summary(load_lag)
    point.upstream_lag = b.upstream.get("lag", {})
    upstream_late = b.upstream.get("pump", {}).get("max_late_ms", 0)
    point.pump_late_ms = max(pump_late, upstream_late / 1000) * 1000
    _delivery(point, a, b, dt, n)
    _machine(point, a, b)

    await asyncio.sleep(0.8)  # let the last onsets of the window arrive
    point.probed = bool(rc.probes)
    await _latency(rc, point, (a.t, b.t))
    first = next((p for p in rc.result.points if p.n == 1 and p.counted), None)
    baseline = (first.lat_up.p50_ms, first.lat_down.p50_ms) if first else (None, None)
    point.calls_ended = sum(1 for c in callers if c.ended)
    point.relay_calls = await rc.relay_calls()
    classify(point, baseline)
    return point
