"""Finished recordings for the history tests, made by the real recorder from a fake
call: stereo tones (caller left in the first half, agent right in the second) and
transcript turns completed at given offsets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from relay.config import Secret
from relay.http.errors import error_middleware
from relay.http.ops_routes import setup_ops_routes
from relay.ops.components import Ops
from relay.ops.metrics import RelayMetrics
from relay.ops.monitor import MonitorHub
from relay.ops.recording import Recorder

from .fakes import FRAME_SECS, FakeCall, FakeDirectory, eventually, tone

USER_DONE = "conversation.item.input_audio_transcription.completed"
AGENT_DONE = "response.output_audio_transcript.done"


@dataclass
class ShiftedClock:
    """The wall clock moved by ``shift`` seconds: a call "recorded" days ago, or a call
    that lasts seconds without the test waiting for them."""

    shift: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


Turn = tuple[float, str, str]  # (offset in seconds, "user" | "agent", text)


async def record_call(
    directory: FakeDirectory,
    recorder: Recorder,
    clock: ShiftedClock,
    turns: list[Turn],
    seconds: float,
    outcome: str = "hangup",
) -> FakeCall:
    """Record a call of ``seconds`` whose transcript turns complete at their offsets;
    returns once its recording is complete on disk. ``clock`` (shared by ``directory``
    and ``recorder``) ends ``seconds`` later than it started."""
    call = directory.start(FakeCall(record=True, model="gpt-realtime"))
    t0 = clock()
    frames = int(seconds / FRAME_SECS)
    for i in range(frames):
        speaker, freq = ("caller", 440) if i < frames // 2 else ("agent", 660)
        directory.audio(call, speaker, tone(freq, start=i * 480), t0 + i * FRAME_SECS)
    for n, (offset, role, text) in enumerate(turns):
        kind, key = (USER_DONE, "transcript") if role == "user" else (AGENT_DONE, "transcript")
        event = {"type": kind, "item_id": f"item_{n}", key: text}
        directory.event(call, "server", event, t0 + offset)
    clock.shift += seconds
    directory.end(call, outcome)
    clock.shift -= seconds

    def complete() -> bool:
        described = recorder.describe(call.id)
        return described is not None and described.get("status") == "complete"

    await eventually(complete, timeout_secs=10)
    return call


@dataclass
class OpsWithRecorder:
    """The operator routes alone, on fake calls that the real recorder records."""

    app: web.Application
    directory: FakeDirectory
    recorder: Recorder
    clock: ShiftedClock


def ops_with_recorder(root: Path, admin_token: str) -> OpsWithRecorder:
    clock = ShiftedClock()
    metrics = RelayMetrics(process=False)
    directory = FakeDirectory(clock)
    recorder = Recorder(root, policy="all", metrics=metrics, clock=clock)
    ops = Ops(
        directory=directory,
        metrics=metrics,
        hub=MonitorHub(directory.snapshot_of, metrics),
        recorder=recorder,
        admin_token=Secret(admin_token),
    )
    app = web.Application(middlewares=[error_middleware])
    setup_ops_routes(app, ops)
    return OpsWithRecorder(app, directory, recorder, clock)


async def feed_audio(directory: FakeDirectory, call: FakeCall) -> None:
    """Caller and agent tones in real time, 20 ms frames, until cancelled."""
    t0 = time.time()
    index = 0
    while True:
        stamp = t0 + index * FRAME_SECS
        await asyncio.sleep(max(0.0, stamp - time.time()))
        directory.audio(call, "caller", tone(440, start=index * 480), stamp)
        directory.audio(call, "agent", tone(660, amplitude=0.1, start=index * 480), stamp)
        index += 1
