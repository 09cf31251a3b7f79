"""The judgements of ``bench.load``: the status of a point (ok, FAIL, SAT, LOAD),
whether to measure it again, a variant's capacity and fits, the leak check's verdict."""

from __future__ import annotations

import math

from bench.load_results import Leak, Point, VariantResult, linear_fit
from bench.table import num

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
#: Leak check: growth between the 50th call and the last that counts as "none".
LEAK_RSS_MB_PER_100 = 0.5
LEAK_TOLERANCE = {"threads": 1, "fds": 2, "tasks": 2}


# -- one point -------------------------------------------------------------------------


def _load_problems(point: Point) -> list[str]:
    """Why the load side did not keep up (its loops lagged, its sources fell behind)."""
    load: list[str] = []
    for label, lag in (("callers' loop", point.load_lag), ("upstream loop", point.upstream_lag)):
        p99 = lag.get("p99_ms")
        if p99 is not None and p99 > MAX_LOAD_LAG_P99_MS:
            load.append(f"{label} lag p99 {p99:.0f} ms")
    if point.callers_pace is not None and point.callers_pace < MIN_SOURCE_PACE:
        load.append(f"callers sent {point.callers_pace:.3f} of nominal")
    if point.upstream_pace is not None and point.upstream_pace < MIN_SOURCE_PACE:
        load.append(f"upstream sent {point.upstream_pace:.3f} of nominal")
    return load


def _relay_problems(
    point: Point, baseline: tuple[float | None, float | None]
) -> tuple[list[str], list[str]]:
    """(signs of saturation, misses of the criteria without saturation)."""
    saturated: list[str] = []
    failed: list[str] = []
    if point.calls_ended:
        saturated.append(f"{point.calls_ended} of {point.n} calls ended by the relay side")
    if point.up_delivered is None or point.up_delivered < MIN_DELIVERED:
        saturated.append(f"up {num(point.up_delivered, 3)}")
    # The WebSocket leg drops the agent's queued audio at each barge-in, as it should, and
    # these callers never stop talking: its down count is not a delivery ratio (``-ws``
    # points are unprobed; their calls ending or lagging still shows saturation).
    down_judged = point.probed
    if down_judged and (point.down_delivered is None or point.down_delivered < MIN_DELIVERED):
        saturated.append(f"down {num(point.down_delivered, 3)}")
    probed = (("up", point.lat_up, baseline[0]), ("down", point.lat_down, baseline[1]))
    for label, lat, base in probed if point.probed else ():
        if lat.added_p99_ms is None or lat.p99_ms is None:
            saturated.append(f"no {label} latency onsets")
            continue
        if lat.unmatched > 1:
            saturated.append(f"{lat.unmatched} {label} onsets lost")
        if base is not None and lat.p99_ms > base + MAX_ADDED_P99_MS:
            saturated.append(f"{label} p99 {lat.p99_ms:.0f} ms (N=1 p50: {base:.0f})")
        if lat.added_p99_ms > MAX_ADDED_P99_MS:
            failed.append(f"{label} +p99 {lat.added_p99_ms:.0f} ms")
    return saturated, failed


def classify(point: Point, baseline: tuple[float | None, float | None]) -> None:
    """ok: meets the capacity criteria; FAIL: misses them without being saturated (the
    stock relay's jitter buffer alone adds > 50 ms); SAT: saturated (frames lost, tone
    onsets lost, or p99 latency 50 ms above this variant's N=1 p50);
    LOAD: the load side lagged, so the point says nothing about the relay."""
    load = _load_problems(point)
    if point.calls_ended:
        # The relay dropped calls (e.g. ICE consent expired while its loop was saturated):
        # the sources of those calls stopped, which is not the load side lagging.
        load = [x for x in load if "of nominal" not in x]
    saturated, failed = _relay_problems(point, baseline)
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


# -- a variant -------------------------------------------------------------------------


def _capacity(result: VariantResult, sat: list[int], load: list[int]) -> None:
    """The largest passing N below the first saturated one, and what ended the ramp."""
    points = result.points
    limit = min(sat) if sat else math.inf
    passing = [p.n for p in points if p.passed and p.n < limit]
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


def summarise(result: VariantResult) -> None:
    points = result.points
    unsat = [p for p in points if p.unsaturated]
    result.cpu_fit = linear_fit([p.n for p in unsat], [p.relay_cpu_pct or 0 for p in unsat])
    with_rss = [p for p in unsat if p.rss_mb is not None]
    result.rss_fit = linear_fit([p.n for p in with_rss], [p.rss_mb or 0 for p in with_rss])
    sat = [p.n for p in points if p.status == "SAT"]
    load = [p.n for p in points if p.status == "LOAD"]
    _capacity(result, sat, load)
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
