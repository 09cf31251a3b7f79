"""Recorder: wall-clock aligned stereo WAV, events, transcripts, metadata, policies,
bounded queue, retention, admin helpers, IO failures and crash safety (kill -9)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relay.ops.metrics import RelayMetrics
from relay.ops.recording import (
    FILES,
    Recorder,
    WriterTiming,
    finalise_unfinished,
    is_safe_id,
    read_metadata,
    sweep_retention,
)
from relay.ops.recording.callfiles import CallFiles
from relay.taps import CallEnd

from .fakes import FRAME_SECS, FakeCall, FakeDirectory, eventually, tone

RATE = 24000


class FakeClock:
    """A wall clock the test moves by hand, so the writer renders only at the end."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def read_stereo(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, RATE, 2)
        data = wav.readframes(wav.getnframes())
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2)


def window_rms(samples: np.ndarray, start_secs: float, end_secs: float) -> float:
    part = samples[int(start_secs * RATE) : int(end_secs * RATE)].astype(np.float64)
    return float(np.sqrt(np.mean(part**2))) if part.size else 0.0


def ended(outcome: str = "hangup") -> CallEnd:
    return CallEnd(outcome, time.time(), ())


def folder_of(root: Path, call_id: str) -> Path:
    [folder] = list(root.glob(f"*/{call_id}"))
    return folder


@pytest.fixture
def metrics() -> RelayMetrics:
    return RelayMetrics(process=False)


@pytest.fixture
async def make_recorder(tmp_path: Path, metrics: RelayMetrics) -> AsyncIterator[Callable[..., Any]]:
    made: list[Recorder] = []

    async def make(**options: Any) -> Recorder:
        options.setdefault("policy", "all")
        recorder = Recorder(tmp_path / "recordings", metrics=metrics, **options)
        await recorder.open()
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        await recorder.close()


async def test_audio_is_stereo_on_the_wall_clock_with_gaps_filled(
    make_recorder: Callable[..., Any], tmp_path: Path
) -> None:
    """Caller left, agent right, sample n at started_at + n/24000: a jittery stamp is
    absorbed (the caller's audio comes out bit-exact), a 0.5 s hole in the agent's
    audio stays a 0.5 s hole, and the file lasts until the call ended."""
    clock = FakeClock()
    recorder: Recorder = await make_recorder(clock=clock)
    directory = FakeDirectory()
    directory.add_observer(recorder)
    call = directory.start(FakeCall())
    t0 = clock.now
    rng = np.random.default_rng(1)
    caller = tone(440, frames=50)
    for i in range(50):  # 1 s of caller audio; stamps after the first jitter by <= 8 ms
        stamp = t0 + i * FRAME_SECS + (rng.uniform(-0.008, 0.008) if i else 0.0)
        directory.audio(call, "caller", caller[i * 480 : (i + 1) * 480], stamp)
    for i in [*range(0, 15), *range(40, 50)]:  # agent: 0-0.3 s, then 0.8-1.0 s
        directory.audio(call, "agent", tone(1000, start=i * 480), t0 + i * FRAME_SECS)
    clock.now = t0 + 1.2
    directory.end(call, "hangup")
    await recorder.close()

    audio = read_stereo(folder_of(tmp_path / "recordings", call.id) / "audio.wav")
    assert len(audio) == pytest.approx(1.2 * RATE, abs=1)
    assert np.array_equal(audio[: len(caller), 0], caller)
    assert window_rms(audio[:, 0], 1.0, 1.2) == 0  # after the caller's last frame
    right = audio[:, 1]
    assert window_rms(right, 0.0, 0.3) > 5000
    assert window_rms(right, 0.3, 0.8) == 0
    assert window_rms(right, 0.8, 1.0) > 5000


async def test_events_transcripts_and_metadata(
    make_recorder: Callable[..., Any], tmp_path: Path
) -> None:
    """Every event in both directions is a line of events.jsonl on the same clock;
    completed turns make the transcript; metadata says who, what, when and how."""
    recorder: Recorder = await make_recorder()
    directory = FakeDirectory()
    directory.add_observer(recorder)
    call = directory.start(FakeCall(model="gpt-realtime-mini", user_agent="UA/1"))
    now = time.time()
    directory.event(call, "client", {"type": "response.create"}, now)
    user_done = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_1",
        "transcript": "What's the weather?",
    }
    agent_done = {"type": "response.output_audio_transcript.done", "transcript": "Sunny."}
    directory.event(call, "server", user_done, now + 0.5)
    directory.event(call, "server", agent_done, now + 1.0)
    directory.end(call, "caller_closed")
    await recorder.close()

    folder = folder_of(tmp_path / "recordings", call.id)
    assert folder.parent.name == datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert [(e["direction"], e["event"]["type"]) for e in lines] == [
        ("client", "response.create"),
        ("server", user_done["type"]),
        ("server", agent_done["type"]),
    ]
    assert lines[1]["t"] == now + 0.5
    turns = [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]
    assert [(t["role"], t["text"]) for t in turns] == [
        ("user", "What's the weather?"),
        ("agent", "Sunny."),
    ]
    text = (folder / "transcript.txt").read_text()
    assert "user: What's the weather?" in text and "agent: Sunny." in text
    metadata = read_metadata(folder)
    assert metadata is not None
    assert metadata["status"] == "complete"
    assert metadata["call_id"] == call.id and metadata["outcome"] == "caller_closed"
    assert metadata["model"] == "gpt-realtime-mini" and metadata["user_agent"] == "UA/1"
    assert metadata["ended_at"] >= metadata["started_at"]
    assert {f["name"] for f in metadata["files"]} == set(FILES)


