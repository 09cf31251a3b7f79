"""Capacity of the relay per core: N synthetic callers through the relay to the emulator.

    .venv/bin/python -m bench.load                 # full run (~15-20 min)
    .venv/bin/python -m bench.load --quick         # smoke version (~2-3 min)
    .venv/bin/python -m bench.load --variants relay-off --calls 1,8,16,32 --json out.json
    .venv/bin/python -m bench.load --variants relay-webrtc,relay-webrtc-tcp   # UDP vs ICE-TCP
    .venv/bin/python -m bench.load --variants relay-off,relay-off-tcp,relay-off-ws  # + WebSocket

Processes (all on 127.0.0.1, no STUN/TURN, ``RTCConfiguration(iceServers=[])``):

* **the relay under test**, pinned to core 0 (``os.sched_setaffinity`` in the child
  before exec): ``realtime-relay serve`` (``RELAY_WORKERS=1``, ``RELAY_NOISE_SUPPRESSION``
  webrtc/off) or the stock aiortc relay of ``bench/stock_relay.py``, both through
  ``bench/load_relayproc.py``, which only adds ``GET /bench/stats`` (asyncio task count,
  event-loop lag) and, on demand, a cProfile window;
* **the upstream**, pinned to core 1: ``bench/load_upstream.py``, the project's emulator
  (``create_emulator_app``) behind a middleware that can instead answer with a cheap
  stand-in (``light``: counts the uplink, sends a pre-encoded speech loop) and answers
  the latency probe's call;
* **the callers** in this process, pinned to core 1 (with a ``-tcp`` variant, over
  ICE-TCP only: ``bench/ice_tcp_client.py``; with a ``-ws`` one, over the WebSocket
  caller leg, 24 kHz PCM16 frames of the same speech, no probes: ``bench/load_ws.py``):
  aiortc peer connections sending
  pre-encoded browser-like Opus (libopus mono 32 kb/s ``voip``, real speech), through the
  lean RTP path of ``bench/load_lean.py``. Up to ``--probes`` (2) of the N callers are
  *probes*: they send tone bursts through aiortc's own sender and decode the downlink,
  and their upstream end is a probe stand-in that decodes the uplink and sends tone
  bursts down (the latency of both directions comes from these calls, pooled).

For each variant the relay is started fresh and N is ramped up (calls stay up between
points); at each N, after a warm-up, a window measures: relay CPU (``/proc/<pid>/stat``
utime+stime over the window; the main thread's share from ``/proc/<pid>/task/<pid>``),
frames delivered upstream (counted by the emulator / stand-in) and downstream (counted
by the callers) against the nominal 50 per call-second, the tone-onset latency of the
probe calls in both directions minus a direct (no relay) floor, the relay's RSS,
threads, fds, tasks and loop lag, the load side's own loop lag, pacing and CPU, and
the busy time of both cores (``/proc/stat``) and the load average, so that other work
on the machine shows. A point whose load side lagged is marked LOAD and not counted.
Then 20 calls are set up at once (a few rounds) for the setup time, and, for the relay
variants, a fresh relay takes ``--leak-calls`` short calls one wave after another while
its RSS, threads, fds and tasks are sampled every 50 calls.

Modules: ``load_options`` (variants, options, command line), ``load_harness`` (the
upstream, the callers' media, the direct floor), ``load_variant`` (one variant, start to
end) with ``load_calls`` (its relay and calls), ``load_ramp`` and ``load_measure`` (the
points), ``load_verdicts`` (status, capacity, leaks), ``load_results`` (the figures),
``load_report`` and ``load_targets`` (the printout), ``load_profile`` (cProfile).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.common import gather_on, write_json
from bench.load_harness import Harness
from bench.load_options import LOAD_CORE, VARIANTS, Options, parse_options
from bench.load_report import report
from bench.load_results import VariantResult
from bench.load_variant import VariantRun
from bench.runinfo import machine_lines, tree_state


def _prepare(opts: Options) -> None:
    """This process (the callers) on the load core, at the run's niceness, loopback only."""
    os.sched_setaffinity(0, {LOAD_CORE})
    if opts.nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, opts.nice)
    gather_on(["127.0.0.1"])


async def _variants(harness: Harness, opts: Options) -> list[VariantResult]:
    """The floor, then each variant in turn."""
    results: list[VariantResult] = []
    try:
        await harness.start()
        await harness.measure_floor()
        print(harness.floor_note, file=sys.stderr, flush=True)
        for name in opts.variants:
            print(f"{name}: {VARIANTS[name]}", file=sys.stderr, flush=True)
            results.append(await VariantRun(harness, name).run())
    finally:
        await harness.stop()
    return results


def _write_json(
    opts: Options, header: list[str], harness: Harness, results: list[VariantResult]
) -> None:
    if opts.json is None:
        return
    data = {
        "machine": header,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "floor_ms": {"up": harness.floor_up, "down": harness.floor_down},
        "speech": harness.speech_source,
        "results": [asdict(r) for r in results],
    }
    write_json(opts.json, data)


async def run(opts: Options) -> int:
    cores = os.cpu_count() or 1
    if cores < 2 or not hasattr(os, "sched_setaffinity"):
        print("bench.load needs 2 cores and os.sched_setaffinity", file=sys.stderr)
        return 2
    header = [*machine_lines(), tree_state()]
    _prepare(opts)
    logdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    started = time.monotonic()
    for line in header:
        print(line, flush=True)
    harness = Harness(opts, logdir)
    print(f"speech: {harness.speech_source}; logs: {logdir}", flush=True)
    results = await _variants(harness, opts)
    end_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(report(results, harness.floor_note, opts))
    print(
        f"\nrun took {(time.monotonic() - started) / 60:.1f} min; load average at the end "
        f"{end_load}; relay and upstream logs in {logdir}"
    )
    _write_json(opts, header, harness, results)
    return 1 if any(r.error for r in results) else 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(asyncio.run(run(parse_options(argv))))


if __name__ == "__main__":
    main()
