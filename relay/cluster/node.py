"""This node's part in the fleet: its heartbeat (its load and its calls' entries,
refreshed every third of their TTL), the owner of a call, and the other nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..registry import CallRegistry
from .directory import CallDirectory, DirectoryUnavailable

logger = logging.getLogger(__name__)


class ClusterNode:
    """A node (one shard of it, with ``serve --workers N``) in the directory.

    Calls are registered when they start (:meth:`register`) and by every heartbeat, so
    that entries a restarted Redis lost come back; ended calls' entries go at the next
    heartbeat, and a dead node's when their TTL runs out."""

    def __init__(
        self,
        directory: CallDirectory,
        registry: CallRegistry,
        *,
        url: str,
        shard: int,
        ttl_secs: float,
    ) -> None:
        self.directory = directory
        self.url = url.rstrip("/")
        self.node_id = f"{self.url}#{shard}"
        self._registry = registry
        self._ttl = ttl_secs
        self._registered: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._cpu = (time.process_time(), time.monotonic())
        self.beats = 0

    async def register(self, call_id: str) -> None:
        """Name this node as ``call_id``'s owner (raises :class:`DirectoryUnavailable`)."""
        await self.directory.register_call(call_id, self.url, self._ttl)
        self._registered.add(call_id)

    async def owner(self, call_id: str) -> str | None:
        """The base URL of the node that owns ``call_id``, if it is another node."""
        url = await self.directory.owner(call_id)
        return url if url and url != self.url else None

    async def peers(self) -> list[str]:
        """The base URLs of the other live nodes."""
        nodes = await self.directory.nodes()
        return sorted({str(n["url"]) for n in nodes.values() if n.get("url") != self.url})

    def load(self) -> dict[str, Any]:
        """What this node publishes: enough for a scheduler or an operator to pick a node."""
        registry = self._registry
        cpu, wall = time.process_time(), time.monotonic()
        last_cpu, last_wall = self._cpu
        self._cpu = (cpu, wall)
        lag = registry.loop_lag_secs() if registry.loop_lag_secs is not None else 0.0
        return {
            "url": self.url,
            "calls": len(registry),
            "loop_lag_ms": round(lag * 1000, 1),
            "loop_load": round(registry.projected_loop_load(), 3),
            "cpu": round((cpu - last_cpu) / max(wall - last_wall, 1e-3), 3),
            "draining": registry.draining,
            "full": registry.full or registry.lagging,
            "at": round(time.time(), 1),
        }

    async def beat(self) -> None:
        live = {view.id for view in self._registry.list()}
        ended = self._registered - live
        await self.directory.heartbeat(
            self.node_id, self.load(), self.url, sorted(live), sorted(ended), self._ttl
        )
        self._registered = live
        self.beats += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except DirectoryUnavailable:
                pass  # logged once per outage; the next beat tries again
            except Exception:  # a bug here must not stop the heartbeat for good
                logger.exception("call directory heartbeat failed")
            await asyncio.sleep(self._ttl / 3)

    async def close(self) -> None:
        """Stop the heartbeat and leave the directory (best effort: entries expire)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(DirectoryUnavailable):
            await self.directory.leave(self.node_id, self._registered)
        await self.directory.close()
