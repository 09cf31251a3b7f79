"""MonitorHub and its audio helpers: snapshots, live events, levels, listen-in,
bounded subscriber queues, mu-law and 24 kHz -> 8 kHz."""

from __future__ import annotations

import time
import warnings

import numpy as np

from relay.media.pcm import level_dbfs
from relay.ops.metrics import RelayMetrics
from relay.ops.monitor import (
    Downsampler24kTo8k,
    MonitorHub,
    MonitorLimits,
    TwilioStream,
    mulaw_decode,
    mulaw_encode,
)

from .fakes import FRAME_SECS, FakeCall, FakeDirectory, tone


def hub_with_call(**options: int) -> tuple[MonitorHub, FakeDirectory, FakeCall, RelayMetrics]:
    metrics = RelayMetrics(process=False)
    directory = FakeDirectory()
    hub = MonitorHub(directory.snapshot_of, metrics, MonitorLimits(**options))
    directory.add_observer(hub)
    return hub, directory, directory.start(FakeCall()), metrics


def drain(sub: object) -> list[object]:
    items = []
    queue = getattr(sub, "_items")  # noqa: B009 - reading the queue without awaiting
    while queue:
        items.append(queue.popleft())
    return items


def test_mulaw_is_bit_exact_with_g711() -> None:
    """Every int16 value encodes as the reference G.711 (audioop) does; decoding
    inverts it within the quantisation step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the reference, deprecated: only to check against here

    samples = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    assert mulaw_encode(samples) == audioop.lin2ulaw(samples.tobytes(), 2)
    every_code = bytes(range(256))
    reference = np.frombuffer(audioop.ulaw2lin(every_code, 2), dtype=np.int16)
    assert np.array_equal(mulaw_decode(every_code), reference)


def test_downsampler_keeps_speech_band_and_removes_what_8k_cannot_hold() -> None:
    """A 1 kHz tone passes at full level, a 6 kHz tone (above 4 kHz) is removed, and
    20 ms frames give 160 samples each, identical to filtering in one piece."""
    one_second = 50

    def run(freq: float, chunk: int) -> np.ndarray:
        samples = tone(freq, frames=one_second)
        down = Downsampler24kTo8k()
        return np.concatenate(
            [down.process(samples[i : i + chunk]) for i in range(0, len(samples), chunk)]
        )

    passed, removed = run(1000, 480), run(6000, 480)
    assert len(passed) == 8000
    assert level_dbfs(passed[400:]) > level_dbfs(tone(1000, frames=10)) - 0.5
    assert level_dbfs(removed[400:]) < -60
    assert np.array_equal(run(1000, 480), run(1000, 24000))


def test_event_subscribers_get_a_snapshot_then_live_events_then_the_end() -> None:
    hub, directory, call, metrics = hub_with_call(history_events=2)
    for i in range(3):
        directory.event(call, "server", {"type": "response.created", "n": i}, time.time())
    sub = hub.subscribe_events(call.id)
    assert sub is not None
    live_snapshot = call.snapshot()
    user_done = {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_1",
        "transcript": "Hello?",
    }
    directory.event(call, "server", user_done, time.time())
    directory.event(call, "client", {"type": "response.create"}, time.time())
    directory.end(call, "hangup")
    snapshot, _, live, ended = drain(sub)
    assert isinstance(snapshot, dict) and snapshot["type"] == "relay.snapshot"
    assert snapshot["call"] == live_snapshot  # the call's own, as it was then
    assert [e["event"]["n"] for e in snapshot["events"]] == [1, 2]  # history is bounded
    assert isinstance(live, dict) and live["direction"] == "client"
    assert isinstance(ended, dict) and ended["type"] == "relay.call_ended"
    assert ended["outcome"] == "hangup"
    # What the monitor page reads of it: the end of the call and its transcript.
    assert {k: ended["call"][k] for k in ("id", "state", "outcome", "model")} == {
        "id": call.id,
        "state": "ended",
        "outcome": "hangup",
        "model": call.model,
    }
    assert ended["call"]["ended_at"] == call.ended_at
    assert ended["call"]["transcripts"] == call.snapshot()["transcripts"]
    assert ended["call"]["transcripts"][0]["text"] == "Hello?"
    assert sub.closed
    assert (
        metrics.registry.get_sample_value("realtime_relay_monitor_subscribers", {"kind": "events"})
        == 0
    )
    assert hub.subscribe_events(call.id) is None  # ended calls cannot be subscribed


def test_levels_are_sent_ten_times_a_second_and_agent_audio_is_wanted() -> None:
    hub, directory, call, _ = hub_with_call()
    assert not hub.wants_agent_audio(call.id)
    sub = hub.subscribe_events(call.id)
    assert sub is not None and hub.wants_agent_audio(call.id)
    t0 = time.time()
    for i in range(25):  # 0.5 s
        directory.audio(call, "caller", tone(440, start=i * 480), t0 + i * FRAME_SECS)
    levels = [m for m in drain(sub) if isinstance(m, dict) and m["type"] == "relay.levels"]
    assert 4 <= len(levels) <= 6
    assert all(-14 < m["caller_dbfs"] < -12 and m["agent_dbfs"] is None for m in levels[1:])


def test_a_slow_listener_costs_the_call_nothing_and_drops_oldest() -> None:
    """A listener that never reads holds at most its queue (the newest frames), and
    the drops are counted."""
    hub, directory, call, metrics = hub_with_call(audio_queue_frames=10)
    sub = hub.subscribe_listen(call.id, "caller", "pcm16")
    assert sub is not None
    t0 = time.time()
    for i in range(500):
        directory.audio(call, "caller", tone(440, start=i * 480), t0 + i * FRAME_SECS)
    assert len(sub) == 10 and sub.dropped == 490
    kept = drain(sub)
    assert kept[0][2] == t0 + 490 * FRAME_SECS  # the newest frames are the ones kept
    assert (
        metrics.registry.get_sample_value(
            "realtime_relay_monitor_dropped_total", {"kind": "listen"}
        )
        == 490
    )


def test_both_tracks_are_mixed_for_pcm16_and_separate_for_twilio() -> None:
    hub, directory, call, _ = hub_with_call()
    mixed = hub.subscribe_listen(call.id, "both", "pcm16")
    twilio = hub.subscribe_listen(call.id, "both", "twilio")
    caller_only = hub.subscribe_listen(call.id, "caller", "pcm16")
    assert mixed is not None and twilio is not None and caller_only is not None
    now = time.time()
    a, b = tone(440), tone(1000)
    directory.audio(call, "caller", a, now)
    directory.audio(call, "agent", b, now)
    [(which, pcm, _)] = drain(mixed)
    assert which == "mix" and np.array_equal(pcm, (a.astype(int) + b).astype(np.int16))
    assert [item[0] for item in drain(twilio)] == ["caller", "agent"]
    assert [item[0] for item in drain(caller_only)] == ["caller"]
    for i in range(5):  # the agent goes quiet: the caller's frames are not held for long
        directory.audio(call, "caller", a, now + (i + 1) * FRAME_SECS)
    assert len(drain(mixed)) == 2


def test_twilio_messages_follow_media_streams() -> None:
    stream = TwilioStream("rtc_1", ["inbound"], clock=lambda: 100.0)
    start = stream.start()
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert (
        start["start"]["streamSid"] == start["streamSid"] and start["start"]["callSid"] == "rtc_1"
    )
    first = stream.media("caller", tone(440), 100.0)
    second = stream.media("caller", tone(440, start=480), 100.02)
    assert first["media"]["track"] == "inbound"
    assert (first["sequenceNumber"], second["sequenceNumber"]) == ("2", "3")
    assert (first["media"]["chunk"], second["media"]["chunk"]) == ("1", "2")
    assert second["media"]["timestamp"] == "20"
    import base64

    assert len(base64.b64decode(second["media"]["payload"])) == 160
    assert stream.stop()["sequenceNumber"] == "4"
