"""A capacity model for a fleet, from per-call figures measured by ``bench.cluster``."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: IPv4 (20) + UDP (8) + RTP (12) + SRTP tag (10) bytes around each Opus payload; TURN's
#: ChannelData adds 4.
PACKET_OVERHEAD_BYTES = 50
TURN_OVERHEAD_BYTES = 4


@dataclass(frozen=True)
class Measured:
    cpu_per_call: float  # cores one call takes on a relay node (its process)
    ops_per_setup: float
    bytes_per_setup: float
    ops_per_call_minute: float
    bytes_per_call_minute: float
    ops_per_node_minute: float  # heartbeats, beside the calls' refreshes
    bytes_per_node_minute: float
    media_bytes_per_sec: float  # one direction of one call, payload + headers
    packets_per_sec: float  # one direction of one call


@dataclass(frozen=True)
class Assumptions:
    calls: int = 10_000
    cores_per_node: int = 8
    max_loop_load: float = 0.7  # RELAY_MAX_LOOP_LOAD: the admission bound per shard
    mean_call_minutes: float = 3.0
    turn_share: float = 1.0  # the share of calls whose media goes through TURN
    calls_per_core: float = 0.0  # 0: max_loop_load / the measured CPU per call


def model(m: Measured, a: Assumptions) -> list[tuple[str, str]]:
    """Rows of (figure, value) for the README."""
    calls_per_core = a.calls_per_core or a.max_loop_load / m.cpu_per_call
    shards = math.ceil(a.calls / calls_per_core)
    nodes = math.ceil(shards / a.cores_per_node)
    setups_per_sec = a.calls / (a.mean_call_minutes * 60)
    ops_per_sec = (
        setups_per_sec * m.ops_per_setup
        + a.calls * m.ops_per_call_minute / 60
        + shards * m.ops_per_node_minute / 60
    )
    redis_bytes = (
        setups_per_sec * m.bytes_per_setup
        + a.calls * m.bytes_per_call_minute / 60
        + shards * m.bytes_per_node_minute / 60
    )
    turn_calls = a.calls * a.turn_share
    # TURN carries each direction twice (browser <-> TURN, TURN <-> relay).
    per_direction = m.media_bytes_per_sec + TURN_OVERHEAD_BYTES * m.packets_per_sec
    turn_bits = turn_calls * 2 * 2 * per_direction * 8
    turn_pps = turn_calls * 2 * 2 * m.packets_per_sec
    return [
        ("concurrent calls", f"{a.calls:,}"),
        ("calls per core", f"{calls_per_core:.1f}"),
        (f"relay nodes ({a.cores_per_node} cores, one shard per core)", f"{nodes}"),
        (
            f"call set-ups per second (mean call {a.mean_call_minutes:g} min)",
            f"{setups_per_sec:.0f}",
        ),
        ("Redis operations per second", f"{ops_per_sec:,.0f}"),
        ("Redis traffic (in + out)", f"{redis_bytes * 8 / 1e6:.1f} Mbit/s"),
        (f"TURN traffic ({a.turn_share:.0%} of calls relayed)", f"{turn_bits / 1e9:.2f} Gbit/s"),
        ("TURN packets per second", f"{turn_pps:,.0f}"),
    ]