@pytest.mark.parametrize(
    ("policy", "opt_in", "recorded"),
    [("off", True, False), ("opt_in", False, False), ("opt_in", True, True), ("all", False, True)],
)
async def test_policy(
    make_recorder: Callable[..., Any],
    tmp_path: Path,
    policy: str,
    opt_in: bool,
    recorded: bool,
) -> None:
    """off records nothing; opt_in only calls whose client asked; all records all."""
    recorder: Recorder = await make_recorder(policy=policy)
    call = FakeCall(record=opt_in)
    recorder.call_started(call.info())
    assert recorder.wants_agent_audio(call.id) is recorded
    recorder.call_ended(call.info(), ended("hangup"))
    await recorder.close()
    assert bool(list((tmp_path / "recordings").glob(f"*/{call.id}"))) is recorded


async def test_a_full_queue_drops_and_counts_without_blocking(
    make_recorder: Callable[..., Any], tmp_path: Path, metrics: RelayMetrics
) -> None:
    """With the writer asleep, 200 frames into a 10-item queue return at once; the
    190 dropped are counted in metrics and in the metadata."""
    recorder: Recorder = await make_recorder(
        max_queue_items=10, timing=WriterTiming(flush_interval_secs=30)
    )
    call = FakeCall()
    recorder.call_started(call.info())
    metadata_path = tmp_path / "recordings"
    # Let the writer take the start item; then it sleeps for the flush interval.
    await eventually(lambda: list(metadata_path.glob(f"*/{call.id}/metadata.json")))
    frame, now = tone(440), time.time()
    for i in range(200):
        recorder.audio(call.id, "caller", frame, now + i * FRAME_SECS)
    recorder.call_ended(call.info(), ended("hangup"))
    await recorder.close()
    failures = metrics.registry.get_sample_value(
        "realtime_relay_recording_failures_total", {"reason": "queue_full"}
    )
    assert failures == 190
    metadata = read_metadata(folder_of(metadata_path, call.id))
    assert metadata is not None and metadata["dropped_items"] == 190


def _fake_recording(root: Path, call_id: str, started_at: float, status: str) -> Path:
    day = datetime.datetime.fromtimestamp(started_at, datetime.UTC).strftime("%Y-%m-%d")
    folder = root / day / call_id
    folder.mkdir(parents=True)
    metadata = {"call_id": call_id, "status": status, "started_at": started_at}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def test_retention_deletes_old_recordings_only(tmp_path: Path) -> None:
    """Recordings older than the retention go (with their empty day folder); newer
    ones and the recordings of live calls stay; 0 days keeps everything."""
    now = time.time()
    old = _fake_recording(tmp_path, "rtc_old", now - 40 * 86400, "complete")
    live = _fake_recording(tmp_path, "rtc_live", now - 40 * 86400, "recording")
    new = _fake_recording(tmp_path, "rtc_new", now - 86400, "complete")
    assert sweep_retention(tmp_path, 0) == []
    assert sweep_retention(tmp_path, 30, active=frozenset({"rtc_live"})) == ["rtc_old"]
    assert not old.exists() and live.exists() and new.exists()
    assert sweep_retention(tmp_path, 30, now=now) == ["rtc_live"]
    assert not live.parent.exists()


async def test_admin_helpers_list_describe_and_refuse_other_paths(
    make_recorder: Callable[..., Any], tmp_path: Path
) -> None:
    recorder: Recorder = await make_recorder()
    calls = [FakeCall(), FakeCall()]
    for call in calls:
        recorder.call_started(call.info())
        await asyncio.sleep(0.01)
        recorder.call_ended(call.info(), ended("hangup"))
    await recorder.close()
    listed = recorder.list_recordings()
    assert [m["call_id"] for m in listed] == [calls[1].id, calls[0].id]
    described = recorder.describe(calls[0].id)
    assert described is not None and {f["name"] for f in described["files"]} == set(FILES)
    assert recorder.file_path(calls[0].id, "audio.wav") is not None
    assert recorder.file_path(calls[0].id, "../metadata.json") is None
    assert recorder.file_path("..", "metadata.json") is None
    assert recorder.describe("rtc_unknown") is None
    for bad in ("..", "../etc", "a/b", ".hidden", "", "x" * 200):
        assert not is_safe_id(bad)


