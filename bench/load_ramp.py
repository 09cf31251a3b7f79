"""The ramp of one ``bench.load`` variant: N grows (calls stay up between points) until
the relay saturates, the load side cannot keep up, ``--max-calls`` or the variant's
time budget; then one point halfway between the best passing N and the first
saturated one refines the edge. With ``--calls`` the N values are given instead.

Each point: its calls are set up, a warm-up, then a measured window (measured again
when it looks disturbed, see ``disturbed``). With ``--upstream auto``, the N whose
bulk calls fill the emulator is measured once more on the light stand-in, to show
what the upstream changes.
"""

from __future__ import annotations

import asyncio
import sys
import time

from bench.load_callers import CallFailed
from bench.load_calls import RelayCalls
from bench.load_measure import measure
from bench.load_results import Point, linear_fit
from bench.load_verdicts import RETRIES, disturbed
from bench.table import num


def next_n(points: list[Point]) -> int | None:
    """The next N of the ramp: 1, 4, then steps towards ~70 % of the relay core."""
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


def _progress(point: Point, started: float) -> None:
    print(
        f"    {point.status:<4} relay {num(point.relay_cpu_pct, 0)} % CPU, up "
        f"{num(point.up_delivered, 3)} down {num(point.down_delivered, 3)}, +p99 up "
        f"{num(point.lat_up.added_p99_ms, 0)} down {num(point.lat_down.added_p99_ms, 0)}"
        f" ms; load {num(point.load_cpu_pct, 0)}+{num(point.upstream_cpu_pct, 0)} %"
        f" ({time.monotonic() - started:.0f} s) {'; '.join(point.problems)}",
        file=sys.stderr,
        flush=True,
    )


class Ramp:
    def __init__(self, rc: RelayCalls, deadline: float) -> None:
        self.rc = rc
        self.opts = rc.opts
        self.result = rc.result
        self.deadline = deadline
        self.explicit = list(self.opts.calls) if self.opts.calls else None
        #: The first saturated point (or failing after a pass).
        self.edge: Point | None = None
        self.refined = False

    async def run(self) -> None:
        while time.monotonic() < self.deadline:
            n = await self._choose()
            if n is None:
                break
            if n > self.opts.max_calls:
                self.result.notes.append(f"ramp stopped at --max-calls {self.opts.max_calls}")
                break
            if await self._step(n):
                break
        else:
            self.result.notes.append("ramp stopped by the per-variant time budget")

    async def _choose(self) -> int | None:
        """The next N (None: the ramp is over)."""
        if self.explicit is not None:
            return self.explicit.pop(0) if self.explicit else None
        if self.edge is not None:
            return await self._refine(self.edge)
        return next_n(self.result.points)

    async def _refine(self, edge: Point) -> int | None:
        """Once: halfway between the best N below the edge and the edge."""
        below = [p for p in self.result.points if p.n < edge.n]
        good = [p.n for p in below if p.passed] or [p.n for p in below if p.unsaturated]
        best = max(good, default=0)
        if self.refined or edge.n - best < 3 or best == 0:
            return None
        self.refined = True
        # Start again from no calls: a saturated relay's queues (the stock
        # relay's are unbounded) would otherwise still be draining.
        await self.rc.drop_all()
        await self.rc.wait_relay_idle()
        return (best + edge.n) // 2

    async def _step(self, n: int) -> bool:
        """One point at ``n`` calls; True if the ramp ends with it."""
        rc = self.rc
        mode = rc.mode_for(n)
        await rc.use_mode(mode)
        started = time.monotonic()
        print(f"  {rc.name}: N={n} ({mode} upstream) ...", file=sys.stderr, flush=True)
        try:
            await rc.grow_to(n)
        except CallFailed as exc:
            return self._set_up_failed(n, mode, exc)
        await asyncio.sleep(self.opts.warmup_s)
        point = await self._measured(n)
        self.result.points.append(point)
        _progress(point, started)
        if self._ends_at(point, n):
            return True
        if self._overlap_due(n, point):
            await self._overlap(n)
        return False

    def _set_up_failed(self, n: int, mode: str, exc: CallFailed) -> bool:
        """A point whose calls could not all be set up (e.g. the relay's own admission
        control: HTTP 503 while its loop lags) is saturated."""
        point = Point(self.rc.name, n, mode, status="SAT", problems=[f"set-up: {exc}"])
        self.result.points.append(point)
        print(f"    SAT  {exc}", file=sys.stderr, flush=True)
        if self.edge is None:
            self.edge = point
            return self.explicit is not None
        return True

    async def _measured(self, n: int) -> Point:
        """The point, measured again while it looks disturbed (up to RETRIES times)."""
        point = await measure(self.rc, n)
        for attempt in range(RETRIES):
            if (
                not disturbed(point, self.result.points, attempt)
                or time.monotonic() > self.deadline
            ):
                break
            self.result.notes.append(
                f"N={n} measured again (attempt {attempt + 2}): {point.status} "
                f"({'; '.join(point.problems)})"
            )
            print(f"    {point.status}, measuring again", file=sys.stderr, flush=True)
            await asyncio.sleep(2.0)
            point = await measure(self.rc, n)
        return point

    def _ends_at(self, point: Point, n: int) -> bool:
        """The load side could not keep up, or (with ``--calls``) the first failure."""
        if point.status == "LOAD":
            self.result.notes.append(
                f"ramp stopped at N={n}: the load side could not keep up "
                f"({'; '.join(point.problems)})"
            )
            return True
        earlier_pass = any(p.passed for p in self.result.points[:-1])
        if self.edge is None and (
            point.status == "SAT" or (point.status == "FAIL" and earlier_pass)
        ):
            self.edge = point
            if self.explicit is not None:
                self.result.notes.append(f"ramp stopped at the first failing point, N={n}")
                return True
        return False

    def _overlap_due(self, n: int, point: Point) -> bool:
        opts = self.opts
        return (
            opts.upstream == "auto"
            and self.rc.split(n)[1] == opts.emulator_max
            and point.counted
            and self.explicit is None
            and time.monotonic() < self.deadline
        )

    async def _overlap(self, n: int) -> None:
        """The same N on the light upstream: shows what the upstream changes."""
        rc = self.rc
        await rc.use_mode("light")
        print(f"  {rc.name}: N={n} (light upstream, overlap) ...", file=sys.stderr)
        await rc.grow_to(n)
        await asyncio.sleep(self.opts.warmup_s)
        self.result.points.append(await measure(rc, n))
