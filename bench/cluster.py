"""What the fleet's call directory costs: Redis operations and bytes per call set-up and
per minute of call, call set-up time with the directory and without, and a capacity
model for 10,000 concurrent calls built from the measured per-call figures.

    python -m bench.cluster [--setups 12] [--calls 4] [--hold 30] [--cores-per-node 8]

Runs on 127.0.0.1 only: a ``redis-server`` of its own, the emulator, two relay nodes
sharing the directory (A, B) and one without it (C), all ``--workers 1``. A set-up is
the whole flow of a fleet: mint on A (the official route, API key), call on B with that
secret (the secret is looked up in Redis), a snapshot and the hangup through A
(forwarded to B: the owner looked up). Redis' own counters (``INFO commandstats``,
``INFO stats``) are read after ``CONFIG RESETSTAT``, less the heartbeats' idle rate.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.cluster_model import PACKET_OVERHEAD_BYTES, Assumptions, Measured, model
from bench.cluster_redis import RedisCounts, RedisMeter
from bench.common import gather_on
from bench.load_callers import LoadCaller
from bench.load_lean import audio_transceiver
from bench.load_media import EncodedLoop, caller_signal, encode_opus, load_speech
from bench.procs import Proc, clean_env, free_port
from relay import aiortc_patches
from relay.cluster.directory import CallDirectory

OPENAI_KEY = "sk-bench-cluster-0123456789"
RELAY_KEY = "relay-bench-cluster-0123456789"
ADMIN = "admin-bench-cluster-0123456789"
#: ``realtime-relay``, as this checkout's (the processes run in the repository).
BIN = [sys.executable, "-m", "relay.cli"]
IDLE_SECS = 15.0
#: The nodes' heartbeat: a third of RELAY_CLUSTER_CALL_TTL_SECS (its default, 15 s).
HEARTBEAT_SECS = 5.0


class Bench:
    def __init__(self, folder: Path, loop: EncodedLoop) -> None:
        self.folder = folder
        self.loop = loop
        self.redis = RedisMeter(folder)
        self.emulator_port = free_port()
        self.ports = {name: free_port() for name in "ABC"}
        self.procs: dict[str, Proc] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def _node_env(self, name: str) -> dict[str, str]:
        env = clean_env() | {
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.emulator_port}/v1",
            "RELAY_API_KEY": RELAY_KEY,
            "RELAY_ADMIN_TOKEN": ADMIN,
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            # measure, do not refuse, on a shared machine
            "RELAY_MAX_LOOP_LOAD": "0",
            "RELAY_MAX_LOOP_LAG_MS": "10000",
        }
        if name != "C":
            env |= {
                "RELAY_REDIS_URL": self.redis.url,
                "RELAY_CLUSTER_TOKEN": "bench-cluster-token",
                "RELAY_NODE_URL": self.url(name),
            }
        return env

    async def start(self, http: aiohttp.ClientSession) -> None:
        await self.redis.start()
        emulator_env = clean_env() | {
            "RELAY_EMULATOR_API_KEYS": OPENAI_KEY,
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            "RELAY_EMULATOR_RECOGNITION": "0",
            "RELAY_EMULATOR_REAL_VOICE": "0",
        }
        argv = [*BIN, "emulator", "--port", str(self.emulator_port)]
        self.procs["emulator"] = Proc("emulator", argv, emulator_env, self.folder / "emu.log")
        for name, port in self.ports.items():
            argv = [*BIN, "serve", "--port", str(port), "--workers", "1"]
            self.procs[name] = Proc(name, argv, self._node_env(name), self.folder / f"{name}.log")
        for proc in self.procs.values():
            await proc.start()
        await self.procs["emulator"].wait_http(
            http, f"http://127.0.0.1:{self.emulator_port}/healthz", 60
        )
        for name in self.ports:
            await self.procs[name].wait_http(http, f"{self.url(name)}/readyz", 60)

    async def stop(self) -> None:
        for proc in self.procs.values():
            await proc.stop()
        await self.redis.stop()

    async def mint(self, http: aiohttp.ClientSession, node: str) -> str:
        async with http.post(
            f"{self.url(node)}/v1/realtime/client_secrets",
            json={"session": {"type": "realtime"}},
            headers={"Authorization": f"Bearer {RELAY_KEY}"},
        ) as response:
            response.raise_for_status()
            value: str = (await response.json())["value"]
            return value

    async def setup(self, http: aiohttp.ClientSession, mint_on: str, call_on: str) -> float:
        """One call's whole life through the fleet (or one node); its set-up in ms."""
        secret = await self.mint(http, mint_on)
        caller = LoadCaller(self.loop, None)
        auth = {"Authorization": f"Bearer {secret}"}
        async with aiohttp.ClientSession(headers=auth) as own:
            try:
                await caller.connect(own, f"{self.url(call_on)}/v1/realtime/calls")
                admin = {"Authorization": f"Bearer {ADMIN}"}
                async with http.get(
                    self.url(mint_on) + caller.location.replace("/v1/realtime/calls", "/api/calls"),
                    headers=admin,
                ) as response:
                    response.raise_for_status()
                await caller.hangup(own, self.url(mint_on))
            finally:
                await caller.pc.close()
        assert caller.setup_ms is not None
        return caller.setup_ms


