"""A call over ICE-TCP (profile b: only TCP to the relay's 443 gets through) on a link
that loses 1 % of its packets both ways (on the veth; nftables random drops, as netem
is not in every kernel): TCP retransmits, so a loss
delays what follows it (head-of-line blocking) but must not leave a lasting backlog.

Measured on the relay's side: the caller's audio frames arrive at 50 a second; over
~20 s of loss, the backlog (frames expected since the loss began minus frames
received) may spike after a retransmission but comes back down within a few seconds,
and ends near where it started. The browser's own view, the selected pair's
currentRoundTripTime (getStats), is reported alongside."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import wait_until
from netns import ClientNetwork
from playwright.async_api import expect
from relay_fixtures import ServeRelay
from tcp_only import chromium_inside, relay_on_443, tcp_only_net

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["tcp_only_net"]  # the fixture, imported for pytest

FRAMES_PER_SEC = 50
LOSS_SECS = 20.0
SAMPLE_SECS = 0.25
#: A backlog above this (frames; 300 ms) is a spike ...
SPIKE_FRAMES = 15
#: ... which must be over within this long.
RECOVERY_SECS = 4.0
#: At the end, the backlog is within this of the start (frames; 200 ms).
END_MARGIN_FRAMES = 10

RTT_JS = """async () => {
  const pc = window.realtimeApp.client.peerConnection;
  const stats = await pc.getStats();
  for (const r of stats.values()) {
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded')
      return r.currentRoundTripTime ?? null;
  }
  return null;
}"""


def spikes(backlog: list[tuple[float, int]]) -> list[tuple[float, float, int]]:
    """(start, duration, peak) of each stretch with the backlog above SPIKE_FRAMES."""
    found: list[tuple[float, float, int]] = []
    start: float | None = None
    peak = 0
    for t, value in backlog:
        if value > SPIKE_FRAMES:
            if start is None:
                start, peak = t, value
            peak = max(peak, value)
        elif start is not None:
            found.append((start, t - start, peak))
            start = None
    if start is not None:
        found.append((start, backlog[-1][0] - start, peak))
    return found


async def test_ice_tcp_call_rides_out_one_percent_loss(
    tcp_only_net: ClientNetwork,
    serve_relay: ServeRelay,
    launch: Any,
    open_page: Any,
    call_wav: Path,
    tmp_path: Path,
) -> None:
    relay = await relay_on_443(tcp_only_net, serve_relay, tmp_path, media_timeout_secs=10.0)
    browser = await chromium_inside(tcp_only_net, launch, call_wav)
    page = await open_page(browser, relay.url("/"))
    await page.page.get_by_role("button", name="Start call").click()
    await expect(page.page.locator("#status-text")).to_have_text("Connected", timeout=20000)
    call = relay.registry.get_call((await page.state())["callId"])
    assert call is not None
    await wait_until(lambda: call.caller_audio.frames_in > 100, 20, "caller audio")
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    assert pair is not None and pair["protocol"] == "tcp", pair

    tcp_only_net.lose(1)
    frames0, t0 = call.caller_audio.frames_in, time.monotonic()
    backlog: list[tuple[float, int]] = []
    rtts: list[float] = []
    while (now := time.monotonic()) - t0 < LOSS_SECS:
        expected = int((now - t0) * FRAMES_PER_SEC)
        backlog.append((now - t0, expected - (call.caller_audio.frames_in - frames0)))
        if len(backlog) % 4 == 0:
            rtt = await page.page.evaluate(RTT_JS)
            if rtt is not None:
                rtts.append(float(rtt))
        await asyncio.sleep(SAMPLE_SECS)

    assert call.state == "active", call.state
    lost = tcp_only_net.dropped()
    values = [v for _, v in backlog]
    start = min(values[: int(2 / SAMPLE_SECS)])
    end = sorted(values[-int(3 / SAMPLE_SECS) :])[len(values[-int(3 / SAMPLE_SECS) :]) // 2]
    found = spikes(backlog)
    summary = (
        f"{lost} packets dropped; backlog (frames) start {start}, end {end}, "
        f"max {max(values)}; spikes "
        f"{[(round(s, 1), round(d, 1), p) for s, d, p in found]}; browser RTT ms "
        f"{[round(r * 1000) for r in rtts]}"
    )
    print(summary)
    assert lost >= 10, summary  # the loss did happen (~2 packets a second)
    assert end - start <= END_MARGIN_FRAMES, summary
    assert all(duration <= RECOVERY_SECS for _, duration, _ in found), summary
    assert call.caller_audio.frames_in - frames0 >= (LOSS_SECS - 2) * FRAMES_PER_SEC, summary
