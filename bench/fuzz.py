"""A longer run of the fuzz tests' generators (``tests/fuzzing.py``) against a relay
started in this process on 127.0.0.1: HTTP requests from a thread (rounds of new
examples, each round its own seed) while a live call takes generated data-channel
events, until ``--seconds`` have passed. Prints what was tried, 5xx answers, crashes
(log records with a traceback), problems, and leaks (fds, threads, tasks, RSS).

.venv/bin/python -m bench.fuzz --seconds 60 [--mode keys|open] [--round 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis.errors import HypothesisWarning

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzzing import (  # noqa: E402
    ALWAYS_ADMIT,
    FuzzEvent,
    FuzzStats,
    LogWatch,
    client_events,
    draw,
    fuzz_http,
    healthz,
    routes_of,
    send_events,
)
from relay_fixtures import BASE_SETTINGS  # noqa: E402
from support import RealtimeClient  # noqa: E402

from bench.common import gather_on  # noqa: E402
from bench.procs import open_fds, rss_mb, threads  # noqa: E402
from relay.config import Secret  # noqa: E402
from relay.embedded import build_app  # noqa: E402
from relay.http.ops_routes import OPS  # noqa: E402
from relay.http.state import CLIENT_SECRETS, REGISTRY  # noqa: E402
from relay.ops.recording import read_metadata  # noqa: E402

RELAY_KEY = "bench-fuzz-relay-key-6c1e0b9a8f7d"
ADMIN = "bench-fuzz-admin-token-2d4f6a8c0e1b"
METRICS = "bench-fuzz-metrics-token-9a7c5e3b1d0f"
MAX_EVENT_BYTES = 8192


@dataclass
class Leaks:
    fds: int
    threads: int
    tasks: int
    rss_mb: float

    @classmethod
    def now(cls) -> Leaks:
        pid = os.getpid()
        return cls(
            open_fds(pid) or 0, threads(pid) or 0, len(asyncio.all_tasks()), rss_mb(pid) or 0.0
        )


@dataclass
class EventsRun:
    sent: int = 0
    refused: int = 0
    rounds: int = 0
    calls: int = 0
    calls_lost: int = 0
    mismatches: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def relay(mode: str, folder: Path) -> AsyncIterator[TestServer]:
    secured: dict[str, Any] = {}
    if mode == "keys":
        secured = {
            "open_mode": False,
            "relay_api_key": Secret(RELAY_KEY),
            "admin_token": Secret(ADMIN),
            "metrics_token": Secret(METRICS),
            "enable_direct_session": True,
            "cors_origins": ("https://app.fuzz.example",),
        }
    settings = replace(
        BASE_SETTINGS,
        max_event_bytes=MAX_EVENT_BYTES,
        recording_policy="all",
        recording_dir=str(folder / "recordings"),
        recording_retention_days=0,
        # This process also generates the requests: on a loaded machine the loop may
        # stall for seconds, which must not hang up the call the events go to.
        media_timeout_secs=30.0,
        **ALWAYS_ADMIT,
        **secured,
    )
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def open_call(server: TestServer, http: aiohttp.ClientSession, token: str) -> RealtimeClient:
    client = RealtimeClient()
    response = await client.connect(http, str(server.make_url("/v1/realtime/calls")), token)
    if response.status != 201:
        await client.close()
        raise RuntimeError(f"call refused: {response.status} {await response.text()}")
    await client.wait_for("session.created", timeout=10)
    return client


async def fuzz_events(
    server: TestServer,
    token: str,
    deadline: float,
    batches: list[list[FuzzEvent]],
    run: EventsRun,
) -> None:
    """Batches of generated events on a live call (a new call if one ended), in turn
    until ``deadline``. (Drawn beforehand: two Hypothesis runs at once in two threads,
    this and the HTTP one, are not something Hypothesis promises to support.)"""
    async with aiohttp.ClientSession() as http:
        client: RealtimeClient | None = None
        try:
            while time.monotonic() < deadline:
                if client is None:
                    client = await open_call(server, http, token)
                    run.calls += 1
                events = batches[run.rounds % len(batches)]
                outcome = await send_events(client, events, timeout=20)
                run.rounds += 1
                run.sent += outcome.sent
                run.refused += outcome.refused
                run.mismatches += outcome.mismatches[: max(0, 20 - len(run.mismatches))]
                call_id = (client.location or "").rsplit("/", 1)[-1]
                call = server.app[REGISTRY].get_call(call_id)
                if call is None or call.state != "active":
                    run.calls_lost += 1
                    run.mismatches.append(f"call {call_id} ended: {ended_how(server, call_id)}")
                    await client.close()
                    client = None
        finally:
            if client is not None:
                await client.close()


def ended_how(server: TestServer, call_id: str) -> str:
    """A call's outcome, from its recording (the registry forgets ended calls)."""
    recorder = server.app[OPS].recorder
    folder = recorder.find(call_id) if recorder is not None else None
    metadata = read_metadata(folder) if folder is not None else None
    return str(metadata.get("outcome")) if metadata else "unknown"


def fuzz_http_rounds(
    port: int,
    routes: list[Any],
    tokens: tuple[str, ...],
    deadline: float,
    per_round: int,
    watch: LogWatch,
    stats: FuzzStats,
) -> int:
    rounds = 0
    while time.monotonic() < deadline:
        fuzz_http(
            [port],
            routes,
            tokens=tokens,
            secrets=tokens,
            examples=per_round,
            watch=watch,
            stats=stats,
            seed=rounds,
            fail_fast=False,
        )
        rounds += 1
    return rounds


