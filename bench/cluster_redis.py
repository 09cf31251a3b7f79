"""What the call directory costs Redis, read from Redis itself: ``CONFIG RESETSTAT``,
then ``INFO commandstats`` (calls per command) and ``INFO stats`` (bytes in and out)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from bench.procs import Proc, free_port


@dataclass(frozen=True)
class RedisCounts:
    """Commands (by name) and bytes since the last reset, and over how long."""

    commands: dict[str, int]
    bytes_in: int
    bytes_out: int
    secs: float

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    def minus(self, idle: RedisCounts, secs: float) -> RedisCounts:
        """These counts less ``idle``'s rate over ``secs`` (the heartbeats going on)."""
        scale = secs / idle.secs if idle.secs else 0.0
        commands = {
            name: max(0, count - round(idle.commands.get(name, 0) * scale))
            for name, count in self.commands.items()
        }
        return RedisCounts(
            {k: v for k, v in commands.items() if v},
            max(0, self.bytes_in - round(idle.bytes_in * scale)),
            max(0, self.bytes_out - round(idle.bytes_out * scale)),
            secs,
        )


class RedisMeter:
    """A ``redis-server`` of its own (no persistence) and its counters."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is missing: run scripts/install-system-deps.sh")
        argv = [server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        self.proc = Proc("redis", [*argv, "--appendonly", "no"], {}, folder / "redis.log")
        self._client: aioredis.Redis | None = None
        self._started = 0.0
        self._own_in = self._own_out = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        await self.proc.start()
        self._client = aioredis.Redis(port=self.port, decode_responses=True)
        for _ in range(100):
            with contextlib.suppress(OSError, aioredis.ConnectionError):
                await self._client.ping()
                break
            await asyncio.sleep(0.05)
        # What one reading costs (INFO's own bytes), taken off every reading.
        await self.reset()
        first = await self._raw()
        second = await self._raw()
        self._own_in = second.bytes_in - first.bytes_in
        self._own_out = second.bytes_out - first.bytes_out

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        await self.proc.stop()

    async def reset(self) -> None:
        assert self._client is not None
        await self._client.config_resetstat()
        self._started = asyncio.get_running_loop().time()

    async def _raw(self) -> RedisCounts:
        assert self._client is not None
        commandstats = await self._client.info("commandstats")
        stats = await self._client.info("stats")
        commands = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in commandstats.items()
            if not name.startswith(("cmdstat_info", "cmdstat_config", "cmdstat_ping"))
        }
        secs = asyncio.get_running_loop().time() - self._started
        return RedisCounts(
            commands,
            int(stats["total_net_input_bytes"]),
            int(stats["total_net_output_bytes"]),
            secs,
        )

    async def read(self) -> RedisCounts:
        """Since the last :meth:`reset`, this meter's own readings taken off."""
        raw = await self._raw()
        return RedisCounts(
            raw.commands,
            max(0, raw.bytes_in - self._own_in),
            max(0, raw.bytes_out - self._own_out),
            raw.secs,
        )