class PayloadCounter:
    """A caller's downlink: Opus packets and payload bytes (aiortc's inbound stats have
    no byte count)."""

    def __init__(self, caller: LoadCaller) -> None:
        self.packets = 0
        self.bytes = 0
        receiver = audio_transceiver(caller.pc).receiver
        aiortc_patches.audio_buffer_of(receiver).packet_sink = self

    def __call__(self, payload: bytes, timestamp: int) -> None:
        self.packets += 1
        self.bytes += len(payload)


async def _media_totals(
    callers: list[LoadCaller], downlinks: list[PayloadCounter]
) -> tuple[float, float, float, float]:
    """Payload bytes and packets sent, and received, summed over ``callers``."""
    sent_b = sent_p = 0.0
    for caller in callers:
        for stats in (await caller.pc.getStats()).values():
            if stats.type == "outbound-rtp":
                sent_b += stats.bytesSent
                sent_p += stats.packetsSent
    recv_b = float(sum(d.bytes for d in downlinks))
    recv_p = float(sum(d.packets for d in downlinks))
    return sent_b, sent_p, recv_b, recv_p


async def hold(bench: Bench, count: int, secs: float) -> dict[str, Any]:
    """``count`` calls on B for ``secs``: Redis' counts, B's CPU, the callers' media."""
    callers: list[LoadCaller] = []
    sessions: list[aiohttp.ClientSession] = []
    downlinks: list[PayloadCounter] = []
    async with aiohttp.ClientSession() as http:
        try:
            for _ in range(count):
                secret = await bench.mint(http, "B")
                own = aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"})
                sessions.append(own)
                caller = LoadCaller(bench.loop, None)
                callers.append(caller)
                downlinks.append(PayloadCounter(caller))
                await caller.connect(own, f"{bench.url('B')}/v1/realtime/calls")
            await asyncio.sleep(3)  # media flowing
            start_media = await _media_totals(callers, downlinks)
            cpu_before = bench.procs["B"].cpu_seconds() or 0.0
            await bench.redis.reset()
            call_secs = await _alive_seconds(callers, secs)
            counts = await bench.redis.read()
            cpu = (bench.procs["B"].cpu_seconds() or 0.0) - cpu_before
            end_media = await _media_totals(callers, downlinks)
        finally:
            for caller, own in zip(callers, sessions, strict=False):
                await caller.hangup(own, bench.url("B"))
                await caller.pc.close()
            for own in sessions:
                await own.close()
    media = [(e - s) / call_secs for s, e in zip(start_media, end_media, strict=True)]
    return {"redis": counts, "cpu": cpu, "media": media, "call_secs": call_secs}


async def _alive_seconds(callers: list[LoadCaller], secs: float) -> float:
    """Wait ``secs``; the call-seconds the callers were up meanwhile (on a busy machine
    a call may end early, e.g. ``upstream_failed``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + secs
    total = 0.0
    while (now := loop.time()) < end:
        step = min(0.5, end - now)
        alive = sum(1 for caller in callers if not caller.ended)
        await asyncio.sleep(step)
        total += alive * step
    return total


async def directory_round_trip(url: str, count: int = 200) -> list[float]:
    """How long the relay's own directory client takes for one lookup, in ms."""
    directory = CallDirectory(url)
    value = "ek_" + "0" * 32
    try:
        await directory.put_secret(value, {"type": "realtime"}, int(time.time()) + 60)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await directory.get_secret(value)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await directory.close()
    return times


def _per(counts: RedisCounts, n: float) -> str:
    by_command = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.commands.items()))
    return f"{counts.total / n:.2f} ops ({by_command}); {counts.bytes_in / n:.0f} B in, " + (
        f"{counts.bytes_out / n:.0f} B out"
    )


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    digits = 0 if p90 >= 10 else 2
    median = statistics.median(values)
    return f"median {median:.{digits}f} ms, p90 {p90:.{digits}f} ms (n={len(values)})"


@dataclass
class Results:
    idle: RedisCounts  # the heartbeats of A and B, no call
    cpu_idle: float  # node B's, cores
    setups: RedisCounts
    with_dir: list[float]
    without: list[float]
    held: dict[str, Any]
    round_trip: list[float]


