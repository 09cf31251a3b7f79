"""The upstream of ``bench.latency``: a tiny aiohttp server with OpenAI's GA WebRTC
endpoints (``/v1/realtime/client_secrets``, ``/v1/realtime/calls``, ``.../hangup``)
whose calls are answered by a :class:`~bench.latency_peers.ProbeCall` (a measurement
stand-in, not the emulator), and its WebSocket transport (``GET /v1/realtime``,
answered by a :class:`~bench.latency_ws_probe.ProbeSocket`). On 127.0.0.1, on a free
port."""

from __future__ import annotations

import asyncio
import secrets
import time

from aiohttp import web

from bench.latency_peers import ProbeCall
from bench.latency_ws_probe import ProbeSocket


class Probe:
    """A measurement stand-in for OpenAI's GA WebRTC endpoints (not the emulator)."""

    def __init__(self) -> None:
        self.calls: dict[str, ProbeCall | ProbeSocket] = {}
        self.requests: list[str] = []
        self._new_calls: asyncio.Queue[ProbeCall | ProbeSocket] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/realtime/client_secrets", self._client_secret)
        app.router.add_post("/v1/realtime/calls", self._create_call)
        app.router.add_post("/v1/realtime/calls/{call_id}/hangup", self._hangup)
        app.router.add_get("/v1/realtime", self._websocket)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        await asyncio.gather(*(c.close() for c in self.calls.values()), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        self.requests.clear()
        while not self._new_calls.empty():
            self._new_calls.get_nowait()

    async def next_call(self) -> ProbeCall | ProbeSocket:
        return await self._new_calls.get()

    def forget(self, call: ProbeCall | ProbeSocket) -> None:
        self.calls.pop(call.id, None)

    async def close_strays(self) -> None:
        """Close the calls answered but never taken (e.g. after a variant failed)."""
        while not self._new_calls.empty():
            stray = self._new_calls.get_nowait()
            await stray.close()
            self.forget(stray)

    async def _client_secret(self, request: web.Request) -> web.Response:
        self.requests.append("client_secrets")
        body = await request.json()
        session = body.get("session", {}) if isinstance(body, dict) else {}
        return web.json_response(
            {
                "value": "ek_bench_" + secrets.token_hex(12),
                "expires_at": int(time.time()) + 600,
                "session": session,
            }
        )

    async def _create_call(self, request: web.Request) -> web.Response:
        self.requests.append("calls")
        call = ProbeCall("rtc_probe_" + secrets.token_hex(8))
        self.calls[call.id] = call
        try:
            answer = await call.answer(await request.text())
        except Exception as exc:
            await call.close()
            self.forget(call)
            error = {"message": f"probe could not answer: {exc!r}", "type": "invalid_request"}
            return web.json_response({"error": error}, status=400)
        self._new_calls.put_nowait(call)
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call.id}"},
        )

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.requests.append("websocket")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        socket = ProbeSocket(ws)
        self.calls[socket.id] = socket
        try:
            await socket.serve(self._new_calls.put_nowait)
        finally:
            await socket.close()
        return ws

    async def _hangup(self, request: web.Request) -> web.Response:
        self.requests.append("hangup")
        call = self.calls.get(request.match_info["call_id"])
        if call is not None:
            call.hung_up = True
        return web.json_response({})
