"""Several worker processes behind one port: each a shard owning the calls it answered;
and several nodes behind a load balancer, each owning its calls (:mod:`relay.cluster`).

Workers share the public port (``SO_REUSEPORT``: the kernel spreads connections), and
each also listens on a private Unix socket. A call id names its owner
(``rtc_s<shard>_<32 hex>``), and so does a client secret (its first two hex digits),
so whichever worker receives a follow-up request (hangup, monitoring, a call with a
secret minted elsewhere) can reach the owner:

* requests for a call owned elsewhere are forwarded whole (HTTP or WebSocket);
* client secrets are looked up at the shard that minted them;
* ``/metrics`` and ``GET /api/calls`` gather every shard's answer.

A request goes to a **route target**: a sibling shard (its index: its Unix socket) or,
with a call directory, another node (its base URL, found in the directory), by the
same :meth:`ShardClient.forward`. Requests arriving on the private socket carry the
shard token and are always served locally, so nothing is forwarded twice; those from
another node carry the cluster token and go at most to a sibling shard. The public
listener never serves an internal route, and only forwards a request whose path is
exactly a call route (a known prefix, a well-formed call id, one plain segment), to that path as
rebuilt from its parts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

logger = logging.getLogger(__name__)

INTERNAL_HEADER = "X-Relay-Internal"
SHARD_HEADER = "X-Relay-Shard"
#: A path about a call that may be forwarded, matched against the raw (undecoded) path
#: as a whole: nothing percent-encoded, no dot segments, at most one plain segment on.
_CALL_ROUTE = re.compile(
    r"/(?P<prefix>v1/realtime/calls|api/calls)"
    r"/(?P<call_id>rtc_(?:s(?P<shard>\d{1,3})_)?[0-9a-f]{32})"
    r"(?P<suffix>/[a-z]{1,32})?"
)
_CALL_ID = re.compile(r"rtc_(?:s(?P<shard>\d{1,3})_)?[0-9a-f]{32}")
_SECRET = re.compile(r"ek_(?P<shard>[0-9a-f]{2})[0-9a-f]{30}")
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
    INTERNAL_HEADER.lower(),  # a client's is dropped; siblings' sessions send the token
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

    def media_socket_path(self, index: int) -> str:
        """Where shard ``index`` takes ICE-TCP connections accepted by a sibling."""
        return str(Path(self.socket_dir) / f"media-{index}.sock")

    @property
    def ufrag_prefix(self) -> str:
        """ICE ufrags of this shard's calls start with this (ICE-TCP finds its owner)."""
        return f"s{self.index}x" if self.sharded else ""

    def ufrag_owner(self, ufrag: str) -> int | None:
        match = _UFRAG.match(ufrag)
        owner = int(match.group(1)) if match else None
        return owner if owner is not None and owner < self.count else None

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def new_call_id(self) -> str:
        return f"rtc_s{self.index}_{secrets.token_hex(16)}"

    def new_secret_value(self) -> str:
        return f"ek_{self.index:02x}{secrets.token_hex(15)}"

    def secret_owner(self, value: str) -> int | None:
        """The shard that minted a well-formed client secret (``None`` for anything else:
        it never reaches a sibling's path)."""
        match = _SECRET.fullmatch(value)
        owner = int(match.group("shard"), 16) if match else None
        return owner if owner is not None and owner < self.count else None

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)


_UFRAG = re.compile(r"s(\d{1,3})x")
SINGLE = ShardLayout(index=0, count=1, socket_dir="", token="")


#: Where a forwarded request goes: a sibling shard's index (its Unix socket) or another
#: node's base URL.
Target = int | str


@dataclass(frozen=True)
class CallRoute:
    """A request about a call, as it may be forwarded to the call's owner."""

    call_id: str
    #: The path to replay at the owner, rebuilt from its checked parts.
    path: str
    #: The shard the call id names (``None``: an unsharded node's id).
    shard: int | None


def call_route(raw_path: str, query_call_id: str = "") -> CallRoute | None:
    """The call and rebuilt path of a request path (raw, as received) that is exactly a
    call route; ``None`` for any other path, which is then never forwarded. OpenAI's
    sideband names its call in the query (``/v1/realtime?call_id=``)."""
    if raw_path == "/v1/realtime" and query_call_id:
        by_query = _CALL_ID.fullmatch(query_call_id)
        if by_query is None:
            return None
        return CallRoute(query_call_id, "/v1/realtime", _shard_of(by_query))
    match = _CALL_ROUTE.fullmatch(raw_path)
    if match is None:
        return None
    prefix, call_id, suffix = match.group("prefix", "call_id", "suffix")
    return CallRoute(call_id, f"/{prefix}/{call_id}{suffix or ''}", _shard_of(match))


def _shard_of(match: re.Match[str]) -> int | None:
    shard = match.group("shard")
    return int(shard) if shard is not None else None


