"""What ``bench.load`` keeps across variants: the upstream process (pinned to the load
core), the callers' media and pacing, the HTTP client, and the direct latency floor;
and ``calibrate``, the speed of a core just before a variant runs."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.common import LagProbe
from bench.load_callers import LoadCaller
from bench.load_lean import Pump
from bench.load_media import (
    EncodedLoop,
    caller_signal,
    encode_opus,
    encoded_probe_loop,
    load_speech,
)
from bench.load_options import LOAD_CORE, Options
from bench.load_results import latency_stats, onset_latencies
from bench.procs import Proc, clean_env, free_port
from bench.tones import RATE


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
