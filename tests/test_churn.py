"""Churn: one call after another through the relay and its embedded emulator leaves
nothing behind once warm. After a warm-up, the process's native threads are back to
their baseline when each call has ended (without waiting for a garbage collection:
libav keeps threads per resampler and encoder until they are freed), and its memory
does not grow with the number of calls (the emulator remembers only a few ended calls):
neither RSS (sampled after a collection, so what is measured is what stays referenced)
nor the number of peer connections and emulated calls still alive.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from aiortc import RTCPeerConnection
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, realtime_client

from relay.embedded import EMULATOR
from relay.emulator.app import SESSIONS
from relay.emulator.session import EmulatedCall

CALLS = 60
WARM_UP = 20
#: Generous: the emulator's history alone used to add ~0.5 MB per call (for good).
MAX_MB_PER_CALL = 0.3
THREADS_BACK_WITHIN_SECS = 5.0


def native_threads() -> int:
    """Threads of this process that Python did not start (libav's, libsrtp's...)."""
    return len(os.listdir("/proc/self/task")) - threading.active_count()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def alive(kind: type) -> int:
    """How many objects of ``kind`` are still referenced (after a collection)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


async def one_call(relay: RelayUnderTest, speech: np.ndarray) -> None:
    """A call that carries audio both ways (so every codec and resampler of both legs
    has started), then hangs up by closing its peer connection."""
    emulator = relay.app[EMULATOR][SESSIONS]
    async with realtime_client(PacedAudioSource(speech, loop=True)) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201, await response.text()
        emulated = await emulator.wait_for_call(emulator.created, timeout_secs=5)
        async with asyncio.timeout(10):
            while emulated.received.frames < 5 or len(client.sink.frames) < 5:
                await asyncio.sleep(0.02)
    async with asyncio.timeout(10):
        while len(relay.registry) or len(emulator):
            await asyncio.sleep(0.02)


async def until(condition: Callable[[], bool], timeout_secs: float) -> bool:
    """Whether ``condition`` holds within ``timeout_secs`` (polled)."""
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_calls_one_after_another_leave_no_threads_and_no_memory_behind(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    relay = await start_relay(media_timeout_secs=2.0, max_loop_load=0.0)  # not admission
    for _ in range(WARM_UP):
        await one_call(relay, speech_48k)
    warm = {kind: alive(kind) for kind in (RTCPeerConnection, EmulatedCall)}
    await asyncio.sleep(0.3)
    baseline = native_threads()
    python_baseline = threading.active_count()
    rss: list[float] = [rss_mb()]
    for number in range(WARM_UP + 1, CALLS + 1):
        await one_call(relay, speech_48k)
        # No gc.collect() before this check: threads must go when the call ends.
        back = await until(lambda: native_threads() <= baseline, THREADS_BACK_WITHIN_SECS)
        assert back, (
            f"call {number}: {native_threads()} native threads {THREADS_BACK_WITHIN_SECS} s "
            f"after it ended, {baseline} before"
        )
        # Python's own threads: aiortc's decoder threads are joined when a call ends;
        # the default executor may start a few more of its (bounded) pool.
        assert threading.active_count() <= python_baseline + 4, threading.enumerate()
        gc.collect()  # memory: what is still referenced, not what awaits a collection
        rss.append(rss_mb())
    # Ended calls are let go (the emulator remembers a few for tests, not every one).
    for kind, count in warm.items():
        assert alive(kind) <= count, f"{kind.__name__}: {count} after the warm-up"
    per_call = (min(rss[-5:]) - min(rss[:5])) / (CALLS - WARM_UP)
    assert per_call < MAX_MB_PER_CALL, (
        f"RSS grew {per_call:.2f} MB per call over the last {CALLS - WARM_UP} calls: "
        + ", ".join(f"{r:.1f}" for r in rss[::5])
    )