def is_internal(request: web.Request, layout: ShardLayout) -> bool:
    """A sibling shard's request: on this shard's Unix socket, with the shard token."""
    if not layout.token or not _on_unix_socket(request):
        return False
    return _token_is(request, layout.token)


def from_node(request: web.Request, node_token: str | None, cluster_port: int = 0) -> bool:
    """Another node's request: it carries the cluster token (and, with a cluster
    listener, arrived on it: there only). It is served here or by a sibling shard, never
    sent on to a third node. A wrong token is a public request."""
    if cluster_port and not on_cluster_listener(request, cluster_port):
        return False
    return bool(node_token) and _token_is(request, node_token or "")


def on_cluster_listener(request: web.Request, cluster_port: int) -> bool:
    """The request came in on the cluster listener (``RELAY_CLUSTER_PORT``, which
    :func:`relay.config.check` keeps apart from the listen port)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    return bool(sock.getsockname()[1] == cluster_port)


def _token_is(request: web.Request, token: str) -> bool:
    given = request.headers.get(INTERNAL_HEADER, "").encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, token.encode("utf-8", "surrogatepass"))


def _on_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


class ShardClient:
    """HTTP to route targets: sibling shards over their Unix sockets (with the shard
    token), other nodes at their base URLs (with the cluster token)."""

    def __init__(
        self, layout: ShardLayout, timeout_secs: float = 10.0, node_token: str | None = None
    ) -> None:
        self.layout = layout
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self._node_token = node_token or ""
        self._sessions: dict[Target, aiohttp.ClientSession] = {}

    def _session(self, target: Target) -> aiohttp.ClientSession:
        session = self._sessions.get(target)
        if session is None or session.closed:
            if isinstance(target, int):
                connector = aiohttp.UnixConnector(path=self.layout.socket_path(target))
                session = aiohttp.ClientSession(
                    connector=connector, headers={INTERNAL_HEADER: self.layout.token}
                )
            else:
                session = aiohttp.ClientSession(headers={INTERNAL_HEADER: self._node_token})
            self._sessions[target] = session
        return session

    def siblings(self) -> list[int]:
        return [i for i in range(self.layout.count) if i != self.layout.index]

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        results = await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                logger.warning("closing a shard connection failed: %r", result)

    async def get_json(
        self, target: Target, path: str, headers: dict[str, str] | None = None
    ) -> Any:
        url = _target_url(target, path)
        async with self._session(target).get(url, headers=headers, timeout=self._timeout) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            return await r.json()

    async def get_text(
        self, target: Target, path: str, headers: dict[str, str] | None = None
    ) -> str:
        url = _target_url(target, path)
        async with self._session(target).get(url, headers=headers, timeout=self._timeout) as r:
            r.raise_for_status()
            return await r.text()

    async def gather(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        targets: list[Target] | None = None,
    ) -> dict[Target, Any]:
        """``path`` (JSON, or text for ``/metrics``) from every target (default: the
        sibling shards); a target that fails is logged and left out."""
        if targets is None:
            targets = list(self.siblings())
        fetch = self.get_text if path.startswith("/metrics") else self.get_json
        results = await asyncio.gather(
            *(fetch(t, path, headers) for t in targets), return_exceptions=True
        )
        answers: dict[Target, Any] = {}
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("%s did not answer %s: %s", _name(target), path, result)
            else:
                answers[target] = result
        return answers

    async def forward(
        self, request: web.Request, target: Target, path: str, body: bytes = b""
    ) -> web.StreamResponse:
        """Replay ``request`` (whose ``body`` the caller read) on ``target``, at ``path``
        (a :class:`CallRoute`'s), and relay its answer."""
        url = _target_url(target, path).with_query(request.rel_url.query)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._forward_websocket(request, target, url)
        async with self._session(target).request(
            request.method,
            url,
            headers=_forward_headers(request),
            data=body,
            timeout=self._timeout,
        ) as upstream:
            payload = await upstream.read()
            response = web.Response(status=upstream.status, body=payload)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-encoding":
                    response.headers[name] = value
            return response

    async def _forward_websocket(
        self, request: web.Request, target: Target, url: URL
    ) -> web.StreamResponse:
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        ]
        protocols = [p for p in protocols if p]
        async with self._session(target).ws_connect(
            url,
            headers=_forward_headers(request, websocket=True),
            protocols=protocols,
        ) as upstream:
            downstream = web.WebSocketResponse(
                protocols=[upstream.protocol] if upstream.protocol else ()
            )
            await downstream.prepare(request)
            await _pump_both(downstream, upstream)
            return downstream


def _target_url(target: Target, path: str) -> URL:
    """``path`` (built by this module or the relay, never a client's) on ``target``."""
    if isinstance(target, int):
        return URL.build(scheme="http", host="shard", path=path)
    return URL(target).with_path(path)


def _name(target: Target) -> str:
    return f"shard {target}" if isinstance(target, int) else f"node {target}"


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
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a side that broke mid-copy: the socket ends anyway
                logger.info("forwarded WebSocket ended with an error: %r", exc)


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
