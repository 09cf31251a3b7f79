"""One variant of ``bench.latency``: start the relay under test (if any), set one call
up through it to the probe, measure a window of tone onsets both ways with one RTP
packet dropped each way halfway through, and collect the figures."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from bench.common import noise_suppression_of
from bench.latency_peers import Caller, ProbeCall, ToneSource, VariantFailed
from bench.latency_probe import Probe
from bench.latency_ws import WsCaller
from bench.procs import Proc, clean_env, free_port, own_cpu
from bench.runinfo import relay_notes
from bench.tones import PERIOD, RATE, OnsetReceiver, match_onsets

WARMUP_S = 2.0
TAIL_S = 1.0  # keep receiving after the window, for late (stock) onsets
HEALTHZ_WAIT_S = 30.0

VARIANTS: dict[str, str] = {
    "direct": "caller <-> probe, no relay (harness floor)",
    "relay-off": "realtime-relay, noise suppression off",
    "relay-webrtc": "realtime-relay, noise suppression webrtc",
    "relay-rnnoise": "realtime-relay, noise suppression rnnoise",
    "relay-off-tcp": "realtime-relay, noise suppression off, caller over ICE-TCP",
    "relay-webrtc-tcp": "realtime-relay, noise suppression webrtc, caller over ICE-TCP",
    "relay-off-ws": "realtime-relay, noise suppression off, caller over the WebSocket",
    "relay-webrtc-ws": "realtime-relay, noise suppression webrtc, caller over the WebSocket",
    "relay-off-wsup": "realtime-relay, noise suppression off, WebSocket upstream",
    "relay-webrtc-wsup": "realtime-relay, noise suppression webrtc, WebSocket upstream",
    "stock": "stock aiortc relay (default jitter buffer, MediaRelay)",
    "stock-webrtc": "stock aiortc relay + livekit APM NS",
}
DEFAULT_VARIANTS = ("direct", "relay-off", "relay-off-tcp", "relay-off-ws", "relay-webrtc", "stock")


# -- results -------------------------------------------------------------------------


@dataclass
class Window:
    """Latencies (ms) of matched onsets in one window of one direction."""

    values: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float | None:
        return float(np.percentile(self.values, q)) if self.values else None

    @property
    def p50(self) -> float | None:
        return self.pct(50)

    @property
    def p90(self) -> float | None:
        return self.pct(90)

    @property
    def max(self) -> float | None:
        return max(self.values) if self.values else None


@dataclass
class Direction:
    before: Window = field(default_factory=Window)
    after: Window = field(default_factory=Window)
    unmatched: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_lost: int = 0
    packets_dropped: int = 0
    dc_messages: int = 0
    dc_p50_ms: float | None = None


@dataclass
class VariantResult:
    name: str
    up: Direction = field(default_factory=Direction)
    down: Direction = field(default_factory=Direction)
    error: str | None = None
    setup_ms: float | None = None
    relay_cpu_pct: float | None = None
    harness_cpu_pct: float | None = None
    relay_log: str | None = None
    relay_notes: list[str] = field(default_factory=list)


def fill_direction(
    d: Direction,
    source: ToneSource,
    receiver: OnsetReceiver,
    window: tuple[float, float],
) -> None:
    start, end = window
    drop = source.drop_time
    sent = [s for s in source.onsets if start <= s <= end]
    pairs = match_onsets(source.onsets, receiver.onsets, PERIOD / RATE)
    matched = {s for s, _ in pairs}
    d.unmatched = sum(1 for s in sent if s not in matched)
    for s, latency in pairs:
        if not start <= s <= end:
            continue
        if drop is None or s < drop:
            d.before.values.append(latency * 1000)
        else:
            d.after.values.append(latency * 1000)
    d.frames_sent = source.frames
    d.frames_received = receiver.frames
    d.frames_lost = receiver.lost_frames


# -- the relay under test --------------------------------------------------------------


def caller_for(variant: str) -> Caller | WsCaller:
    """The caller of a variant: WebRTC over UDP, ICE-TCP (``-tcp``) or the WebSocket
    caller leg (``-ws``)."""
    if variant.endswith("-ws"):
        return WsCaller()
    return Caller(transport="tcp" if variant.endswith("-tcp") else "udp")


def relay_process(variant: str, probe_url: str, logdir: Path) -> tuple[Proc, int]:
    """The relay of a variant (not started) and its port."""
    port = free_port()
    log = logdir / f"{variant}.log"
    if variant.startswith("relay-"):
        env = clean_env()
        env.update(
            OPENAI_API_KEY="sk-bench-not-a-real-key",
            OPENAI_BASE_URL=probe_url,
            RELAY_ICE_ADDRESSES="127.0.0.1",
            RELAY_WORKERS="1",  # one shard: the latency of one relay process
            RELAY_OPEN="1",
            RELAY_HOST="127.0.0.1",
            RELAY_PORT=str(port),
            RELAY_NOISE_SUPPRESSION=noise_suppression_of(variant),
            RELAY_UPSTREAM_TRANSPORT="websocket" if variant.endswith("-wsup") else "webrtc",
            # one call is measured, not admission: a busy shared machine must not refuse it
            RELAY_MAX_LOOP_LOAD="0",
            RELAY_MAX_LOOP_LAG_MS="2000",
        )
        script = Path(sys.executable).parent / "realtime-relay"  # the venv's console script
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "relay.cli"]
        argv.append("serve")
        return Proc(variant, argv, env, log), port
    ns = "webrtc" if variant == "stock-webrtc" else "off"
    argv = [sys.executable, "-m", "bench.stock_relay", "--port", str(port)]
    argv += ["--upstream", probe_url, "--noise-suppression", ns]
    return Proc(variant, argv, clean_env(), log), port


async def start_relay(relay: Proc, http: aiohttp.ClientSession, port: int) -> None:
    """Start ``relay`` and wait for its /healthz (VariantFailed if it never answers)."""
    await relay.start()
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        await relay.wait_http(http, url, HEALTHZ_WAIT_S, request_timeout=1)
    except RuntimeError:
        if relay.alive:
            raise VariantFailed(
                f"{relay.name}: GET {url} did not answer 200 in {HEALTHZ_WAIT_S} s"
            ) from None
        raise VariantFailed(
            f"{relay.name} exited with code {relay.returncode} before /healthz"
        ) from None


# -- one variant -----------------------------------------------------------------------


@dataclass
class Context:
    """What the variants of a run share."""

    probe: Probe
    http: aiohttp.ClientSession
    seconds: float
    logdir: Path


class VariantRun:
    def __init__(self, name: str, ctx: Context) -> None:
        self.name = name
        self.ctx = ctx
        self.probe = ctx.probe
        self.result = VariantResult(name)
        self.relay: Proc | None = None
        self.caller: Caller | WsCaller | None = None
        self.probe_call: ProbeCall | None = None

    async def run(self) -> VariantResult:
        self.probe.reset()
        try:
            url = await self._calls_url()
            caller, probe_call = await self._connect(url)
            await self._measure(caller, probe_call)
        except Exception as exc:
            detail = str(exc) or repr(exc)
            if not isinstance(exc, VariantFailed):
                detail = "".join(traceback.format_exception(exc)).strip()
            self.result.error = detail
        finally:
            await self._close()
        return self.result

    async def _calls_url(self) -> str:
        """Where the caller POSTs its offer: the relay's (started here) or the probe's."""
        if self.name == "direct":
            return f"{self.probe.base_url}/realtime/calls"
        self.relay, port = relay_process(self.name, self.probe.base_url, self.ctx.logdir)
        self.result.relay_log = str(self.relay.log)
        await start_relay(self.relay, self.ctx.http, port)
        return f"http://127.0.0.1:{port}/v1/realtime/calls"

    async def _connect(self, url: str) -> tuple[Caller | WsCaller, ProbeCall]:
        """The call, up to the first audio frame at both ends."""
        self.caller = caller = caller_for(self.name)
        started = time.monotonic()
        await asyncio.wait_for(caller.connect(self.ctx.http, url), 30)
        self.result.setup_ms = (time.monotonic() - started) * 1000
        try:
            self.probe_call = probe_call = await asyncio.wait_for(self.probe.next_call(), 5)
        except TimeoutError:
            raise VariantFailed(
                f"the call was answered but no call reached the probe (probe saw "
                f"{self.probe.requests or 'no requests'})"
            ) from None
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    caller.receiver.first_frame.wait(), probe_call.receiver.first_frame.wait()
                ),
                15,
            )
        except TimeoutError:
            raise VariantFailed(
                "no audio within 15 s of set-up: caller received "
                f"{caller.receiver.frames} frames (sent {caller.source.frames}), probe "
                f"received {probe_call.receiver.frames} (sent {probe_call.source.frames})"
            ) from None
        return caller, probe_call

    async def _measure(self, caller: Caller | WsCaller, probe_call: ProbeCall) -> None:
        """The window: warm-up, half, one packet dropped each way, the other half."""
        relay, seconds = self.relay, self.ctx.seconds
        t0 = time.monotonic()
        cpu0, harness0 = (relay.cpu_seconds() if relay else None), own_cpu()
        window = (t0 + WARMUP_S, t0 + seconds)
        await asyncio.sleep(WARMUP_S + (seconds - WARMUP_S) / 2)
        assert probe_call.dropper is not None
        caller.source.drop_one_packet(caller.dropper.arm)
        probe_call.source.drop_one_packet(probe_call.dropper.arm)
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        elapsed = time.monotonic() - t0
        cpu1, harness1 = (relay.cpu_seconds() if relay else None), own_cpu()
        await asyncio.sleep(TAIL_S)
        self._fill(caller, probe_call, window)
        if cpu0 is not None and cpu1 is not None:
            self.result.relay_cpu_pct = (cpu1 - cpu0) / elapsed * 100
        self.result.harness_cpu_pct = (harness1 - harness0) / elapsed * 100

    def _fill(
        self, caller: Caller | WsCaller, probe_call: ProbeCall, window: tuple[float, float]
    ) -> None:
        result = self.result
        assert probe_call.dropper is not None
        fill_direction(result.up, caller.source, probe_call.receiver, window)
        fill_direction(result.down, probe_call.source, caller.receiver, window)
        result.up.packets_dropped = caller.dropper.dropped
        result.down.packets_dropped = probe_call.dropper.dropped
        for d, dc in ((result.up, probe_call.dc), (result.down, caller.dc)):
            d.dc_messages = len(dc.latencies)
            if dc.latencies:
                d.dc_p50_ms = float(np.median(dc.latencies)) * 1000

    async def _close(self) -> None:
        ends = [end for end in (self.caller, self.probe_call) if end is not None]
        await asyncio.gather(*(end.close() for end in ends), return_exceptions=True)
        if self.probe_call is not None:
            self.probe.forget(self.probe_call)
        await self.probe.close_strays()  # a probe call answered after the variant failed
        if self.relay is not None:
            await self._stop_relay(self.relay)

    async def _stop_relay(self, relay: Proc) -> None:
        code = await relay.stop()
        output = relay.output()
        notes = relay_notes(output)
        if code not in (0, None, -signal.SIGTERM):
            notes.append(f"(exited with code {code})")
        if self.result.error is not None and not notes:
            notes = output.strip().splitlines()[-15:]
        self.result.relay_notes = notes


async def run_variant(name: str, ctx: Context) -> VariantResult:
    return await VariantRun(name, ctx).run()
