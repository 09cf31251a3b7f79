"""The emulator hears and speaks, offline: Moonshine recognises an espeak-ng sentence
sent over WebRTC, and the agent answers with espeak-ng speech that can be recognised
back. Bounded: the model loads once per process (~0.4 s), each recognition of a few
seconds of speech takes ~1-3 s on the shared 2 cores."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path

import numpy as np
import pytest
from emulator_helpers import Emulator
from support import PacedAudioSource, espeak

from relay.emulator import hearing, speaking
from relay.emulator.conversation import Entry
from relay.emulator.transcription import Listener
from relay.emulator.turns import Dialogue
from relay.emulator.voice import Senses, speak, utter

SENTENCE = "Please book a table for four people at seven tonight."
RATE = 48000

pytestmark = pytest.mark.timeout(60)


def words_found(reference: str, heard: str) -> float:
    """Share of the reference's words that were heard (in any order)."""
    expected = hearing.normalise(reference).split()
    got = set(hearing.normalise(heard).split())
    return sum(1 for word in expected if word in got) / len(expected)


def band_energy_share(pcm: np.ndarray, low: float = 300.0, high: float = 3400.0) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(pcm.size, 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs <= high)].sum() / max(spectrum.sum(), 1e-9))


@pytest.fixture(scope="module")
def sentence_48k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path: Path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    return espeak(SENTENCE, path)


def test_answers_are_short_and_use_the_words() -> None:
    assert hearing.answer("") is None and hearing.answer(" .. ") is None
    assert hearing.answer("Please book a table.") == "You said: Please book a table."
    assert hearing.answer("Hello, what time is it?", now=3600 * 14 + 5 * 60) == "It is 14:05 UTC."
    assert hearing.answer("Hello there!") == "Hello! How can I help you?"
    assert hearing.answer("Can you hear me clearly?") == "Yes, I can hear you clearly."
    assert len(hearing.answer("word " * 100) or "") <= hearing.MAX_ANSWER_CHARS


def test_real_voice_words_add_up_to_the_speech() -> None:
    pcm = speaking.synthesize_sync("One two three, four five.", "alloy")
    assert pcm is not None and pcm.dtype == np.int16 and pcm.size > RATE // 2
    pieces = speaking.split_words(["One", "two", "three,", "four", "five."], pcm)
    assert len(pieces) == 5 and np.array_equal(np.concatenate(pieces), pcm)
    assert band_energy_share(pcm) > 0.6


async def test_real_voice_is_speech_the_emulator_recognises_back() -> None:
    started = time.monotonic()
    words = await utter(SENTENCE, "coral")
    assert "".join(w.text for w in words) == SENTENCE
    pcm = np.concatenate([w.pcm for w in words])
    heard = await hearing.recognize(pcm, RATE, timeout_secs=30)
    assert heard is not None and words_found(SENTENCE, heard) >= 0.7, heard
    assert hearing.load_secs is not None and hearing.load_secs < 10
    assert time.monotonic() - started < 30


async def test_without_espeak_the_synthetic_voice_speaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speaking.shutil, "which", lambda name: None)
    monkeypatch.setattr(speaking, "_failed", None)
    words = await utter("Fall back to the buzz.", "alloy")
    expected = list(speak("Fall back to the buzz.", "alloy"))
    assert [w.text for w in words] == [w.text for w in expected]
    assert all(np.array_equal(a.pcm, b.pcm) for a, b in zip(words, expected, strict=True))


async def test_without_recognition_nothing_is_heard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hearing, "_unavailable", "ImportError: no moonshine_cpp")
    entry = Entry(item={"id": "item_x"}, audio=np.ones(24000, dtype=np.int16))
    assert await Listener().hear(entry) is None
    assert "heard" not in entry.extra


