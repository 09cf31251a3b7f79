"""The relay under test of one ``bench.load`` variant and the calls through it.

The relay runs pinned to the relay core, through ``bench/load_relayproc.py`` (which
adds ``GET /bench/stats`` and, on demand, a cProfile window). Calls are *bulk* calls
(lean RTP, to the emulator or to the light stand-in: the upstream's *mode*) or
*probe* calls (tone bursts both ways, answered by the upstream's probe stand-ins);
a point with N calls has ``min(--probes, N)`` probes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp

from bench.common import noise_suppression_of
from bench.load_callers import CallFailed, LoadCaller
from bench.load_harness import Harness
from bench.load_options import RELAY_CORE
from bench.load_results import VariantResult
from bench.load_ws import LoadWsCaller, frames_of
from bench.procs import Proc, clean_env, free_port
from bench.runinfo import dedupe, relay_notes

#: A bulk caller: WebRTC (UDP or ICE-TCP) or the WebSocket leg.
AnyCaller = LoadCaller | LoadWsCaller


class RelayCalls:
    """One relay variant's process and its live calls."""

    def __init__(self, harness: Harness, name: str, result: VariantResult) -> None:
        self.h = harness
        self.opts = harness.opts
        self.name = name
        #: How the callers' media reaches the relay: UDP, ICE-TCP only (``-tcp``) or
        #: the WebSocket caller leg (``-ws``, :mod:`bench.load_ws`).
        self.transport = {"-tcp": "tcp", "-ws": "websocket"}.get(name[name.rfind("-") :], "udp")
        self._ws_frames: list[bytes] | None = None
        self.result = result
        self.relay: Proc | None = None
        self.port = 0
        self.calls: list[AnyCaller] = []
        self.calls_mode = ""
        #: The probe callers and the id of the upstream probe that answered each.
        self.probes: list[tuple[LoadCaller, str]] = []

    # -- relay process --

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self, upstream_url: str) -> tuple[list[str], dict[str, str]]:
        """The relay's argv and environment (the project's relay or the stock one)."""
        env = clean_env()
        if self.name.startswith("relay-"):
            env.update(
                OPENAI_API_KEY=self.h.key,
                OPENAI_BASE_URL=upstream_url,
                RELAY_ICE_ADDRESSES="127.0.0.1",
                RELAY_OPEN="1",
                RELAY_HOST="127.0.0.1",
                RELAY_PORT=str(self.port),
                RELAY_NOISE_SUPPRESSION=noise_suppression_of(self.name),
                RELAY_WORKERS="1",
            )
            return [sys.executable, "-m", "bench.load_relayproc", "relay", "serve"], env
        ns = self.name.removeprefix("stock-")
        argv = [sys.executable, "-m", "bench.load_relayproc", "stock"]
        argv += ["--port", str(self.port), "--upstream", upstream_url]
        argv += ["--api-key", self.h.key, "--noise-suppression", ns]
        return argv, env

    async def start_relay(self, tag: str) -> None:
        self.port = free_port()
        argv, env = self._command(f"{self.h.base_up}/v1")
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
        """The relay's own count of live calls (None: it did not say)."""
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

    async def connect(self, callers: list[AnyCaller]) -> list[str]:
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

    async def hangup(self, callers: list[AnyCaller]) -> None:
        """Hang these callers up at once (best effort)."""
        assert self.h.http is not None
        http = self.h.http
        await asyncio.gather(*(c.hangup(http, self.base) for c in callers), return_exceptions=True)

    async def wait_media(self, callers: list[AnyCaller], packets: int, timeout: float) -> int:
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
        probes = 0 if self.transport == "websocket" else min(self.opts.probes, n)
        return probes, n - probes

    def new_callers(self, k: int) -> list[AnyCaller]:
        """``k`` bulk callers (not connected yet)."""
        if self.transport == "websocket":
            if self._ws_frames is None:
                self._ws_frames = frames_of(self.h.caller_loop)
            return [LoadWsCaller(self._ws_frames) for _ in range(k)]
        return [
            LoadCaller(self.h.caller_loop, self.h.pump, transport=self.transport) for _ in range(k)
        ]

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
            new = self.new_callers(k)
            errors = await self.connect(new)
            if errors:
                raise CallFailed(f"{len(errors)} of {k} calls failed to set up: {errors[0]}")
            self.calls.extend(new)
            self.calls_mode = self.h.mode
            missing = await self.wait_media(new, 5, 15)
            if missing:
                raise CallFailed(f"{missing} of {k} new calls got no downlink audio in 15 s")

    async def drop_all(self) -> None:
        callers = self.calls + [c for c, _ in self.probes]
        self.calls, self.probes = [], []
        await self.hangup(callers)

    async def drop_bulk(self) -> None:
        callers, self.calls = self.calls, []
        await self.hangup(callers)
        await asyncio.sleep(0.5)

    async def connect_probe(self) -> None:
        """One more probe call (set up alone, so the newest upstream probe is its)."""
        known = {probe_id for _, probe_id in self.probes}
        await self.h.post(f"{self.h.base_up}/bench/probe")
        probe = LoadCaller(self.h.probe_loop, None, probe=True, transport=self.transport)
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

    # -- the upstream's mode --

    async def use_mode(self, mode: str) -> None:
        """New calls go to ``mode``'s upstream; calls stay with the upstream that
        answered them, so calls of the other kind are set up again."""
        if mode == "probe":
            return
        if self.calls and self.calls_mode != mode:
            await self.drop_bulk()
        await self.h.set_mode(mode)

    def mode_for(self, n: int) -> str:
        """Where the bulk calls of a point with ``n`` calls go (probes always go to the
        upstream's probe stand-ins)."""
        if self.opts.upstream != "auto":
            return self.opts.upstream
        return "emulator" if self.split(n)[1] <= self.opts.emulator_max else "light"