async def sample_rss(deadline: float, every: float, samples: list[float]) -> None:
    while time.monotonic() < deadline:
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
        samples.append(rss_mb(os.getpid()) or 0.0)


#: Batches of events drawn before the run (each its own seed), sent in turn.
EVENT_BATCHES = 8


async def main(seconds: float, mode: str, per_round: int) -> int:
    gather_on(["127.0.0.1"])
    tokens = (RELAY_KEY, ADMIN, METRICS) if mode == "keys" else ()
    token = RELAY_KEY if mode == "keys" else ""
    batches = [
        draw(client_events(MAX_EVENT_BYTES), per_round, seed) for seed in range(EVENT_BATCHES)
    ]
    stats, events = FuzzStats(), EventsRun()
    with tempfile.TemporaryDirectory(prefix="relay-fuzz-") as folder, LogWatch() as watch:
        async with relay(mode, Path(folder)) as server:
            port = int(server.port or 0)
            # Draining would end the live call the events go to (tests/test_fuzz_http.py
            # fuzzes it, with no call to lose).
            routes = [r for r in routes_of(server.app) if r.template != "/admin/drain"]
            # Warm up (first imports, first call, the emulator's first session) before
            # the baseline, so that only what the fuzzing leaves behind is counted.
            await fuzz_events(server, token, time.monotonic() + 0.1, [batches[0][:20]], EventsRun())
            await asyncio.to_thread(
                fuzz_http_rounds,
                port,
                routes,
                tokens,
                time.monotonic() + 0.1,
                50,
                watch,
                FuzzStats(),
            )
            gc.collect()
            await asyncio.sleep(1.0)
            before = Leaks.now()
            started = time.monotonic()
            deadline = started + seconds
            rss: list[float] = []
            http_rounds, _, _ = await asyncio.gather(
                asyncio.to_thread(
                    fuzz_http_rounds, port, routes, tokens, deadline, per_round, watch, stats
                ),
                fuzz_events(server, token, deadline, batches, events),
                sample_rss(deadline, seconds / 6, rss),
            )
            elapsed = time.monotonic() - started
            alive = await asyncio.to_thread(healthz, port)
            calls_left = len(server.app[REGISTRY])
            secrets_held = len(server.app[CLIENT_SECRETS])
            await asyncio.sleep(2.0)  # closing calls and connections settle
            gc.collect()
            after = Leaks.now()
    print_report(
        mode, elapsed, stats, http_rounds, events, watch, alive, calls_left, before, after, rss
    )
    print(f"client secrets held at the end: {secrets_held}")
    failed = stats.server_errors or stats.problems or watch.tracebacks or events.mismatches
    return 1 if failed or alive != 200 else 0


def print_report(
    mode: str,
    elapsed: float,
    stats: FuzzStats,
    http_rounds: int,
    events: EventsRun,
    watch: LogWatch,
    alive: int,
    calls_left: int,
    before: Leaks,
    after: Leaks,
    rss: list[float],
) -> None:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(stats.statuses.items()))
    print(f"bench.fuzz: {elapsed:.0f} s against a relay in this process ({mode}), 127.0.0.1")
    print(
        f"HTTP: {stats.cases} cases in {http_rounds} rounds ({stats.cases / elapsed:.0f}/s), "
        f"{len([r for r in stats.routes if r])} routes aimed at"
    )
    print(f"  statuses: {statuses}")
    print(
        f"  5xx: {stats.server_errors} (and {stats.documented_5xx} documented 503s: full, "
        f"lagging), no answer: {stats.no_answer}, "
        f"parser refusals (plain 400): {stats.parser_refusals}, problems: {len(stats.problems)}"
    )
    for problem in stats.problems[:5]:
        print(f"    {problem[:400]}")
    print(
        f"events: {events.sent} sent in {events.rounds} rounds on {events.calls} call(s) "
        f"({events.refused} refused by the relay), calls lost: {events.calls_lost}, "
        f"mismatches: {len(events.mismatches)}"
    )
    for mismatch in events.mismatches[:5]:
        print(f"    {mismatch[:400]}")
    print(
        f"crashes (log records with a traceback): {len(watch.tracebacks)} "
        f"(of {watch.records} records)"
    )
    for crash in watch.tracebacks[:5]:
        print(f"    {crash}")
    calls = [w for w in watch.warnings if "relay.call" in w or "went quiet" in w]
    print(f"warnings: {len(watch.warnings)}; about calls: {calls[:5]}")
    print(f"after: /healthz {alive}, calls left {calls_left}")
    print(
        "leaks (after - before): "
        f"fds {after.fds - before.fds:+d} ({before.fds} -> {after.fds}), "
        f"threads {after.threads - before.threads:+d} ({before.threads} -> {after.threads}), "
        f"tasks {after.tasks - before.tasks:+d} ({before.tasks} -> {after.tasks}), "
        f"RSS {after.rss_mb - before.rss_mb:+.1f} MB ({before.rss_mb:.1f} -> {after.rss_mb:.1f})"
    )
    print(f"RSS during the run (MB): {', '.join(f'{r:.0f}' for r in rss)}")
    print(f"threads now: {', '.join(sorted(t.name for t in threading.enumerate()))}")


def cli() -> None:
    # The live call's aiortc and aioice draw from ``random`` on the loop thread while
    # Hypothesis generates in the HTTP one: it would warn that a strategy used it.
    warnings.filterwarnings("ignore", category=HypothesisWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mode", choices=("keys", "open"), default="keys")
    parser.add_argument("--round", type=int, default=200, help="examples per round")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.seconds, args.mode, args.round)))


if __name__ == "__main__":
    cli()
