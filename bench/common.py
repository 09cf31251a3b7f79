"""Small helpers the benchmarks share: aiortc odds and ends, the event-loop lag probe,
logging, and the ``--variants`` flag.

Nothing here imports the relay: the stock relay (``bench/stock_relay.py``) uses it
too, and must run without the project's aiortc patches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aioice.ice
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration
from aiortc.mediastreams import MediaStreamError

REPO = Path(__file__).resolve().parents[1]


def gather_on(addresses: Sequence[str]) -> None:
    """This benchmark process's peer connections gather host candidates on exactly
    these addresses (aioice skips 127.0.0.1; the benchmarks stay on loopback). The
    relay's own peer connections take theirs from its settings."""
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def rtc_config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])  # never aiortc's default public STUN


async def drain(track: MediaStreamTrack, on_frame: Callable[[Any], None] | None = None) -> None:
    """Read a remote track to its end, handing each frame to ``on_frame`` (if any)."""
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            if on_frame is not None:
                on_frame(frame)


class Pacing:
    """Paced release on the monotonic clock, from the first ``wait``."""

    def __init__(self) -> None:
        self._start: float | None = None

    async def wait(self, offset: float) -> float:
        """Until ``offset`` seconds after the first call (at once if that has passed);
        how late it is (seconds, 0 if on time)."""
        now = time.monotonic()
        if self._start is None:
            self._start = now
        wait = self._start + offset - now
        if wait > 0:
            await asyncio.sleep(wait)
            return 0.0
        return -wait


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
        await task


def basic_logging(level: str) -> None:
    """Log lines with a time stamp on stderr (the log files the benchmarks read)."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def write_json(path: Path, data: Any) -> None:
    """The figures of a run, for ``--json`` (what JSON cannot hold as text)."""
    path.write_text(json.dumps(data, indent=2, default=str))


def parse_variants(
    parser: argparse.ArgumentParser, text: str, variants: Mapping[str, str], allow_all: bool
) -> list[str]:
    """The names of a comma-separated ``--variants`` value (``all``: every one, where
    allowed); an unknown name is a usage error."""
    names = list(variants) if allow_all and text == "all" else text.split(",")
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in variants]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(variants)}")
    return names


class LagProbe:
    """Event-loop lag of this process: a task that sleeps ``interval`` and records how
    late it woke (seconds). ``take()`` returns the samples since the last take."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self._samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            self._samples.append(max(0.0, time.monotonic() - before - self.interval))
            if len(self._samples) > 100_000:
                del self._samples[:50_000]

    def take(self) -> list[float]:
        samples, self._samples = self._samples, []
        return samples

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


def lag_summary(samples: list[float]) -> dict[str, float | None]:
    """p50/p99/max of lag samples, in ms."""
    if not samples:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "n": 0}
    arr = np.asarray(samples) * 1000
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
        "n": int(arr.size),
    }


def noise_suppression_of(variant: str) -> str:
    """A relay variant's ``RELAY_NOISE_SUPPRESSION``: ``relay-webrtc-tcp`` -> ``webrtc``
    (the ``-tcp`` and ``-ws`` suffixes name the caller's transport, ``-wsup`` the
    WebSocket upstream)."""
    name = variant.removeprefix("relay-").removesuffix("-wsup")
    return name.removesuffix("-tcp").removesuffix("-ws")
