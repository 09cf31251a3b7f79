"""The targets of ``bench.load`` (issue 5), each judged PASS, FAIL or ? (not measured,
or the run ended before it could say)."""

from __future__ import annotations

from collections.abc import Iterator

from bench.load_results import VariantResult, pct
from bench.table import num

#: % of one core per call, calls per core, stock/relay ratio, MB, ms.
TARGET_CPU_PER_CALL = {"relay-webrtc": 4.5, "relay-off": 2.5}
TARGET_CALLS = {"relay-webrtc": 22, "relay-off": 40}
TARGET_RATIO = 2.0
TARGET_RSS_PER_CALL_MB = 3.0
TARGET_SETUP_P50_MS, TARGET_SETUP_P99_MS = 150.0, 400.0


def stock_and_relay(
    results: list[VariantResult],
) -> Iterator[tuple[str, VariantResult | None, VariantResult | None]]:
    """(noise suppression, relay variant, stock variant), for webrtc and off."""
    by_name = {r.name: r for r in results}
    for ns in ("webrtc", "off"):
        yield ns, by_name.get(f"relay-{ns}"), by_name.get(f"stock-{ns}")


def _line(ok: bool | None, text: str) -> str:
    mark = "?   " if ok is None else ("PASS" if ok else "FAIL")
    return f"  {mark} {text}"


def _capacity_lines(r: VariantResult, limit: float) -> list[str]:
    slope = r.cpu_fit.slope
    need = TARGET_CALLS[r.name]
    cap = r.capacity
    capacity_ok: bool | None = None if cap is None else cap >= need
    if cap is not None and cap < need and r.capacity_note.startswith(">="):
        capacity_ok = None  # the load side or the ramp ended first
    return [
        _line(
            None if slope is None else slope <= limit,
            f"{r.name}: CPU per call {num(slope, 2)} % <= {limit} %",
        ),
        _line(capacity_ok, f"{r.name}: calls per core {cap} {r.capacity_note} (>= {need})"),
    ]


def _ratio_line(ns: str, relay: VariantResult, stock: VariantResult) -> str:
    if relay.cpu_fit.slope and stock.cpu_fit.slope:
        ratio = stock.cpu_fit.slope / relay.cpu_fit.slope
        return _line(
            ratio >= TARGET_RATIO, f"stock/relay CPU per call, NS {ns}: {ratio:.2f}x >= 2x"
        )
    return _line(None, f"stock/relay CPU per call, NS {ns}: no fit")


def _relay_lines(r: VariantResult) -> list[str]:
    """RSS per call, leaks and set-up time of one of the project's relay variants."""
    slope = r.rss_fit.slope
    out = [
        _line(
            None if slope is None else slope <= TARGET_RSS_PER_CALL_MB,
            f"{r.name}: RSS per added call {num(slope, 2)} MB <= {TARGET_RSS_PER_CALL_MB}",
        )
    ]
    if r.leak is not None:
        verdict = r.leak.verdict
        out.append(
            _line(
                None if verdict.startswith("not judged") else verdict.startswith("PASS"),
                f"{r.name}: no growth over {r.leak.calls} calls: {verdict}",
            )
        )
    s = r.setup_ms
    if s:
        p50, p99 = pct(s, 50) or 0, pct(s, 99) or 0
        out.append(
            _line(
                p50 <= TARGET_SETUP_P50_MS and p99 <= TARGET_SETUP_P99_MS and not r.setup_failed,
                f"{r.name}: setup p50 {p50:.0f} ms <= 150, p99 {p99:.0f} ms <= 400 "
                f"({len(s)} calls, {len(r.setup_failed)} failed)",
            )
        )
    return out


def targets(results: list[VariantResult]) -> list[str]:
    out = ["Targets (issue 5):"]
    by_name = {r.name: r for r in results}
    for name, limit in TARGET_CPU_PER_CALL.items():
        r = by_name.get(name)
        if r is not None:
            out.extend(_capacity_lines(r, limit))
    for ns, relay, stock in stock_and_relay(results):
        if relay and stock:
            out.append(_ratio_line(ns, relay, stock))
    for r in results:
        if r.name.startswith("relay-"):
            out.extend(_relay_lines(r))
    return out
