"""One variant of ``bench.load``, start to end: a fresh relay, its idle footprint, the
ramp (:mod:`bench.load_ramp`), a cProfile window at the best passing N, bursts of calls
set up at once (set-up time), and, for the project's relay, the leak check on another
fresh relay: short calls one wave after another while its RSS, threads, fds and tasks
are sampled."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from bench.load_callers import LoadCaller
from bench.load_calls import RelayCalls
from bench.load_harness import Harness, calibrate
from bench.load_options import RELAY_CORE
from bench.load_profile import profile_top
from bench.load_ramp import Ramp
from bench.load_results import Leak, VariantResult
from bench.load_verdicts import leak_verdict, summarise
from bench.runinfo import tree_state

SETUP_LOG = re.compile(r"call (rtc_\w+) set up in (\d+) ms")


class VariantRun:
    """One relay variant: its process, its calls, its measurements."""

    def __init__(self, harness: Harness, name: str) -> None:
        self.h = harness
        self.opts = harness.opts
        self.name = name
        self.result = VariantResult(name)
        self.rc = RelayCalls(harness, name, self.result)

    async def run(self) -> VariantResult:
        opts, result, rc = self.opts, self.result, self.rc
        deadline = time.monotonic() + opts.variant_budget_s
        result.core_speed = calibrate(RELAY_CORE)
        result.tree = tree_state()
        try:
            await self.h.set_mode(rc.mode_for(1))
            await rc.start_relay("ramp")
            await asyncio.sleep(1.0)
            result.idle = await self._footprint()
            await Ramp(rc, deadline).run()
            await self._profile_best()
            await rc.drop_all()
            await self.setup_bursts()
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await rc.drop_all()
            await rc.stop_relay()
        if opts.leak_calls > 0 and self.name.startswith("relay-"):
            try:
                await self.leak_check()
            except Exception as exc:
                result.notes.append(f"leak check failed: {type(exc).__name__}: {exc}")
                await rc.stop_relay()
        summarise(result)
        return result

    async def _footprint(self) -> dict[str, Any]:
        """The relay's RSS, threads, fds and asyncio tasks right now."""
        assert self.rc.relay is not None
        s = self.rc.relay.sample()
        stats = await self.rc.relay_stats()
        return {"rss_mb": s.rss_mb, "threads": s.threads, "fds": s.fds, "tasks": stats.get("tasks")}

    # -- profile --

    async def _profile_best(self) -> None:
        """With ``--profile``: back to the best passing N, and a profile window there."""
        passing = [p for p in self.result.points if p.passed]
        if not (self.opts.profile and passing):
            return
        best = max(passing, key=lambda p: p.n)
        await self.rc.use_mode(best.upstream)
        await self.rc.grow_to(best.n)
        await asyncio.sleep(2.0)
        await self.profile_window()

    async def profile_window(self) -> None:
        """cProfile of the relay's loop thread for a few seconds, at the current N."""
        rc = self.rc
        n = len(rc.calls) + len(rc.probes)
        path = self.h.logdir / f"{self.name}-n{n}.pstats"
        await self.h.post(f"{rc.base}/bench/profile", {"action": "start"})
        await asyncio.sleep(self.opts.profile_s)
        await self.h.post(f"{rc.base}/bench/profile", {"action": "stop", "path": str(path)})
        self.result.profile = profile_top(
            path, self.opts.profile_s, f"{n} calls in steady state, {self.opts.profile_s:g} s"
        )

    # -- setup time --

    async def setup_bursts(self) -> None:
        """``--setup-rounds`` bursts of ``--setup-calls`` calls set up at once (and, with
        ``--profile``, one more, profiled and not counted)."""
        opts, rc = self.opts, self.rc
        await self.h.set_mode(opts.setup_mode)
        self.result.setup_upstream = self.h.mode
        assert rc.relay is not None
        for round_ in range(opts.setup_rounds + (1 if opts.profile else 0)):
            if not await rc.wait_relay_idle():
                self.result.notes.append("setup: the relay still had calls before a burst")
            # The relay refuses calls while its loop lagged > 100 ms in the last 2 s
            # (admission control): let the previous burst's close storm age out.
            await asyncio.sleep(3.0)
            callers = rc.new_callers(opts.setup_calls)
            if opts.profile and round_ == opts.setup_rounds:
                await self._profiled_burst(callers)
            else:
                await self._burst(callers)

    async def _burst(self, callers: list[LoadCaller]) -> None:
        rc, result = self.rc, self.result
        assert rc.relay is not None
        offset = rc.relay.output_size()
        errors = await rc.connect(callers)
        result.setup_failed.extend(errors)
        result.setup_ms += [c.setup_ms for c in callers if c.setup_ms is not None]
        await asyncio.sleep(0.5)
        await rc.hangup(callers)
        text = rc.relay.output()[offset:]
        result.setup_relay_ms += [float(ms) for _, ms in SETUP_LOG.findall(text)]

    async def _profiled_burst(self, callers: list[LoadCaller]) -> None:
        rc, calls = self.rc, self.opts.setup_calls
        path = self.h.logdir / f"{self.name}-setup.pstats"
        await self.h.post(f"{rc.base}/bench/profile", {"action": "start"})
        started = time.monotonic()
        await rc.connect(callers)
        seconds = time.monotonic() - started
        await self.h.post(f"{rc.base}/bench/profile", {"action": "stop", "path": str(path)})
        self.result.setup_profile = profile_top(
            path, seconds, f"{calls} calls set up at once, {seconds:.2f} s"
        )
        await rc.hangup(callers)

    # -- leak check --

    async def leak_check(self) -> None:
        opts, rc = self.opts, self.rc
        leak = Leak()
        self.result.leak = leak
        await self.h.set_mode("emulator")
        await rc.start_relay("leak")
        started = time.monotonic()
        budget = started + max(120.0, opts.leak_calls * 0.6)
        every = 50 if opts.leak_calls >= 100 else max(10, opts.leak_calls // 5)
        next_sample = every
        try:
            while leak.calls < opts.leak_calls and time.monotonic() < budget:
                await self._leak_wave(leak, min(opts.leak_parallel, opts.leak_calls - leak.calls))
                if leak.calls >= next_sample:
                    next_sample += every
                    leak.samples.append(await self.leak_sample(leak.calls))
            if not leak.samples or leak.samples[-1]["calls"] != leak.calls:
                leak.samples.append(await self.leak_sample(leak.calls))
        finally:
            leak.seconds = time.monotonic() - started
            leak.calls_left = await rc.relay_calls()
            await rc.stop_relay()
        leak.verdict = leak_verdict(leak)

    async def _leak_wave(self, leak: Leak, k: int) -> None:
        """``k`` short calls: set up at once, a little audio, hung up."""
        callers = self.rc.new_callers(k)
        errors = await self.rc.connect(callers)
        leak.failed += len(errors)
        live = [c for c in callers if not c.closed]
        await self.rc.wait_media(live, 3, 5)
        await self.rc.hangup(live)
        leak.calls += k

    async def leak_sample(self, calls: int) -> dict[str, Any]:
        idle = await self.rc.wait_relay_idle(10)
        await asyncio.sleep(0.3)
        return {"calls": calls, "idle": idle, **(await self._footprint())}
