"""The upstream of ``bench.load``: the project's OpenAI emulator, plus bench hooks.

    python -m bench.load_upstream --port P --key sk-... [--mode emulator|light]

One aiohttp app, ``relay.emulator.app.create_emulator_app`` unchanged, with a
middleware in front of it and a few ``/bench/*`` routes:

* ``emulator`` mode: calls go to the emulator (it decodes every uplink frame, runs its
  VAD and answers speech with agent audio; silence otherwise, always 50 frames/s).
* ``light`` mode: calls are answered by a cheap stand-in (no decode, no encode): the
  uplink packets are counted and the downlink is a paced, pre-encoded speech loop, both
  through the lean RTP path of :mod:`bench.load_lean`, with ~5 JSON events/s on
  ``oai-events``. Used for the points
  where the emulator itself would be the bottleneck of the shared load core.
* the *probes*: once armed (``POST /bench/probe``), the next call is answered by a
  probe that decodes the uplink and finds tone onsets, and sends pre-encoded tone
  bursts down whose send times it records (``GET /bench/probe``: every live probe,
  oldest first).

``GET /bench/stats`` sums the per-call counters (frames in/out), and returns this
process's event-loop lag since the previous call. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from bench.common import LagProbe, basic_logging, drain, gather_on, lag_summary, rtc_config
from bench.load_lean import IdleTrack, Pump, RtpStream, audio_transceiver, count_incoming_rtp
from bench.load_media import (
    EncodedLoop,
    PacketCounter,
    PacketSource,
    agent_signal,
    encode_opus,
    encoded_probe_loop,
    load_speech,
)
from bench.procs import own_cpu
from bench.tones import OnsetReceiver
from relay import aiortc_patches
from relay.config import EmulatorSettings, Secret
from relay.emulator.app import SESSIONS, create_emulator_app
from relay.emulator.registry import CallRegistry

logger = logging.getLogger("bench.load_upstream")

EVENT_INTERVAL_S = 0.2
#: What the stand-ins' transcript-like events say, a word at a time.
TRANSCRIPT = "sure let me check that order for you it ships on thursday"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StandInCall:
    """A light call (counts the uplink) or the probe call (decodes it, finds onsets)."""

    def __init__(
        self,
        call_id: str,
        loop: EncodedLoop,
        probe: bool,
        pump: Pump,
        on_closed: Callable[[StandInCall], None] | None = None,
    ) -> None:
        self.id = call_id
        self.on_closed = on_closed
        self.probe = probe
        self.pc = RTCPeerConnection(rtc_config())
        self._loop = loop
        self._pump = pump
        self.source = PacketSource(loop, 0, record_onsets=True) if probe else None
        self.stream: RtpStream | None = None
        self.counter = PacketCounter()
        self.receiver = OnsetReceiver() if probe else None
        self.channel: RTCDataChannel | None = None
        self.events_sent = 0
        self.events_received = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.receiver is not None:
            self.receiver.start(track)
        elif track.kind != "audio":
            self._tasks.append(asyncio.ensure_future(drain(track)))

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is None:
            self.channel = channel
            channel.on("message", self._on_message)
            self.send({"type": "session.created", "session": {"id": "sess_" + self.id}})

    def _on_message(self, message: str | bytes) -> None:
        self.events_received += 1

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed") and not self.closed:
            self._tasks.append(asyncio.ensure_future(self.close()))

    def send(self, event: dict[str, Any]) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(event))
            self.events_sent += 1

    @property
    def sent(self) -> int:
        if self.source is not None:
            return self.source.sent
        return self.stream.sent if self.stream is not None else 0

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        aiortc_patches.adopt(self.pc)
        self.pc.addTrack(self.source if self.source is not None else IdleTrack())
        transceiver = audio_transceiver(self.pc)
        if self.source is not None:
            buffer = aiortc_patches.audio_buffer_of(transceiver.receiver)
            buffer.packet_sink = self.counter
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        if self.source is None:
            count_incoming_rtp(self.pc, self.counter.count)
            offset = random.randrange(len(self._loop.packets))
            self.stream = RtpStream(transceiver, self._loop.packets, offset)
            self._pump.add(self.stream)
        return str(self.pc.localDescription.sdp)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.receiver is not None:
            await self.receiver.stop()
        if self.stream is not None:
            self._pump.remove(self.stream)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        if self.on_closed is not None:
            self.on_closed(self)


class Bench:
    """The bench hooks' state (one per process)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.probe_armed = False
        self.probes: dict[str, StandInCall] = {}
        self.light: dict[str, StandInCall] = {}
        self.ended_in = 0  # uplink packets of light calls that have closed
        self.ended_out = 0
        self.ended_probe_in = 0
        self.ended_probe_out = 0
        self.lag = LagProbe(0.01)
        self.pump = Pump()
        speech, self.speech_source = load_speech()
        self.agent_loop = EncodedLoop(encode_opus(agent_signal(speech)))
        self.probe_loop = encoded_probe_loop()
        self._ticker: asyncio.Task[None] | None = None
        self._seq = 0
        #: The emulator's per-call counts as last seen, by call id: it remembers only
        #: its last few ended calls, so totals are kept here (sampled every tick).
        self.emulator_seen: dict[str, tuple[int, int, int, int]] = {}
        self.emulator_sessions: CallRegistry | None = None

    def start(self) -> None:
        self.lag.start()
        self.pump.start()
        self._ticker = asyncio.ensure_future(self._events())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self.lag.stop()
        await self.pump.stop()
        calls = list(self.light.values()) + list(self.probes.values())
        await asyncio.gather(*(c.close() for c in calls), return_exceptions=True)

    async def _events(self) -> None:
        """~5 transcript-like events per second on every stand-in call's channel."""
        words = TRANSCRIPT.split()
        while True:
            await asyncio.sleep(EVENT_INTERVAL_S)
            self._seq += 1
            self.sample_emulator()
            calls = list(self.light.values()) + list(self.probes.values())
            for call in calls:
                call.send(
                    {
                        "type": "response.output_audio_transcript.delta",
                        "event_id": f"event_{self._seq}",
                        "response_id": "resp_bench",
                        "item_id": "item_bench",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": words[self._seq % len(words)] + " ",
                    }
                )

    def sample_emulator(self) -> None:
        registry = self.emulator_sessions
        if registry is None:
            return
        for c in registry.calls():
            counts = (c.received.frames, c.track.frames_sent, c.track.audio_frames_sent)
            self.emulator_seen[c.id] = (*counts, len(c.server_events))

    async def create_call(self, request: web.Request) -> web.Response:
        offer = await request.text()
        probe = self.probe_armed
        self.probe_armed = False
        prefix = "rtc_probe_" if probe else "rtc_light_"
        loop = self.probe_loop if probe else self.agent_loop
        call = StandInCall(prefix + secrets.token_hex(8), loop, probe, self.pump, self._closed)
        try:
            answer = await call.answer(offer)
        except Exception as exc:
            await call.close()
            return web.json_response(
                {"error": {"message": f"bench upstream: {exc!r}", "type": "invalid_request"}},
                status=400,
            )
        if probe:
            self.probes[call.id] = call
        else:
            self.light[call.id] = call
        return web.Response(
            status=201,
            body=answer.encode(),
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call.id}"},
        )

    def _closed(self, call: StandInCall) -> None:
        if self.probes.get(call.id) is call:
            del self.probes[call.id]
            self.ended_probe_in += call.counter.packets
            self.ended_probe_out += call.sent
        if self.light.get(call.id) is call:
            del self.light[call.id]
            self.ended_in += call.counter.packets
            self.ended_out += call.sent

    async def hangup(self, call_id: str) -> web.Response:
        call = self.light.get(call_id) or self.probes.get(call_id)
        if call is not None:
            await call.close()
        return web.json_response({})


