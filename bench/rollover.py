"""The gap at a rollover swap: how much caller and agent audio a renewal of the upstream
session costs (relay/upstream/rollover.py).

    .venv/bin/python -m bench.rollover [--seconds 60] [--cap 10] [--lead 5]

One call from an aiortc caller (real speech, 4 s, then 4 s of silence, looped) through
the relay to its built-in emulator, whose sessions are capped at ``--cap`` seconds, so
the call goes through a renewal about every ``cap - lead/2`` seconds. All in this
process, on 127.0.0.1, sharing one monotonic clock. For each swap:

* caller gap: from the last caller frame the old session received to the first the new
  one received (the emulator's decoder, i.e. what OpenAI would hear);
* agent gap (relay): from the last agent packet forwarded from the old session to the
  first from the new one;
* agent gap (caller): the longest interval between decoded agent frames at the caller
  around the swap (from 0.2 s before to 1 s after), beside the same statistic over the
  rest of the call (the jitter floor: p99 and max of every interval);
* caller frames: sent by the caller and received by all the sessions together (a new
  session first gets the last 5 frames the old one was sent, which its receive buffer, 4
  frames with aiortc's, still held: more frames are received than sent);
* prepare: opening the new session (key, ICE, DTLS, ``session.created``) and seeding
  it with the conversation, before any wait for a quiet moment.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import PacedAudioSource, realtime_client  # noqa: E402

from bench.common import gather_on  # noqa: E402
from bench.stages import speech_48k  # noqa: E402
from bench.table import Table, num  # noqa: E402
from relay.config import EmulatorSettings, Settings  # noqa: E402
from relay.embedded import EMULATOR, build_app  # noqa: E402
from relay.emulator.app import SESSIONS  # noqa: E402
from relay.emulator.registry import CallRegistry  # noqa: E402
from relay.http.state import REGISTRY  # noqa: E402
from relay.upstream.rollover import Renewal  # noqa: E402

WINDOW_BEFORE, WINDOW_AFTER = 0.2, 1.0


def caller_source() -> PacedAudioSource:
    speech = speech_48k()[: 4 * 48000]
    return PacedAudioSource(np.concatenate([speech, np.zeros(4 * 48000, np.int16)]), loop=True)


def longest_interval(arrival: list[float], start: float, end: float) -> float | None:
    times = [t for t in arrival if start <= t <= end]
    if len(times) < 2:
        return None
    return max(b - a for a, b in zip(times, times[1:], strict=False)) * 1000


async def run(args: argparse.Namespace) -> None:
    gather_on(["127.0.0.1"])
    settings = Settings(
        open_mode=True,
        ice_addresses=("127.0.0.1",),
        # One call on a shared machine: admission by loop load is not what is measured.
        max_loop_load=0.0,
        max_loop_lag_ms=2000.0,
        rollover_lead_secs=args.lead,
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), max_session_secs=args.cap),
    )
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, realtime_client(caller_source()) as client:
            url = str(server.make_url("/v1/realtime/calls"))
            response = await client.connect(http, url, "")
            assert response.status == 201, await response.text()
            call_id = response.headers["Location"].rsplit("/", 1)[-1]
            call = server.app[REGISTRY].get_call(call_id)
            assert call is not None
            await asyncio.sleep(args.seconds)
            sessions = server.app[EMULATOR][SESSIONS]
            renewals = list(call.rollover.renewals)
            relay_gaps = list(call.rollover.clock.gaps_ms)
            arrival = list(client.sink.arrival)
            sent = client.source.sent_frames
    finally:
        await server.close()
    report(args, renewals, sessions, relay_gaps, arrival)
    calls = sessions.calls()
    received = sum(session.received.frames for session in calls)
    print(f"caller frames: {sent} sent, {received} received by the {len(calls)} sessions")


def report(
    args: argparse.Namespace,
    renewals: list[Renewal],
    sessions: CallRegistry,
    relay_gaps: list[float],
    arrival: list[float],
) -> None:
    table = Table(
        "{:>3}  {:<10}{:>6}{:>12}{:>7}{:>16}{:>16}{:>17}",
        "#,reason,at s,prepare ms,items,caller gap ms,agent gap ms,agent gap ms",
    )
    print(f"one {args.seconds:g} s call, session cap {args.cap:g} s, lead {args.lead:g} s")
    print(table.layout.format("", "", "", "", "", "(OpenAI side)", "(at relay)", "(at caller)"))
    print("\n".join(table.head()))
    caller_gaps, caller_side = [], []
    start = arrival[0] if arrival else 0.0
    for index, renewal in enumerate(renewals):
        old, new = sessions.get(renewal.old_call_id), sessions.get(renewal.new_call_id)
        last = old.received.last_at if old is not None else None
        first = new.received.first_at if new is not None else None
        caller = (first - last) * 1000 if first is not None and last is not None else float("nan")
        heard = longest_interval(
            arrival,
            renewal.at - WINDOW_BEFORE,
            renewal.at + WINDOW_AFTER,
        )
        caller_gaps.append(caller)
        if heard is not None:
            caller_side.append(heard)
        relay_gap = relay_gaps[index] if index < len(relay_gaps) else None
        print(
            table.row(
                index + 1,
                renewal.reason,
                num(renewal.at - start, 1),
                num(renewal.prepare_secs * 1000, 0),
                renewal.items_carried,
                num(caller, 0),
                num(relay_gap, 0),
                num(heard, 0),
            )
        )
    floor = [b - a for a, b in zip(arrival, arrival[1:], strict=False)]
    floor_ms = sorted(x * 1000 for x in floor)
    if caller_gaps:
        print(
            f"caller gap ms: median {statistics.median(caller_gaps):.0f}, "
            f"max {max(caller_gaps):.0f}"
        )
    if relay_gaps:
        print(
            f"agent gap at the relay ms: median {statistics.median(relay_gaps):.0f}, "
            f"max {max(relay_gaps):.0f}"
        )
    if renewals:
        prepare = [r.prepare_secs * 1000 for r in renewals]
        quiet = sum(1 for r in renewals if r.reason == "rollover")
        print(
            f"prepare ms: median {statistics.median(prepare):.0f}, max {max(prepare):.0f}; "
            f"{quiet} of {len(renewals)} swaps at a quiet moment"
        )
    if caller_side and floor_ms:
        p99 = floor_ms[int(len(floor_ms) * 0.99)]
        print(
            f"agent gap at the caller ms: max {max(caller_side):.0f} around swaps; "
            f"whole call p99 {p99:.0f}, max {floor_ms[-1]:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cap", type=float, default=10.0)
    parser.add_argument("--lead", type=float, default=5.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
