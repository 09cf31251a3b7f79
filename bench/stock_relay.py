"""A stock aiortc relay, in the style of aiortc's server example: the baseline of
``bench.latency`` (and of later performance work).

It answers a caller's SDP offer on ``POST /v1/realtime/calls``, opens its own peer
connection to an OpenAI-compatible upstream (GA endpoints: ``/realtime/client_secrets``
then ``/realtime/calls``), forwards the caller's audio upstream and the upstream audio
back through ``aiortc.contrib.media.MediaRelay`` subscriptions (decode and re-encode
both ways, aiortc's default jitter buffer on both receivers), and forwards data-channel
messages both ways.

None of the project's aiortc patches are used. The only change to aiortc/aioice is
which host addresses ICE gathers on (aioice skips 127.0.0.1, and the benchmark must stay
on loopback); no STUN/TURN server is ever used.

    python -m bench.stock_relay --port 8081 --upstream http://127.0.0.1:8090/v1 \\
        [--noise-suppression webrtc] [--api-key sk-...]

``--noise-suppression webrtc`` runs livekit's ``AudioProcessingModule(noise_suppression=
True, high_pass_filter=True)`` per 10 ms on the decoded caller audio (48 kHz mono), like
the relay's default suppressor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCBundlePolicy
from av import AudioFrame

from bench.common import basic_logging, drain, gather_on, rtc_config

logger = logging.getLogger("stock_relay")

CALLS: web.AppKey[dict[str, StockCall]] = web.AppKey("calls", dict)
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http", aiohttp.ClientSession)
OPTIONS: web.AppKey[argparse.Namespace] = web.AppKey("options", argparse.Namespace)


class ApmTrack(MediaStreamTrack):
    """Decoded caller audio through livekit's WebRTC APM (NS + high-pass), 48 kHz mono."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        from livekit import rtc

        self._rtc = rtc
        self._apm = rtc.AudioProcessingModule(noise_suppression=True, high_pass_filter=True)
        self._source = source

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._source.recv()
        assert isinstance(frame, AudioFrame)
        rate = frame.sample_rate
        ten_ms = rate // 100
        pcm = frame.to_ndarray().reshape(-1)
        if len(frame.layout.channels) == 2:
            pair = pcm.reshape(-1, 2).astype(np.int32)
            pcm = ((pair[:, 0] + pair[:, 1]) >> 1).astype(np.int16)
        else:
            pcm = pcm.astype(np.int16)
        if pcm.size % ten_ms == 0:
            out = np.empty_like(pcm)
            for start in range(0, pcm.size, ten_ms):
                chunk = self._rtc.AudioFrame(pcm[start : start + ten_ms].tobytes(), rate, 1, ten_ms)
                self._apm.process_stream(chunk)  # in place
                out[start : start + ten_ms] = np.frombuffer(chunk.data, dtype=np.int16)
            pcm = out
        result = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        result.sample_rate = rate
        result.pts = frame.pts
        result.time_base = frame.time_base
        return result

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class _ChannelEnd:
    """One side of the data-channel bridge; messages wait here until it is open."""

    def __init__(self) -> None:
        self.channel: RTCDataChannel | None = None
        self.pending: list[str | bytes] = []

    def attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("open", self.flush)
        self.flush()

    def send(self, message: str | bytes) -> None:
        self.pending.append(message)
        self.flush()

    def flush(self) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        while self.pending:
            channel.send(self.pending.pop(0))


