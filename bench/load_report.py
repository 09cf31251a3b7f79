"""The report of ``bench.load``: 1. every point (1b. the load side and the machine
during it), 2. capacity per core, 3. set-up time, 4. the leak check, 5. stock/relay
ratios, then the targets, the profiles and the relay's warnings."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.load_options import LOAD_CORE, RELAY_CORE, Options
from bench.load_results import Point, VariantResult, pct
from bench.load_targets import stock_and_relay, targets
from bench.table import Table, num, pair

_POINTS = Table(
    "{:<13}{:>3} {:<5}|{:>6}{:>6}{:>6}|{:>6}{:>6}{:>6}|{:>15}{:>15}{:>11}|"
    "{:>6}{:>4}{:>4}{:>6}{:>12}| {}",
    "variant,N,upstr,CPU%,main,/call,up,down,worst,lat up p50/p99,lat dn p50/p99,"
    "+p99 up/dn,RSS,thr,fds,tasks,lag p99/max,status",
)
_POINTS_LEGEND = (
    "CPU% = relay process (all threads) in % of one core; main = its event-loop thread; "
    "/call = CPU%/N. up = frames the upstream received / nominal (50 per call-second); "
    "down = frames the callers received / nominal; worst = the worst caller's down. "
    "Latency = tone onset on the probe calls, pooled (ms); +p99 = p99 minus the direct "
    "floor's p50 (the 'added latency'). lag = relay event-loop lag (ms). upstr = where "
    "the bulk calls go: emula(tor), light stand-in, or probe (only probe calls)."
)
_LOAD_SIDE = Table(
    "{:<13}{:>3} |{:>13}{:>14}{:>12}|{:>20}{:>12}{:>10}|{:>12}{:>7}| {}",
    "variant,N,callers CPU%,upstream CPU%,core1 busy%,lag p99/max callers,upstream,"
    "pace late,core0 busy%,other,load average",
)
_LOAD_SIDE_LEGEND = (
    "callers = this process (the callers, incl. the probe); upstream = emulator or "
    "stand-in process; pace late = worst lateness (ms) of the lean senders' 20 ms "
    "ticks; other = core-0 busy time not used by the relay (other processes on the "
    "relay's core)."
)
_CAPACITY = Table(
    "{:<13}|{:>11} {:<36}|{:>11}{:>13}{:>8}{:>8}{:>7}|{:>9}{:>8}{:>17}",
    "variant,calls/core,,CPU/call %,CPU-s/call-s,fixed %,fit pts,at cap,RSS idle,MB/call,"
    "threads idle->N",
)
_CAPACITY_LEGEND = (
    "CPU/call = slope of a linear fit of relay CPU % over the unsaturated points (the "
    "marginal cost of a call; CPU-s/call-s the same as a fraction); fixed = its "
    "intercept; at cap = relay CPU % / N at the capacity point; MB/call = slope of RSS "
    "over the same points. Capacity 0: the criteria fail at N=1 (the stock relay's "
    "jitter buffer alone adds ~90 ms each way)."
)
_SETUP = Table(
    "{:<13}{:>9}{:>6}{:>7}{:>8}{:>8}{:>8}| {}",
    "variant,upstream,calls,failed,p50 ms,p99 ms,max ms,relay-logged p50/p99 ms",
)
_LEAK = Table("    {:>6}{:>8}{:>8}{:>5}{:>6}{}", "calls,RSS MB,threads,fds,tasks,")


def _lag(lag: dict[str, Any]) -> str:
    return num(lag.get("p99_ms"), 1) + "/" + num(lag.get("max_ms"), 0)


# -- 1. points -------------------------------------------------------------------------


def _point_row(p: Point) -> str:
    lag = p.relay_lag
    return _POINTS.row(
        p.variant,
        p.n,
        p.upstream[:5],
        num(p.relay_cpu_pct, 1),
        num(p.relay_main_cpu_pct, 1),
        num(p.cpu_per_call_pct, 2),
        num(p.up_delivered, 3),
        num(p.down_delivered, 3),
        num(p.down_min_call, 3),
        pair(p.lat_up.p50_ms, p.lat_up.p99_ms),
        pair(p.lat_down.p50_ms, p.lat_down.p99_ms),
        pair(p.lat_up.added_p99_ms, p.lat_down.added_p99_ms, 0),
        num(p.rss_mb, 1),
        p.threads or 0,
        p.fds or 0,
        p.tasks or 0,
        pair(lag.get("p99_ms"), lag.get("max_ms"), 0),
        f"{p.status} {'; '.join(p.problems)}",
    )


def _variant_rows(r: VariantResult) -> list[str]:
    if r.error and not r.points:
        return [f"{r.name:<13} FAILED: {r.error}"]
    out = []
    if r.core_speed:
        out.append(
            f"{r.name:<13}    {r.tree}; core 0 speed before this variant: libopus "
            f"encode {r.core_speed['opus_encode_us']:.0f} us/frame, Python loop "
            f"{r.core_speed['python_loop_ns']:.0f} ns/iteration"
        )
    out.extend(_point_row(p) for p in r.points)
    if r.error:
        out.append(f"{r.name:<13} stopped: {r.error}")
    return out


def _points(results: list[VariantResult], floor_note: str, opts: Options) -> list[str]:
    out = [
        f"1. Per variant and N ({opts.window_s:g} s window after {opts.warmup_s:g} s warm-up; "
        f"relay on core {RELAY_CORE}, callers and upstream on core {LOAD_CORE}, all at nice "
        f"{opts.nice})",
        floor_note,
        *_POINTS.head(rule_extra=20),
    ]
    for r in results:
        out.extend(_variant_rows(r))
    return [*out, _POINTS_LEGEND, ""]


# -- 1b. the load side -------------------------------------------------------------------


def _load_side(results: list[VariantResult]) -> list[str]:
    out = ["1b. Load side and machine during each window", *_LOAD_SIDE.head()]
    for p in (p for r in results for p in r.points):
        out.append(
            _LOAD_SIDE.row(
                p.variant,
                p.n,
                num(p.load_cpu_pct, 1),
                num(p.upstream_cpu_pct, 1),
                num(p.core1_busy_pct, 0),
                _lag(p.load_lag),
                _lag(p.upstream_lag),
                num(p.pump_late_ms, 0),
                num(p.core0_busy_pct, 0),
                num(p.core0_other_pct, 0),
                " ".join(f"{x:.2f}" for x in p.loadavg) if p.loadavg else "-",
            )
        )
    return [*out, _LOAD_SIDE_LEGEND]


def _emulator_vs_light(results: list[VariantResult], opts: Options) -> list[str]:
    """The points measured on both upstreams with the same calls, if any."""
    pairs = []
    for r in results:
        for e in (p for p in r.points if p.upstream == "emulator"):
            same = [p for p in r.points if p.upstream == "light" and p.n == e.n]
            if same and e.upstream_cpu_pct is not None and same[0].upstream_cpu_pct is not None:
                pairs.append((r.name, e, same[0]))
    if not pairs:
        return []
    out = [
        "Emulator vs light stand-in for the same calls (bulk calls on the emulator / on "
        "the stand-in; the probe calls are on probe stand-ins in both):"
    ]
    extra = []
    for name, e, light in pairs:
        bulk = max(1, e.n - min(opts.probes, e.n))
        diff = ((e.upstream_cpu_pct or 0) - (light.upstream_cpu_pct or 0)) / bulk
        extra.append(diff)
        out.append(
            f"  {name} N={e.n}: upstream process {num(e.upstream_cpu_pct)} % vs "
            f"{num(light.upstream_cpu_pct)} % ({diff:+.1f} % of a core per emulator call); "
            f"relay {num(e.relay_cpu_pct)} % vs {num(light.relay_cpu_pct)} %"
        )
    out.append(
        f"  The emulator costs ~{np.median(extra):.0f} % of a core per call more than the "
        "stand-in (it decodes every uplink frame, runs its VAD and encodes the agent's "
        "audio): with the callers on the same core it would be the load side's limit long "
        "before the relay's, so points with more than "
        f"{opts.emulator_max} bulk calls use the light stand-in (same HTTP API, media "
        "and event rate, no decode/encode)."
    )
    return out


# -- 2. capacity, 3. set-up, 4. leaks, 5. ratios ------------------------------------------


def _capacity(results: list[VariantResult]) -> list[str]:
    out = [
        "2. Capacity per core (>= 99.5 % frames both ways, p99 added latency <= 50 ms)",
        *_CAPACITY.head(),
    ]
    for r in results:
        fit = r.cpu_fit
        last = r.points[-1] if r.points else None
        out.append(
            _CAPACITY.row(
                r.name,
                str(r.capacity) if r.capacity is not None else "-",
                r.capacity_note[:36],
                num(fit.slope, 2),
                num(fit.slope / 100 if fit.slope else None, 4),
                num(fit.intercept, 1),
                fit.points,
                num(r.cpu_per_call_at_capacity, 2),
                num(r.idle.get("rss_mb"), 1),
                num(r.rss_fit.slope, 2),
                str(r.idle.get("threads")) + "->" + str(last.threads if last else "-"),
            )
        )
    return [*out, _CAPACITY_LEGEND, ""]


def _setup(results: list[VariantResult], opts: Options) -> list[str]:
    out = [
        f"3. Set-up time, {opts.setup_calls} calls set up at once (POST sent -> 201)",
        *_SETUP.head(),
    ]
    for r in results:
        s, rl = r.setup_ms, r.setup_relay_ms
        out.append(
            _SETUP.row(
                r.name,
                r.setup_upstream,
                len(s),
                len(r.setup_failed),
                num(pct(s, 50), 0),
                num(pct(s, 99), 0),
                num(max(s) if s else None, 0),
                pair(pct(rl, 50), pct(rl, 99), 0),
            )
        )
        out.extend(f"    failed: {error[:200]}" for error in r.setup_failed[:3])
    return [*out, ""]


def _leak(r: VariantResult, opts: Options) -> list[str]:
    leak = r.leak
    assert leak is not None
    out = [
        f"{r.name}: {leak.calls} calls ({opts.leak_parallel} at a time) in "
        f"{leak.seconds:.0f} s, {leak.failed} failed, calls live at the end: "
        f"{leak.calls_left}; {leak.verdict}",
        _LEAK.header(),
    ]
    for s in leak.samples:
        idle = "" if s["idle"] else "  (not idle)"
        rss = num(s["rss_mb"], 1)
        out.append(
            _LEAK.row(s["calls"], rss, s["threads"] or 0, s["fds"] or 0, s["tasks"] or 0, idle)
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
    return out


def _leaks(results: list[VariantResult], opts: Options) -> list[str]:
    leaks = [r for r in results if r.leak is not None]
    if not leaks:
        return []
    out = ["4. Leak check: short calls one wave after another (fresh relay)"]
    for r in leaks:
        out.extend(_leak(r, opts))
    return [*out, ""]


def _ratios(results: list[VariantResult]) -> list[str]:
    out = ["5. Ratios: stock / relay CPU per call (fit slopes)"]
    for ns, relay, stock in stock_and_relay(results):
        if not (relay and stock and relay.cpu_fit.slope and stock.cpu_fit.slope):
            out.append(f"noise suppression {ns}: (not measured in this run)")
            continue
        ratio = stock.cpu_fit.slope / relay.cpu_fit.slope
        capacity = ""
        if stock.capacity and relay.capacity:
            capacity = f"; capacity stock {stock.capacity} / relay {relay.capacity} calls"
        out.append(
            f"noise suppression {ns}: stock {stock.cpu_fit.slope:.2f} % / relay "
            f"{relay.cpu_fit.slope:.2f} % = {ratio:.2f}x" + capacity
        )
    return [*out, ""]


# -- the rest --------------------------------------------------------------------------


def _profiles_and_notes(results: list[VariantResult]) -> list[str]:
    out: list[str] = []
    for r in results:
        for profile in (r.profile, r.setup_profile):
            if profile:
                out += ["", f"{r.name}: " + profile[0], *("  " + line for line in profile[1:])]
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        out += ["", "Notes and relay warnings:"]
        out.extend(f"  {name}: {note}" for name, note in notes[:80])
    return out


def report(results: list[VariantResult], floor_note: str, opts: Options) -> str:
    return "\n".join(
        [
            *_points(results, floor_note, opts),
            *_load_side(results),
            *_emulator_vs_light(results, opts),
            "",
            *_capacity(results),
            *_setup(results, opts),
            *_leaks(results, opts),
            *_ratios(results),
            *targets(results),
            *_profiles_and_notes(results),
        ]
    )
