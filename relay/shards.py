"""Several worker processes behind one port: each a shard owning the calls it answered.

Workers share the public port (``SO_REUSEPORT``: the kernel spreads connections), and
each also listens on a private Unix socket. A call id names its owner
(``rtc_s<shard>_<32 hex>``), and so does a client secret (its first two hex digits),
so whichever worker receives a follow-up request (hangup, monitoring, a call with a
secret minted elsewhere) can reach the owner:

* requests for a call owned elsewhere are forwarded whole (HTTP or WebSocket);
* client secrets are looked up at the shard that minted them;
* ``/metrics`` and ``GET /api/calls`` gather every shard's answer.

Requests arriving on the private socket carry the shard token and are always served
locally, so nothing is forwarded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

logger = logging.getLogger(__name__)

INTERNAL_HEADER = "X-Relay-Internal"
SHARD_HEADER = "X-Relay-Shard"
_CALL_IN_PATH = re.compile(r"^/(?:v1/realtime/calls|api/calls)/(rtc_s(\d+)_[0-9a-f]{32})(?:/|$)")
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
}


@dataclass(frozen=True)
class ShardLayout:
    """Where this worker sits among its siblings."""

    index: int
    count: int
    socket_dir: str
    token: str

    def socket_path(self, index: int) -> str:
        return str(Path(self.socket_dir) / f"shard-{index}.sock")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def new_call_id(self) -> str:
        return f"rtc_s{self.index}_{secrets.token_hex(16)}"

    def new_secret_value(self) -> str:
        return f"ek_{self.index:02x}{secrets.token_hex(15)}"

    def secret_owner(self, value: str) -> int | None:
        try:
            owner = int(value[3:5], 16)
        except ValueError:
            return None
        return owner if value.startswith("ek_") and owner < self.count else None

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)


SINGLE = ShardLayout(index=0, count=1, socket_dir="", token="")


def call_owner(path: str) -> int | None:
    """The shard named by a call id in a request path, if any."""
    match = _CALL_IN_PATH.match(path)
    return int(match.group(2)) if match else None


def is_internal(request: web.Request, layout: ShardLayout) -> bool:
    given = request.headers.get(INTERNAL_HEADER, "")
    return bool(layout.token) and hmac.compare_digest(given.encode(), layout.token.encode())


class ShardClient:
    """HTTP to sibling shards over their Unix sockets."""

    def __init__(self, layout: ShardLayout, timeout_secs: float = 10.0) -> None:
        self.layout = layout
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _session(self, index: int) -> aiohttp.ClientSession:
        session = self._sessions.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=self.layout.socket_path(index))
            session = aiohttp.ClientSession(
                connector=connector, headers={INTERNAL_HEADER: self.layout.token}
            )
            self._sessions[index] = session
        return session

    def siblings(self) -> list[int]:
        return [i for i in range(self.layout.count) if i != self.layout.index]

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def get_json(self, index: int, path: str, headers: dict[str, str] | None = None) -> Any:
        url = f"http://shard{path}"
        async with self._session(index).get(url, headers=headers, timeout=self._timeout) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            return await r.json()

    async def get_text(self, index: int, path: str, headers: dict[str, str] | None = None) -> str:
        url = f"http://shard{path}"
        async with self._session(index).get(url, headers=headers, timeout=self._timeout) as r:
            r.raise_for_status()
            return await r.text()

    async def gather(self, path: str, headers: dict[str, str] | None = None) -> dict[int, Any]:
        """``path`` (JSON, or text for ``/metrics``) from every sibling, by shard index;
        a sibling that fails is logged and left out."""
        siblings = self.siblings()
        fetch = self.get_text if path.startswith("/metrics") else self.get_json
        results = await asyncio.gather(
            *(fetch(i, path, headers) for i in siblings), return_exceptions=True
        )
        answers: dict[int, Any] = {}
        for index, result in zip(siblings, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("shard %d did not answer %s: %s", index, path, result)
            else:
                answers[index] = result
        return answers

    async def forward(self, request: web.Request, index: int) -> web.StreamResponse:
        """Replay ``request`` on shard ``index`` and relay its answer."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._forward_websocket(request, index)
        headers = _forward_headers(request)
        body = await request.read()
        async with self._session(index).request(
            request.method,
            f"http://shard{request.rel_url}",
            headers=headers,
            data=body,
            timeout=self._timeout,
        ) as upstream:
            payload = await upstream.read()
            response = web.Response(status=upstream.status, body=payload)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-encoding":
                    response.headers[name] = value
            return response

    async def _forward_websocket(self, request: web.Request, index: int) -> web.StreamResponse:
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        ]
        protocols = [p for p in protocols if p]
        async with self._session(index).ws_connect(
            f"http://shard{request.rel_url}",
            headers=_forward_headers(request, websocket=True),
            protocols=protocols,
        ) as upstream:
            downstream = web.WebSocketResponse(
                protocols=[upstream.protocol] if upstream.protocol else ()
            )
            await downstream.prepare(request)
            await _pump_both(downstream, upstream)
            return downstream


def _forward_headers(request: web.Request, *, websocket: bool = False) -> dict[str, str]:
    skip = _HOP_HEADERS | ({"sec-websocket-protocol"} if websocket else set())
    return {k: v for k, v in request.headers.items() if k.lower() not in skip}


async def _pipe(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await sink.send_bytes(message.data)
    await sink.close()


async def _pump_both(
    downstream: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    """Copy messages both ways until either side closes, then close the other."""
    tasks = [
        asyncio.ensure_future(_pipe(upstream, downstream)),
        asyncio.ensure_future(_pipe(downstream, upstream)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def label_shard(exposition: str, shard: int) -> dict[str, list[str]]:
    """Prometheus text by metric family, every sample labelled with its shard."""
    families: dict[str, list[str]] = {}
    current: list[str] = []
    for line in exposition.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            current = families.setdefault(line.split(" ", 3)[2], [])
            if not current:
                current.append(line)
            continue
        if line.startswith("#"):
            if len(current) == 1:
                current.append(line)  # the TYPE line, once
            continue
        name, brace, rest = line.partition("{")
        if brace:
            current.append(f'{name}{{shard="{shard}",{rest}')
        else:
            name, _, value = line.partition(" ")
            current.append(f'{name}{{shard="{shard}"}} {value}')
    return families


def merge_expositions(by_shard: dict[int, str]) -> str:
    """One exposition of every shard's metrics: each family once, samples labelled."""
    merged: dict[str, list[str]] = {}
    for shard, text in sorted(by_shard.items()):
        for family, lines in label_shard(text, shard).items():
            target = merged.setdefault(family, [])
            target.extend(lines if not target else [x for x in lines if not x.startswith("#")])
    return "".join(line + "\n" for lines in merged.values() for line in lines)