async def test_emulator_hears_a_sentence_over_webrtc(
    emulator: Emulator, sentence_48k: np.ndarray
) -> None:
    """What the emulator decoded from the caller's Opus is recognised word for word."""
    source = PacedAudioSource()
    async with emulator.call(source=source) as client:
        await client.wait_for("session.created", timeout=10)
        call = await emulator.sessions.wait_for_call(timeout_secs=5)
        source.play(sentence_48k)
        await client.wait_for("input_audio_buffer.speech_stopped", timeout=15)
        entry = Entry(item={"id": "item_heard"}, audio=call.received.pcm()[::2].copy())
        heard = await Listener(timeout_secs=30).hear(entry)
    assert heard is not None and words_found(SENTENCE, heard) >= 0.7, heard
    assert entry.extra["heard"] == heard


HOOKED = "senses" in inspect.signature(Dialogue).parameters


@pytest.mark.skipif(not HOOKED, reason="turns.Dialogue does not take Senses yet")
async def test_emulator_transcribes_and_answers_in_a_real_voice(  # type: ignore[no-untyped-def]
    start_emulator, sentence_48k: np.ndarray
) -> None:
    """Transcription events carry the recognised words; the reply uses them, starts
    after the configured delay and is speech (recognised back)."""
    delay = 0.3
    emulator = await start_emulator(recognition=True, real_voice=True, response_delay_secs=delay)
    source = PacedAudioSource()
    async with emulator.call(
        source=source,
        session={
            "type": "realtime",
            "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
        },
    ) as client:
        await client.wait_for("session.created", timeout=10)
        source.play(sentence_48k)
        await client.wait_for("input_audio_buffer.speech_stopped", timeout=15)
        stopped_at = time.monotonic()
        await client.wait_for("response.created", timeout=30)
        # The response starts after the delay (later if recognition takes longer).
        assert time.monotonic() - stopped_at >= delay - 0.02
        completed = await client.wait_for(
            "conversation.item.input_audio_transcription.completed", timeout=30
        )
        assert words_found(SENTENCE, completed["transcript"]) >= 0.7, completed
        deltas = [
            e["delta"]
            for e in client.events
            if e["type"] == "conversation.item.input_audio_transcription.delta"
        ]
        assert "".join(deltas) == completed["transcript"]
        done = await client.wait_for("response.done", timeout=30)
        await client.wait_for("output_audio_buffer.stopped", timeout=30)
        reply = done["response"]["output"][0]["content"][0]["transcript"]
        assert reply.startswith("You said: ") and words_found(SENTENCE, reply) >= 0.7, reply
        agent = client.sink.samples()
    loud = agent[np.abs(agent) > 300]
    assert loud.size > RATE // 2, "no reply audio"
    assert band_energy_share(agent) > 0.5
    loud_at = np.flatnonzero(np.abs(agent) > 300)
    spoken = agent[max(loud_at[0] - RATE // 4, 0) : loud_at[-1] + RATE // 4]
    heard_back = await hearing.recognize(spoken, RATE, timeout_secs=30)
    assert heard_back is not None and words_found(reply, heard_back) >= 0.6, heard_back


async def test_recognition_stays_off_the_event_loop() -> None:
    """While an utterance is recognised, the loop keeps ticking every ~10 ms."""
    pcm = speaking.synthesize_sync(SENTENCE, "alloy")
    assert pcm is not None
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    try:
        assert await hearing.recognize(pcm, RATE, timeout_secs=30)
    finally:
        ticker.cancel()
    gaps = np.diff(ticks)
    assert gaps.size > 10 and float(gaps.max()) < 0.25, float(gaps.max())
    # Too slow: abandoned, its worker ended; the next utterance gets a new one.
    assert await hearing.recognize(pcm, RATE, timeout_secs=0.05) is None
    again = await hearing.recognize(pcm, RATE, timeout_secs=30)
    assert again is not None and words_found(SENTENCE, again) >= 0.7, again


def test_senses_come_from_the_settings() -> None:
    from relay.emulator.settings import EmulatorSettings

    assert Senses.of(EmulatorSettings()) == Senses(False, False, 15.0)
    on = EmulatorSettings(recognition=True, real_voice=True, recognition_timeout_secs=5)
    assert Senses.of(on) == Senses(True, True, 5.0)
