"""What ``bench.load`` measures: one point (a variant at N calls), the leak check, a
variant's results; and the statistics over them (percentiles, linear fits, onset
latencies of the probe calls)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.tones import PERIOD, RATE, match_onsets


@dataclass(frozen=True)
class Latency:
    """Tone-onset latency of one direction of a point's probe calls, pooled (ms)."""

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
    #: Whether probe calls measured latency (the ``-ws`` variants have none).
    probed: bool = True
    up_delivered: float | None = None  # received by the upstream / nominal
    down_delivered: float | None = None  # received by the callers / nominal
    down_min_call: float | None = None  # the worst caller's downlink / nominal
    callers_pace: float | None = None  # sent by the callers / nominal
    upstream_pace: float | None = None  # sent by the upstream / nominal
    lat_up: Latency = Latency()
    lat_down: Latency = Latency()
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
    pairs = match_onsets(source, received, PERIOD / RATE)
    start, end = window
    values = [lat * 1000 for s, lat in pairs if start <= s <= end]
    matched = {s for s, _ in pairs}
    lost = sum(1 for s in source if start <= s <= end and s not in matched)
    return values, lost


def latency_stats(values: list[float], lost: int, floor: float) -> Latency:
    """Percentiles of ``values``, and the same minus the ``floor`` (the added latency)."""
    if not values:
        return Latency(n=0, unmatched=lost)
    p50, p99 = pct(values, 50), pct(values, 99)
    added_p50, added_p99 = (p50 or 0.0) - floor, (p99 or 0.0) - floor
    return Latency(len(values), lost, p50, p99, max(values), added_p50, added_p99)