BENCH = web.AppKey("bench", Bench)


@web.middleware
async def bench_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    bench = request.app[BENCH]
    path = request.path
    if request.method == "POST":
        if path == "/v1/realtime/calls" and (bench.probe_armed or bench.mode == "light"):
            return await bench.create_call(request)
        if path.startswith("/v1/realtime/calls/rtc_probe_") or path.startswith(
            "/v1/realtime/calls/rtc_light_"
        ):
            return await bench.hangup(path.split("/")[4])
    return await handler(request)


def _sum_emulator(app: web.Application) -> dict[str, Any]:
    """Totals over every call the bench has seen (live or ended, sampled every tick, so
    the deltas over a window stay right when calls end), and the live calls' own uplink
    counts."""
    bench, registry = app[BENCH], app[SESSIONS]
    bench.sample_emulator()
    seen = bench.emulator_seen.values()
    return {
        "active": len(registry.active),
        "frames_in": sum(s[0] for s in seen),
        "frames_out": sum(s[1] for s in seen),
        "audio_frames_out": sum(s[2] for s in seen),
        "events_out": sum(s[3] for s in seen),
        "per_call_in": [c.received.frames for c in registry.active.values()],
    }


async def stats(request: web.Request) -> web.Response:
    bench = request.app[BENCH]
    light = list(bench.light.values())
    probes = list(bench.probes.values())
    t = own_cpu()
    ticks, late_ticks, max_late = bench.pump.take_lateness()
    body = {
        "pump": {"ticks": ticks, "late_ticks": late_ticks, "max_late_ms": max_late * 1000},
        "mode": bench.mode,
        "monotonic": time.monotonic(),
        "cpu_s": t,
        "lag": lag_summary(bench.lag.take()),
        "emulator": _sum_emulator(request.app),
        "light": {
            "active": len(light),
            "frames_in": bench.ended_in + sum(c.counter.packets for c in light),
            "frames_out": bench.ended_out + sum(c.sent for c in light),
            "per_call_in": [c.counter.packets for c in light],
        },
        "probe": {
            "active": len(probes),
            "frames_in": bench.ended_probe_in + sum(c.counter.packets for c in probes),
            "frames_out": bench.ended_probe_out + sum(c.sent for c in probes),
        },
        "speech": bench.speech_source,
    }
    return web.json_response(body)


