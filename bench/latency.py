"""Added one-way latency of the relay, per direction, with a stock aiortc relay as baseline.

    .venv/bin/python -m bench.latency [--seconds 15] [--variants direct,relay-off,...]

Method (tone onset, ``reference/aiortc-notes.md`` §5.3): both ends of the call live in
this process and send paced 48 kHz audio with 1 kHz tone bursts (100 ms on, 400 ms
off, 0.5 FS, digital silence otherwise; every onset lands mid-frame):

* the *caller*: an aiortc PC that creates the ``oai-events`` data channel before its
  offer, POSTs the offer (``application/sdp``) to ``/v1/realtime/calls`` and decodes
  the downlink;
* the *upstream probe*: a tiny aiohttp server with OpenAI's GA endpoints
  (``/v1/realtime/client_secrets``, ``/v1/realtime/calls``, ``.../hangup``) whose
  answering PC decodes the uplink and sends its own bursts downlink.

Source onset = monotonic time the source track's ``recv()`` returned the frame holding
the onset + the onset's offset in it; received onset = monotonic time the decoded frame
came out of ``recv()`` + the offset of its first sample above 0.2 FS. Each received onset
is matched to the latest source onset before it (less than one 500 ms period). The relay
runs in its own process; all processes share CLOCK_MONOTONIC.

The harness uses the project's pass-through jitter buffer (``relay.aiortc_patches``)
so it adds as little as possible; ``direct`` (caller <-> probe, no relay) measures that
floor, and "added" is a variant's p50 minus the floor's. Halfway through the measured
window each sending end drops exactly one RTP packet (mid-silence) by skipping it in
its DTLS transport's ``_send_rtp``; the "after loss" columns use onsets sent after it.

Variants: ``direct``; ``relay-off`` / ``relay-webrtc`` / ``relay-rnnoise``
(``realtime-relay serve`` with ``RELAY_NOISE_SUPPRESSION``); ``relay-off-tcp`` /
``relay-webrtc-tcp``: the same, with the caller's media over ICE-TCP only (an active
candidate to the relay's passive one on its HTTP port, ``bench/ice_tcp_client.py``;
the relay <-> probe leg stays UDP); ``relay-off-ws`` / ``relay-webrtc-ws``: the caller
over the relay's WebSocket caller leg (``bench/latency_ws.py``: 24 kHz PCM16 frames,
paced, events as text frames; TCP loses nothing, so its "after loss" columns have no
loss on the caller's leg), so one run shows all three transports; ``relay-off-wsup`` /
``relay-webrtc-wsup``: the relay with ``RELAY_UPSTREAM_TRANSPORT=websocket`` (the probe
answers OpenAI's WebSocket transport too: ``bench/latency_ws_probe.py``); ``stock`` /
``stock-webrtc`` (``bench/stock_relay.py``: stock aiortc, MediaRelay forwarding).
Everything is on 127.0.0.1, with no STUN/TURN server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import aiohttp

from bench.common import gather_on, parse_variants, write_json
from bench.latency_probe import Probe
from bench.latency_report import report
from bench.latency_run import DEFAULT_VARIANTS, VARIANTS, Context, VariantResult, run_variant
from bench.runinfo import machine_lines


async def run_all(
    variants: Sequence[str], probe: Probe, seconds: float, logdir: Path
) -> list[VariantResult]:
    """Each variant in turn (bounded: a variant that hangs is reported as timed out)."""
    results: list[VariantResult] = []
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        ctx = Context(probe, http, seconds, logdir)
        for name in variants:
            print(f"running {name} ({VARIANTS[name]}), {seconds:g} s ...", file=sys.stderr)
            try:
                result = await asyncio.wait_for(run_variant(name, ctx), seconds + 90)
            except TimeoutError:
                result = VariantResult(name, error="timed out")
            results.append(result)
            if result.error:
                first = result.error.splitlines()[0]
                print(f"  {name} FAILED: {first}", file=sys.stderr)
    return results


async def run(variants: Sequence[str], seconds: float, json_path: Path | None) -> int:
    gather_on(["127.0.0.1"])
    logdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    header = machine_lines()
    for line in header:
        print(line, flush=True)
    probe = Probe()
    await probe.start()
    try:
        results = await run_all(variants, probe, seconds, logdir)
    finally:
        await probe.stop()
    print()
    print(report(results, seconds), flush=True)
    print(f"\nrelay logs: {logdir}")
    if json_path is not None:
        data = {
            "machine": header,
            "seconds": seconds,
            "results": [asdict(r) for r in results],
        }
        write_json(json_path, data)
    return 1 if any(r.error for r in results) else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Added one-way latency through the relay (tone-onset method), per "
        "direction, before and after one lost packet, against a stock aiortc relay.",
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="measured seconds per variant (default 15)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)}; 'all' for every one "
        f"(default {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    names = parse_variants(parser, args.variants, VARIANTS, allow_all=True)
    if args.seconds < 6:
        parser.error("--seconds must be at least 6 (2 s warm-up, then before/after the loss)")
    sys.exit(asyncio.run(run(names, args.seconds, args.json)))


if __name__ == "__main__":
    main()
