"""Turn-taking on real received speech (espeak): VAD, commit, transcription,
responses with audible agent audio, barge-in, manual commit."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
from emulator_helpers import Emulator, in_order, index_of
from support import rms_dbfs

RATE = 48000
SPOKEN_TURN = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "output_audio_buffer.started",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
    "rate_limits.updated",
    "output_audio_buffer.stopped",
]
LONG_REPLY = (
    "This is a deliberately long answer from the emulated model, so that there is "
    "plenty of agent audio still playing when the caller starts to talk over it, and "
    "still more being generated after that, which the barge-in must cancel."
)


def vad(**overrides: object) -> dict[str, object]:
    return {"type": "server_vad", "silence_duration_ms": 500, **overrides}


async def test_spoken_turn(emulator: Emulator, speech_48k: np.ndarray) -> None:
    session = {
        "type": "realtime",
        "audio": {
            "input": {"transcription": {"model": "gpt-4o-mini-transcribe"}, "turn_detection": vad()}
        },
    }
    async with emulator.call(session=session) as client:
        await client.wait_for("session.created")
        await asyncio.sleep(0.3)  # some silence first: the input timeline starts earlier
        client.source.play(speech_48k)
        done = await client.wait_for("response.done", timeout=20)
        await client.wait_for("output_audio_buffer.stopped", timeout=15)
        await client.wait_for("conversation.item.input_audio_transcription.completed", timeout=5)
        types = client.types()
        assert in_order(types, SPOKEN_TURN), types
        assert types.count("input_audio_buffer.speech_started") == 1, types

        started = client.events[index_of(types, "input_audio_buffer.speech_started")]
        stopped = client.events[index_of(types, "input_audio_buffer.speech_stopped")]
        committed = client.events[index_of(types, "input_audio_buffer.committed")]
        user_item = client.events[index_of(types, "conversation.item.added")]["item"]
        assert started["item_id"] == stopped["item_id"] == committed["item_id"] == user_item["id"]
        assert committed["previous_item_id"] is None
        assert user_item["role"] == "user" and user_item["content"][0]["type"] == "input_audio"
        assert started["audio_start_ms"] >= 0
        spoken_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
        assert 3500 <= spoken_ms <= 5000, spoken_ms  # 3.8 s of speech + padding + silence

        # gpt-4o-*-transcribe: several incremental deltas adding up to the transcript.
        deltas = [e["delta"] for e in client.events if e["type"].endswith("transcription.delta")]
        completed = client.events[
            index_of(types, "conversation.item.input_audio_transcription.completed")
        ]
        assert len(deltas) > 1 and "".join(deltas) == completed["transcript"]
        seconds = float(
            re.fullmatch(r"I spoke for (\d+\.\d) seconds\.", completed["transcript"]).group(1)
        )  # type: ignore[union-attr]
        assert 3.0 <= seconds <= 4.0, completed["transcript"]
        assert completed["usage"]["type"] == "tokens"

        reply = done["response"]["output"][0]["content"][0]["transcript"]
        assert reply == f"You spoke for {seconds:.1f} seconds."
        assert done["response"]["usage"]["input_token_details"]["audio_tokens"] > 0

        # Real, audible, speech-band agent audio reached the caller.
        agent = client.sink.samples()
        loud = client.sink.loud_frames(-40.0)
        assert loud > 40, loud  # "You spoke for 3.7 seconds." is ~1.7 s of speech
        assert rms_dbfs(agent[np.abs(agent) > 0]) > -35
        spectrum = np.abs(np.fft.rfft(agent.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(agent.size, 1 / RATE)
        assert spectrum[(freqs >= 300) & (freqs <= 3400)].sum() > 0.7 * spectrum.sum()

        # The test hook saw the caller's speech.
        call = emulator.sessions.calls()[0]
        assert call.received.loud_frames(-40.0) > 100
        assert call.received.max_dbfs() > -25
        assert call.received.pcm().size > 4 * RATE
        assert any(e.get("type") == "session.update" for e in call.client_events) is False
        assert call.server_events[0]["type"] == "session.created"


async def test_barge_in(emulator: Emulator, speech_48k: np.ndarray) -> None:
    session = {
        "type": "realtime",
        "audio": {
            "input": {
                "transcription": {"model": "whisper-1"},
                # No reply to the interruption: the line must stay quiet afterwards.
                "turn_detection": vad(create_response=False, silence_duration_ms=300),
            }
        },
    }
    async with emulator.call(session=session) as client:
        await client.wait_for("session.created")
        client.send({"type": "response.create", "response": {"instructions": f"Say: {LONG_REPLY}"}})
        await client.wait_for("output_audio_buffer.started", timeout=10)
        await asyncio.sleep(1.0)
        client.source.play(speech_48k[: int(1.2 * RATE)])  # "Hello there."
        speech = await client.wait_for("input_audio_buffer.speech_started", timeout=5)
        truncated = await client.wait_for("conversation.item.truncated", timeout=5)
        truncated_at = time.monotonic()
        types = client.types()
        at = index_of(types, "input_audio_buffer.speech_started")
        assert types[at : at + 1] == ["input_audio_buffer.speech_started"]
        assert in_order(
            types[at:],
            ["response.done", "output_audio_buffer.cleared", "conversation.item.truncated"],
        )
        done = client.events[index_of(types, "response.done", at)]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        cleared = client.events[index_of(types, "output_audio_buffer.cleared")]
        assert cleared["response_id"] == done["response"]["id"]
        item_id = done["response"]["output"][0]["id"]
        assert truncated["item_id"] == item_id and truncated["content_index"] == 0
        assert 800 <= truncated["audio_end_ms"] <= 3000, truncated
        assert speech["item_id"] != item_id

        # The agent's audio stops on the track.
        await asyncio.sleep(1.2)
        after = [
            frame
            for frame, arrived in zip(client.sink.frames, client.sink.arrival, strict=True)
            if arrived > truncated_at + 0.3
        ]
        assert len(after) > 30
        assert all(rms_dbfs(frame) < -60 for frame in after)
        assert "output_audio_buffer.stopped" not in client.types()

        # The assistant item keeps only what was heard.
        client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        kept = (await client.wait_for("conversation.item.retrieved"))["item"]["content"][0][
            "transcript"
        ]
        assert 0 < len(kept) < len(LONG_REPLY) and LONG_REPLY.startswith(kept)

        # The interruption itself became a user turn; whisper-1 sends one whole delta.
        completed = await client.wait_for("conversation.item.input_audio_transcription.completed")
        deltas = [e for e in client.events if e["type"].endswith("transcription.delta")]
        assert [d["delta"] for d in deltas] == [completed["transcript"]]
        assert completed["item_id"] == speech["item_id"]
        assert completed["usage"]["type"] == "duration"
        assert client.types().count("response.created") == 1


async def test_manual_commit(emulator: Emulator, speech_48k: np.ndarray) -> None:
    session = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    async with emulator.call(session=session) as client:
        created = await client.wait_for("session.created")
        assert created["session"]["audio"]["input"]["turn_detection"] is None
        client.send({"type": "input_audio_buffer.clear"})
        await client.wait_for("input_audio_buffer.cleared")
        client.source.play(speech_48k[: int(1.2 * RATE)])
        await asyncio.sleep(1.6)
        assert "input_audio_buffer.speech_started" not in client.types()
        client.send({"type": "input_audio_buffer.commit"})
        committed = await client.wait_for("input_audio_buffer.committed")
        await asyncio.sleep(0.3)
        assert "response.created" not in client.types()  # a commit alone never answers
        client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        done = await client.wait_for("response.done")
        text = done["response"]["output"][0]["content"][0]["text"]
        assert re.fullmatch(r"You spoke for \d\.\d seconds\.", text), text
        client.send({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
        retrieved = (await client.wait_for("conversation.item.retrieved"))["item"]
        audio = retrieved["content"][0]["audio"]  # base64 pcm16 at 24 kHz
        assert 1.2 <= len(audio) * 3 / 4 / 2 / 24000 <= 2.5


async def test_transcription_session(emulator: Emulator, speech_48k: np.ndarray) -> None:
    session = {
        "type": "transcription",
        "audio": {
            "input": {"transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": vad()}
        },
    }
    async with emulator.call(session=session) as client:
        created = (await client.wait_for("session.created"))["session"]
        assert (
            created["type"] == "transcription"
            and created["object"] == "realtime.transcription_session"
        )
        client.source.play(speech_48k[: int(1.2 * RATE)])
        completed = await client.wait_for(
            "conversation.item.input_audio_transcription.completed", timeout=8
        )
        assert completed["transcript"].startswith("I spoke for ")
        client.send({"type": "response.create", "event_id": "no"})
        error = (await client.wait_for("error"))["error"]
        assert error["event_id"] == "no"
        assert "response.created" not in client.types()