async def measure(bench: Bench, http: aiohttp.ClientSession, args: argparse.Namespace) -> Results:
    await bench.start(http)
    await bench.redis.reset()
    cpu_idle = bench.procs["B"].cpu_seconds() or 0.0
    await asyncio.sleep(IDLE_SECS)
    idle = await bench.redis.read()
    cpu_idle = ((bench.procs["B"].cpu_seconds() or 0.0) - cpu_idle) / idle.secs
    with_dir: list[float] = []
    without: list[float] = []
    await bench.setup(http, "A", "B")  # warm-up: first connections, imports
    await bench.setup(http, "C", "C")
    await bench.redis.reset()
    for index in range(args.setups):  # alternated: neither always goes first
        if index % 2:
            without.append(await bench.setup(http, "C", "C"))
        with_dir.append(await bench.setup(http, "A", "B"))
        if not index % 2:
            without.append(await bench.setup(http, "C", "C"))
    # the owner drops an ended call's entry at its next heartbeat
    await asyncio.sleep(HEARTBEAT_SECS + 0.5)
    batch = await bench.redis.read()
    held = await hold(bench, args.calls, args.hold)
    round_trip = await directory_round_trip(bench.redis.url)
    setups = batch.minus(idle, batch.secs)
    return Results(idle, cpu_idle, setups, with_dir, without, held, round_trip)


def report(r: Results, args: argparse.Namespace) -> Measured:
    """Print the measured figures; what the model takes from them."""
    held, call_secs = r.held, r.held["call_secs"]
    if call_secs < args.calls * args.hold * 0.95:
        print(f"(of {args.calls} calls held {args.hold:g} s, {call_secs:.0f} call-seconds")
        print(" were up: per-minute figures are per call-minute actually up)")
    call_minutes = call_secs / 60
    per_minute = held["redis"].minus(r.idle, args.hold)
    node_minutes = 2 * r.idle.secs / 60
    print(f"Redis per call set-up (mint, call, snapshot, hangup): {_per(r.setups, args.setups)}")
    print(
        f"Redis per minute of call ({args.calls} calls held {args.hold:g} s): "
        f"{_per(per_minute, call_minutes)}"
    )
    print(f"Redis per node per minute, no calls (heartbeat): {_per(r.idle, node_minutes)}")
    print(f"one directory lookup (GET of a client secret): {_ms(r.round_trip)}")
    print(f"set-up (POST offer -> 201), with the directory: {_ms(r.with_dir)}")
    print(f"set-up (POST offer -> 201), without:            {_ms(r.without)}")
    sent_b, sent_p, recv_b, recv_p = held["media"]
    print(
        f"caller media per call: sent {sent_b * 8 / 1000:.1f} kbit/s ({sent_p:.0f} pkt/s), "
        f"received {recv_b * 8 / 1000:.1f} kbit/s ({recv_p:.0f} pkt/s), Opus payload"
    )
    cpu_per_call = max(1e-3, (held["cpu"] - r.cpu_idle * args.hold) / call_secs)
    print(f"relay CPU per call: {cpu_per_call:.3f} core (node idle: {r.cpu_idle:.3f})")
    packets = max(sent_p, recv_p)
    return Measured(
        cpu_per_call=cpu_per_call,
        ops_per_setup=r.setups.total / args.setups,
        bytes_per_setup=(r.setups.bytes_in + r.setups.bytes_out) / args.setups,
        ops_per_call_minute=per_minute.total / call_minutes,
        bytes_per_call_minute=(per_minute.bytes_in + per_minute.bytes_out) / call_minutes,
        ops_per_node_minute=r.idle.total / node_minutes,
        bytes_per_node_minute=(r.idle.bytes_in + r.idle.bytes_out) / node_minutes,
        media_bytes_per_sec=max(sent_b, recv_b) + PACKET_OVERHEAD_BYTES * packets,
        packets_per_sec=packets,
    )


async def run(args: argparse.Namespace) -> None:
    gather_on(["127.0.0.1"])
    loop = EncodedLoop(encode_opus(caller_signal(load_speech()[0])))
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-cluster-")), loop)
    async with aiohttp.ClientSession() as http:
        try:
            results = await measure(bench, http, args)
        finally:
            await bench.stop()
    measured = report(results, args)
    assumptions = Assumptions(
        cores_per_node=args.cores_per_node,
        turn_share=args.turn_share,
        calls_per_core=args.calls_per_core,
    )
    print("\ncapacity model (media each way at the larger measured rate, plus headers):")
    for name, value in model(measured, assumptions):
        print(f"  {name:<58} {value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--setups", type=int, default=20, help="call set-ups measured (each way)")
    parser.add_argument("--calls", type=int, default=4, help="calls held at once")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds they are held")
    parser.add_argument("--cores-per-node", type=int, default=8)
    parser.add_argument("--turn-share", type=float, default=1.0)
    parser.add_argument(
        "--calls-per-core",
        type=float,
        default=0.0,
        help="instead of RELAY_MAX_LOOP_LOAD / the measured CPU per call",
    )
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
