"""The WebSocket leg's agent audio, unit by unit: a burst's backlog drains through
silence (never speech), and the paced sender keeps up with real time after the event
loop stalls (the latency ``bench.latency``'s ``relay-off-ws`` measures)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from test_ws_caller import FRAME_SAMPLES, FRAME_SECS, eventually

from relay.caller.websocket import AgentPcm
from relay.media.opus import Opus24kEncoder


def test_backlog_drains_through_silence_never_speech(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst leaves agent audio queued, which sending in real time would keep as
    latency for the rest of the call: silent frames are skipped while more than
    TARGET_AGENT_FRAMES wait behind them; speech is never skipped, its order kept."""
    import relay.caller.websocket as leg

    tone = (np.sin(np.arange(FRAME_SAMPLES) * 0.3) * 8000).astype(np.int16)
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    burst = [tone] * 3 + [silence] * 4 + [tone] * 3  # speech, a pause, speech: at once

    async def peaks() -> tuple[list[int], int]:
        agent, encoder = AgentPcm(max_frames=10), Opus24kEncoder()
        for pcm in burst:
            agent.push(encoder.encode(pcm))
        sent = []
        while agent.queued:
            frame = await asyncio.wait_for(agent.next_frame(), 1)
            assert frame is not None
            sent.append(int(np.abs(np.frombuffer(frame, "<i2").astype(np.int32)).max()))
        return sent, agent.caught_up

    target = leg.TARGET_AGENT_FRAMES
    monkeypatch.setattr(leg, "TARGET_AGENT_FRAMES", 100)  # the reference: nothing skipped
    everything, none = asyncio.run(peaks())
    monkeypatch.setattr(leg, "TARGET_AGENT_FRAMES", target)
    sent, skipped = asyncio.run(peaks())
    assert none == 0 and skipped > 0 and len(sent) == len(everything) - skipped
    silent = [p for p in everything if p <= leg.SILENT_PEAK]
    assert skipped <= len(silent)
    # What was sent is the reference with silent frames taken out, nothing else.
    assert [p for p in everything if p > leg.SILENT_PEAK] == [
        p for p in sent if p > leg.SILENT_PEAK
    ]
    assert sum(1 for p in sent if p > 1000) == sum(1 for p in everything if p > 1000) >= 6

    async def no_backlog() -> int:
        agent, encoder = AgentPcm(max_frames=10), Opus24kEncoder()
        for _ in range(10):  # silence as it comes, one frame at a time: all of it sent
            agent.push(encoder.encode(silence))
            assert await asyncio.wait_for(agent.next_frame(), 1) is not None
        return agent.caught_up

    assert asyncio.run(no_backlog()) == 0


async def test_paced_sender_catches_up_after_a_late_wake_up() -> None:
    """The event loop stalls 80 ms in the middle of a stream (a busy shard): the frames
    behind the stall leave back to back until the 20 ms clock is met again, so the
    stream does not fall behind real time (which would keep a backlog as latency);
    never ahead of the clock either."""
    from relay.caller.websocket import WebSocketCallerLeg

    class Socket:
        closed = False

        def __init__(self) -> None:
            self.sent: list[float] = []

        async def send_bytes(self, data: bytes) -> None:
            self.sent.append(time.monotonic())
            if len(self.sent) == 3:
                time.sleep(0.08)  # noqa: ASYNC251 -- blocks the loop, as a busy call would

    ws = Socket()
    leg = WebSocketCallerLeg(ws, call_id="rtc_test")  # type: ignore[arg-type]
    sender = asyncio.ensure_future(leg._send_agent_audio())
    encoder = Opus24kEncoder()
    tone = (np.sin(np.arange(FRAME_SAMPLES) * 0.3) * 8000).astype(np.int16)
    for _ in range(10):
        leg.play(encoder.encode(tone), 0)
    await eventually(lambda: len(ws.sent) >= 10, 2)
    for i, sent in enumerate(ws.sent):
        assert sent - ws.sent[0] >= i * FRAME_SECS - 0.003, np.diff(ws.sent)
    # Slipping by the stall would put the 10th frame 80 ms late: 260 ms after the first.
    assert ws.sent[9] - ws.sent[0] < 9 * FRAME_SECS + 0.04, np.diff(ws.sent)
    leg.stop()
    await asyncio.wait_for(sender, 1)
