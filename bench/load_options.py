"""The variants and options of ``bench.load``, and its command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import parse_variants

VARIANTS: dict[str, str] = {
    "relay-webrtc": "realtime-relay, noise suppression webrtc (the default)",
    "relay-off": "realtime-relay, noise suppression off",
    "stock-webrtc": "stock aiortc relay (default jitter buffer, MediaRelay, PyAV "
    "resampling) + livekit APM NS per frame",
    "stock-off": "stock aiortc relay, no noise suppression",
    "relay-webrtc-tcp": "realtime-relay, noise suppression webrtc, callers over ICE-TCP",
    "relay-off-tcp": "realtime-relay, noise suppression off, callers over ICE-TCP",
    "relay-webrtc-ws": "realtime-relay, noise suppression webrtc, callers over the WebSocket",
    "relay-off-ws": "realtime-relay, noise suppression off, callers over the WebSocket",
}
#: The ``-tcp`` variants (callers reach the relay over ICE-TCP only, on its HTTP port:
#: bench/ice_tcp_client.py) and the ``-ws`` ones (the WebSocket caller leg:
#: bench/load_ws.py) are asked for by name.
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if not v.endswith(("-tcp", "-ws")))
#: The relay under test runs on one core, the callers and the upstream on the other.
RELAY_CORE, LOAD_CORE = 0, 1


@dataclass
class Options:
    variants: list[str]
    calls: list[int] | None
    window_s: float
    warmup_s: float
    leak_calls: int
    leak_parallel: int
    setup_calls: int
    setup_rounds: int
    upstream: str
    emulator_max: int
    probes: int
    max_calls: int
    profile: bool
    profile_s: float
    floor_s: float
    variant_budget_s: float
    nice: int
    quick: bool
    json: Path | None

    @property
    def setup_mode(self) -> str:
        """Where the calls of the set-up bursts go."""
        return "light" if self.upstream == "light" else "emulator"


def parse_calls(text: str) -> list[int] | None:
    if text in ("", "auto"):
        return None
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or values[0] < 1:
        raise ValueError("--calls: positive integers")
    return values


def _add_point_args(parser: argparse.ArgumentParser) -> None:
    """What is measured: variants, calls, windows, set-up bursts, the leak check."""
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated from {', '.join(VARIANTS)} (default: all but the -tcp ones)",
    )
    parser.add_argument(
        "--calls", default="auto", help="N values, e.g. 1,4,8,16 (default: a ramp to saturation)"
    )
    parser.add_argument("--window-secs", type=float, default=None, help="measured window (15)")
    parser.add_argument("--warmup-secs", type=float, default=None, help="warm-up per point (4)")
    parser.add_argument("--leak-calls", type=int, default=None, help="leak-check calls (500)")
    parser.add_argument("--leak-parallel", type=int, default=4, help="calls per leak wave (4)")
    parser.add_argument("--setup-calls", type=int, default=20, help="calls set up at once (20)")
    parser.add_argument("--setup-rounds", type=int, default=None, help="bursts per variant (3)")


def _add_harness_args(parser: argparse.ArgumentParser) -> None:
    """How the load side runs: upstream, probes, limits, profile, niceness, output."""
    parser.add_argument(
        "--upstream",
        choices=["auto", "emulator", "light"],
        default="auto",
        help="auto (default): bulk calls go to the emulator up to --emulator-max of them, "
        "to the light stand-in above",
    )
    parser.add_argument(
        "--emulator-max",
        type=int,
        default=2,
        help="with --upstream auto: most bulk calls on the emulator (2)",
    )
    parser.add_argument("--probes", type=int, default=2, help="latency-probe calls among the N (2)")
    parser.add_argument("--max-calls", type=int, default=80)
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the cProfile window at the best N"
    )
    parser.add_argument("--profile-secs", type=float, default=8.0)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the relay, upstream and callers (e.g. -5 to shield them "
        "from other work on the machine; needs root for negative values)",
    )
    parser.add_argument("--quick", action="store_true", help="a ~3-minute smoke version")
    parser.add_argument("--json", type=Path, help="also write every figure here")


def _options(args: argparse.Namespace, names: list[str], calls: list[int] | None) -> Options:
    """The options of a run: the flags, and the defaults of a full or a quick one."""
    quick = args.quick
    if quick and calls is None:
        calls = [1, 4, 8]
    return Options(
        variants=names,
        calls=calls,
        window_s=args.window_secs or (5.0 if quick else 15.0),
        warmup_s=args.warmup_secs or (2.0 if quick else 4.0),
        leak_calls=args.leak_calls if args.leak_calls is not None else (40 if quick else 500),
        leak_parallel=max(1, args.leak_parallel),
        setup_calls=args.setup_calls,
        setup_rounds=args.setup_rounds or (1 if quick else 3),
        upstream=args.upstream,
        emulator_max=args.emulator_max,
        probes=max(1, args.probes),
        max_calls=args.max_calls,
        profile=not args.no_profile and not quick,
        profile_s=args.profile_secs,
        floor_s=4.0 if quick else 8.0,
        variant_budget_s=120.0 if quick else 330.0,
        nice=args.nice,
        quick=quick,
        json=args.json,
    )


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Capacity per core of the relay (and of a stock aiortc relay): CPU per "
        "call, calls per core, RSS per call, setup time, leaks.",
    )
    _add_point_args(parser)
    _add_harness_args(parser)
    args = parser.parse_args(argv)
    names = parse_variants(parser, args.variants, VARIANTS, allow_all=False)
    try:
        calls = parse_calls(args.calls)
    except ValueError as exc:
        parser.error(str(exc))
    opts = _options(args, names, calls)
    if opts.window_s < 3:
        parser.error("--window-secs must be at least 3")
    return opts
