"""A process that records one call in real time until it is killed (the crash test).

Usage: ``python record_child.py <root>``. Prints ``started`` once the call is being
recorded, then feeds 20 ms caller (440 Hz) and agent (880 Hz) frames stamped with the
wall clock, plus a transcript event every half second, forever."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.fakes import FRAME_SECS, FakeCall, tapped, tone  # noqa: E402
from relay.ops.recording import Recorder, WriterTiming  # noqa: E402
from relay.taps import TranscriptEntry  # noqa: E402

CALL_ID = "rtc_crash_test"


async def main(root: Path) -> None:
    recorder = Recorder(root, policy="all", timing=WriterTiming(flush_interval_secs=0.25))
    await recorder.open()
    call = FakeCall(CALL_ID)
    recorder.call_started(call.info())
    print("started", flush=True)
    t0 = time.time()
    index = 0
    while True:
        stamp = t0 + index * FRAME_SECS
        await asyncio.sleep(max(0.0, stamp - time.time()))
        recorder.audio(call.id, "caller", tone(440, start=index * 480), stamp)
        recorder.audio(call.id, "agent", tone(880, start=index * 480), stamp)
        if index % 25 == 0:
            done = {"type": "response.output_audio_transcript.done", "transcript": f"turn {index}"}
            recorder.event(call.id, tapped("server", done, stamp))
            recorder.transcript(call.id, TranscriptEntry("agent", f"turn {index}", None, stamp))
        index += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