async def probe_arm(request: web.Request) -> web.Response:
    request.app[BENCH].probe_armed = True
    return web.json_response({"armed": True})


async def probe_get(request: web.Request) -> web.Response:
    """Every live probe, oldest first: its uplink onsets (received) and downlink onsets
    (sent), monotonic seconds."""
    out = []
    for probe in request.app[BENCH].probes.values():
        receiver = probe.receiver
        out.append(
            {
                "id": probe.id,
                "up_onsets": receiver.onsets if receiver else [],
                "up_frames": probe.counter.packets,
                "down_onsets": probe.source.onsets if probe.source else [],
                "down_sent": probe.sent,
            }
        )
    return web.json_response({"probes": out})


async def set_mode(request: web.Request) -> web.Response:
    body = await request.json()
    mode = body.get("mode")
    if mode not in ("emulator", "light"):
        return web.json_response({"error": "mode: emulator or light"}, status=400)
    request.app[BENCH].mode = mode
    return web.json_response({"mode": mode})


def create_app(key: str, port: int, mode: str) -> web.Application:
    settings = EmulatorSettings(
        host="127.0.0.1", port=port, api_keys=(Secret(key),), ice_addresses=("127.0.0.1",)
    )
    app = create_emulator_app(settings)
    app.middlewares.append(bench_middleware)
    bench = Bench(mode)
    app[BENCH] = bench
    bench.emulator_sessions = app[SESSIONS]
    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/probe", probe_arm)
    app.router.add_get("/bench/probe", probe_get)
    app.router.add_post("/bench/mode", set_mode)

    async def lifetime(app: web.Application) -> Any:
        bench.start()
        yield
        await bench.stop()

    app.cleanup_ctx.append(lifetime)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load_upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True, help="the standard API key to accept")
    parser.add_argument("--mode", choices=["emulator", "light"], default="emulator")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    basic_logging(args.log_level)
    gather_on(["127.0.0.1"])
    app = create_app(args.key, args.port, args.mode)
    web.run_app(
        app, host="127.0.0.1", port=args.port, print=None, access_log=None, shutdown_timeout=5
    )


if __name__ == "__main__":
    main()