class StockCall:
    """Caller PC <-> MediaRelay <-> upstream PC, plus the data-channel bridge."""

    def __init__(self, app: web.Application) -> None:
        self.id = "rtc_stock_" + secrets.token_hex(8)
        self._app = app
        self._options: argparse.Namespace = app[OPTIONS]
        self.caller_pc = RTCPeerConnection(rtc_config())
        self.upstream_pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.media = MediaRelay()
        self.caller_end = _ChannelEnd()
        self.upstream_end = _ChannelEnd()
        self.upstream_call_id: str | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, offer_sdp: str) -> str:
        caller_tracks: list[MediaStreamTrack] = []
        agent_tracks: list[MediaStreamTrack] = []
        self.caller_pc.on("track", caller_tracks.append)
        self.caller_pc.on("datachannel", self._on_caller_channel)
        self.caller_pc.on("connectionstatechange", self._on_state)
        self.upstream_pc.on("track", agent_tracks.append)
        self.upstream_pc.on("connectionstatechange", self._on_state)

        await self.caller_pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        audio = [t for t in caller_tracks if t.kind == "audio"]
        if not audio:
            raise web.HTTPBadRequest(text="the offer has no audio")
        for extra in caller_tracks:
            if extra is not audio[0]:
                self._spawn(drain(extra))
        uplink: MediaStreamTrack = self.media.subscribe(audio[0])
        if self._options.noise_suppression == "webrtc":
            uplink = ApmTrack(uplink)
        self.upstream_pc.addTrack(uplink)
        channel = self.upstream_pc.createDataChannel("oai-events")
        self.upstream_end.attach(channel)
        channel.on("message", self.caller_end.send)

        await self.upstream_pc.setLocalDescription(await self.upstream_pc.createOffer())
        answer = await self._upstream_call(self.upstream_pc.localDescription.sdp)
        await self.upstream_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        agent_audio = [t for t in agent_tracks if t.kind == "audio"]
        if not agent_audio:
            raise web.HTTPBadGateway(text="the upstream answer has no audio")
        self.caller_pc.addTrack(self.media.subscribe(agent_audio[0]))
        await self.caller_pc.setLocalDescription(await self.caller_pc.createAnswer())
        return str(self.caller_pc.localDescription.sdp)

    async def _upstream_call(self, offer_sdp: str) -> str:
        http = self._app[HTTP]
        base = self._options.upstream.rstrip("/")
        auth = {"Authorization": f"Bearer {self._options.api_key}"}
        session = {"type": "realtime", "model": "gpt-realtime"}
        async with http.post(
            f"{base}/realtime/client_secrets", json={"session": session}, headers=auth
        ) as response:
            if response.status != 200:
                text = await response.text()
                raise web.HTTPBadGateway(text=f"client_secrets: HTTP {response.status}: {text}")
            key = (await response.json())["value"]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}
        async with http.post(f"{base}/realtime/calls", data=offer_sdp, headers=headers) as response:
            text = await response.text()
            if response.status not in (200, 201):
                raise web.HTTPBadGateway(text=f"calls: HTTP {response.status}: {text}")
            location = response.headers.get("Location", "")
        self.upstream_call_id = location.rstrip("/").rsplit("/", 1)[-1] or None
        return text

    def _on_caller_channel(self, channel: RTCDataChannel) -> None:
        self.caller_end.attach(channel)
        channel.on("message", self.upstream_end.send)

    def _on_state(self) -> None:
        states = (self.caller_pc.connectionState, self.upstream_pc.connectionState)
        if any(s in ("failed", "closed") for s in states):
            self._spawn(self.close())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._app[CALLS].pop(self.id, None)
        if self.upstream_call_id:
            base = self._options.upstream.rstrip("/")
            url = f"{base}/realtime/calls/{self.upstream_call_id}/hangup"
            auth = {"Authorization": f"Bearer {self._options.api_key}"}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._app[HTTP].post(
                    url, headers=auth, timeout=aiohttp.ClientTimeout(total=3)
                ) as response:
                    await response.read()
        await asyncio.gather(self.caller_pc.close(), self.upstream_pc.close())
        logger.info("call %s closed", self.id)


async def create_call(request: web.Request) -> web.Response:
    call = StockCall(request.app)
    request.app[CALLS][call.id] = call
    try:
        answer = await call.start(await request.text())
    except BaseException:
        logger.exception("call set-up failed")
        await call.close()
        raise
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call.id}"},
    )


async def hangup(request: web.Request) -> web.Response:
    call = request.app[CALLS].get(request.match_info["call_id"])
    if call is None:
        raise web.HTTPNotFound()
    await call.close()
    return web.json_response({})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "calls": len(request.app[CALLS])})


async def _http_client(app: web.Application) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        app[HTTP] = session
        yield


async def _close_calls(app: web.Application) -> None:
    calls = list(app[CALLS].values())
    await asyncio.gather(*(c.close() for c in calls), return_exceptions=True)


def create_app(options: argparse.Namespace) -> web.Application:
    app = web.Application()
    app[OPTIONS] = options
    app[CALLS] = {}
    app.cleanup_ctx.append(_http_client)
    app.on_shutdown.append(_close_calls)
    app.router.add_post("/v1/realtime/calls", create_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", hangup)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stock_relay", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8090/v1")
    parser.add_argument("--api-key", default="sk-stock-relay", help="server key for the upstream")
    parser.add_argument("--ice-addresses", default="127.0.0.1", help="comma-separated")
    parser.add_argument("--noise-suppression", choices=["off", "webrtc"], default="off")
    parser.add_argument("--log-level", default="INFO")
    options = parser.parse_args(argv)
    basic_logging(options.log_level)
    gather_on([a.strip() for a in options.ice_addresses.split(",") if a.strip()])
    logger.info(
        "stock aiortc relay on http://%s:%d (upstream %s, noise suppression %s)",
        options.host,
        options.port,
        options.upstream,
        options.noise_suppression,
    )
    web.run_app(create_app(options), host=options.host, port=options.port, print=None)


if __name__ == "__main__":
    main()