async def test_a_failing_disk_stops_that_recording_only(
    make_recorder: Callable[..., Any], tmp_path: Path, metrics: RelayMetrics
) -> None:
    """A write that fails is counted, the writer survives, and the next call records."""
    recorder: Recorder = await make_recorder()
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    blocker = tmp_path / "recordings" / day
    blocker.write_text("not a folder")
    first = FakeCall()
    recorder.call_started(first.info())
    await eventually(
        lambda: metrics.registry.get_sample_value(
            "realtime_relay_recording_failures_total", {"reason": "io"}
        )
    )
    recorder.call_ended(first.info(), ended("hangup"))
    blocker.unlink()
    second = FakeCall()
    recorder.call_started(second.info())
    recorder.call_ended(second.info(), ended("hangup"))
    await recorder.close()
    failures = metrics.registry.get_sample_value(
        "realtime_relay_recording_failures_total", {"reason": "io"}
    )
    assert failures == 1
    metadata = read_metadata(folder_of(tmp_path / "recordings", second.id))
    assert metadata is not None and metadata["status"] == "complete"


def slow_finish(monkeypatch: pytest.MonkeyPatch, secs: float) -> None:
    """Make the writer thread take ``secs`` to finish each recording."""
    finish = CallFiles.finish

    def slow(self: CallFiles, *args: Any) -> None:
        time.sleep(secs)
        finish(self, *args)

    monkeypatch.setattr(CallFiles, "finish", slow)


async def test_a_cancelled_close_still_finalises_and_joins_the_writer(
    make_recorder: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling close() (a shutdown running out of time) does not leave the writer
    thread running: the close goes on to the join, then the cancellation goes on."""
    recorder: Recorder = await make_recorder()
    call = FakeCall()
    recorder.call_started(call.info())
    slow_finish(monkeypatch, 0.3)
    closing = asyncio.create_task(recorder.close())
    await asyncio.sleep(0.05)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    metadata = read_metadata(folder_of(tmp_path / "recordings", call.id))
    assert metadata is not None and metadata["status"] == "complete"
    assert metadata["outcome"] == "shutdown"
    assert not recorder.wants_agent_audio(call.id)
    await recorder.close()  # idempotent


async def test_a_writer_that_does_not_stop_in_time_is_reported(
    make_recorder: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder: Recorder = await make_recorder()
    call = FakeCall()
    recorder.call_started(call.info())
    slow_finish(monkeypatch, 1.0)
    started = time.monotonic()
    await recorder.close(timeout_secs=0.1)
    assert time.monotonic() - started < 0.9  # bounded
    assert any("did not stop" in r.getMessage() for r in caplog.records)
    folder = tmp_path / "recordings"
    await eventually(
        lambda: (read_metadata(folder_of(folder, call.id)) or {}).get("status") == "complete"
    )


def test_recordings_of_a_live_process_are_left_alone(tmp_path: Path) -> None:
    """finalise_unfinished never touches what another live process is writing."""
    import socket

    folder = _fake_recording(tmp_path, "rtc_other", time.time(), "recording")
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["writer"] = {"host": socket.gethostname(), "pid": os.getppid()}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    assert finalise_unfinished(tmp_path) == []
    assert json.loads((folder / "metadata.json").read_text())["status"] == "recording"


async def test_kill_9_leaves_a_readable_recording_that_the_next_start_finalises(
    tmp_path: Path,
) -> None:
    """A recording process killed with SIGKILL mid-call leaves a valid WAV holding
    both legs' audio up to about a second before the kill, and complete JSONL lines;
    finalise_unfinished then marks it interrupted and makes the header exact."""
    root = tmp_path / "recordings"
    child = Path(__file__).with_name("record_child.py")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(child), str(root), stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.strip() == b"started"
        await asyncio.sleep(2.5)
    finally:
        killed_at = time.time()
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    folder = folder_of(root, "rtc_crash_test")
    metadata = read_metadata(folder)
    assert metadata is not None and metadata["status"] == "recording"
    audio = read_stereo(folder / "audio.wav")  # the header was true at the last flush
    written_secs = len(audio) / RATE
    assert written_secs >= killed_at - metadata["started_at"] - 1.0
    last = len(audio) / RATE
    assert window_rms(audio[:, 0], last - 0.2, last) > 5000
    assert window_rms(audio[:, 1], last - 0.2, last) > 5000
    events = (folder / "events.jsonl").read_text().splitlines()
    assert len(events) >= 3

    assert finalise_unfinished(root) == ["rtc_crash_test"]
    repaired = read_metadata(folder)
    assert repaired is not None and repaired["status"] == "interrupted"
    assert repaired["ended_at"] >= metadata["started_at"] + written_secs - 0.01
    size = (folder / "audio.wav").stat().st_size
    frames = len(read_stereo(folder / "audio.wav"))
    assert size == 44 + frames * 4 and frames == repaired["audio"]["frames"]
    assert all(json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines())
    assert finalise_unfinished(root) == []  # idempotent
