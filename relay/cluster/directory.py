"""The fleet's call directory in Redis (or Valkey).

Keys (all under ``relay:``), each with a TTL so that nothing outlives its owner:

* ``secret:<sha256 of the value>``: a client secret's session and expiry, until it
  expires. The value itself is never stored, logged or sent anywhere but its lookup.
* ``call:<call id>``: the owner node's base URL, refreshed by the owner.
* ``node:<node id>``: the node's load (calls, loop lag and load, CPU, draining), refreshed
  with its calls; ``nodes`` is the set of node ids, pruned of those whose key expired.

Every operation is bounded (``timeout_secs``, connecting included); a failure raises
:class:`DirectoryUnavailable` (``503`` in OpenAI's envelope) and the next operation tries
again, so a node recovers on its own when Redis is back."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from ..errors import Overloaded

logger = logging.getLogger(__name__)

PREFIX = "relay:"
NODES = PREFIX + "nodes"
T = TypeVar("T")


class DirectoryUnavailable(Overloaded):
    """Redis did not answer in time: what needs it (minting, new calls) is refused."""

    code = "directory_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The relay's call directory (Redis) is unavailable; retry shortly.",
            retry_after_secs=2,
        )


@dataclass(frozen=True)
class StoredSecret:
    session: dict[str, Any]
    expires_at: int


def secret_key(value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{PREFIX}secret:{digest}"


def call_key(call_id: str) -> str:
    return f"{PREFIX}call:{call_id}"


def node_key(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"


class CallDirectory:
    """One node's connection to the directory (a pool; closed with :meth:`close`)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_secs: float = 1.0,
        on_answer: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._timeout = timeout_secs
        #: Told each operation's name and whether it succeeded (metrics); never raises
        #: into the directory.
        self._on_answer = on_answer
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_secs,
            socket_connect_timeout=timeout_secs,
            retry_on_timeout=False,
            decode_responses=True,
        )
        self.available = True

    async def close(self) -> None:
        await self._redis.aclose()

    async def _bounded(self, op: str, operation: Awaitable[T] | T) -> T:
        """``operation``'s result (redis-py types its commands as maybe-awaitable);
        ``op`` names it for the metrics."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation if inspect.isawaitable(operation) else operation
        except (RedisError, OSError, TimeoutError) as exc:
            if self.available:  # once per outage, not once per request
                logger.warning("call directory unavailable: %s", type(exc).__name__)
            self.available = False
            self._answered(op, False)
            raise DirectoryUnavailable() from None
        if not self.available:
            logger.info("call directory available again")
        self.available = True
        self._answered(op, True)
        return result

    def _answered(self, op: str, ok: bool) -> None:
        if self._on_answer is not None:
            try:
                self._on_answer(op, ok)
            except Exception:  # an observer's bug never fails a directory operation
                logger.exception("call directory observer failed")

    async def _run(self, op: str, pipe: Pipeline) -> None:
        """A pipeline's commands, in one round trip."""
        done: list[Any] = await self._bounded(op, pipe.execute())
        logger.debug("directory pipeline: %d command(s)", len(done))

    async def ping(self) -> None:
        await self._bounded("ping", self._redis.ping())

    # -- client secrets --------------------------------------------------------------

    async def put_secret(self, value: str, session: dict[str, Any], expires_at: int) -> None:
        record = json.dumps({"session": session, "expires_at": expires_at})
        stored = self._redis.set(secret_key(value), record, exat=expires_at)
        await self._bounded("put_secret", stored)

    async def get_secret(self, value: str) -> StoredSecret | None:
        raw = await self._bounded("get_secret", self._redis.get(secret_key(value)))
        if raw is None:
            return None
        record = json.loads(raw)
        return StoredSecret(session=record["session"], expires_at=int(record["expires_at"]))

    # -- calls and nodes ------------------------------------------------------------

    async def register_call(self, call_id: str, owner_url: str, ttl_secs: float) -> None:
        await self._bounded(
            "register_call", self._redis.set(call_key(call_id), owner_url, px=_ms(ttl_secs))
        )

    async def owner(self, call_id: str) -> str | None:
        result: str | None = await self._bounded("owner", self._redis.get(call_key(call_id)))
        return result

    async def heartbeat(
        self,
        node_id: str,
        load: dict[str, Any],
        owner_url: str,
        live: Iterable[str],
        ended: Iterable[str],
        ttl_secs: float,
    ) -> None:
        """Publish this node's load and refresh its live calls' entries (re-creating any a
        restarted Redis lost); drop the entries of calls that ended. One round trip."""
        ttl_ms = _ms(ttl_secs)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(node_key(node_id), json.dumps(load), px=ttl_ms)
        pipe.sadd(NODES, node_id)
        for call_id in live:
            pipe.set(call_key(call_id), owner_url, px=ttl_ms)
        gone = [call_key(c) for c in ended]
        if gone:
            pipe.delete(*gone)
        await self._run("heartbeat", pipe)

    async def leave(self, node_id: str, call_ids: Iterable[str]) -> None:
        keys = [node_key(node_id), *(call_key(c) for c in call_ids)]
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(*keys)
        pipe.srem(NODES, node_id)
        await self._run("leave", pipe)

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """The live nodes' last published load, by node id (expired ones are pruned)."""
        ids = sorted(await self._bounded("nodes", self._redis.smembers(NODES)))
        if not ids:
            return {}
        raws = await self._bounded("nodes", self._redis.mget([node_key(i) for i in ids]))
        dead = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if dead:
            await self._bounded("nodes", self._redis.srem(NODES, *dead))
        return {i: json.loads(raw) for i, raw in zip(ids, raws, strict=True) if raw is not None}


def _ms(secs: float) -> int:
    return max(1, int(secs * 1000))
