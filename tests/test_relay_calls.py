"""A caller's call through the relay to the emulator, end to end: real aiortc peers,
real Opus, real HTTP, real speech (espeak-ng)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client, rms_dbfs

from relay import aiortc_patches
from relay.http.state import SETTINGS

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)

TURN_EVENTS_IN_ORDER = [
    "session.created",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "response.created",
    "output_audio_buffer.started",
    "response.done",
    "output_audio_buffer.stopped",
]


def in_order(types: list[str], expected: list[str]) -> bool:
    position = 0
    for kind in types:
        if position < len(expected) and kind == expected[position]:
            position += 1
    return position == len(expected)


async def call_relay(relay: RelayUnderTest, client: RealtimeClient, **post: object) -> str:
    response = await client.connect(relay.http, relay.calls_url, "", **post)
    body = await response.text()
    assert response.status == 201, body
    assert response.headers["Content-Type"].startswith("application/sdp")
    location = response.headers["Location"]
    assert location.startswith("/v1/realtime/calls/rtc_")
    return location.rsplit("/", 1)[-1]


async def speak_a_transcribed_turn(client: RealtimeClient, speech_48k: np.ndarray) -> None:
    """Turn transcription on, speak, and wait for the user's transcript."""
    client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "whisper-1"}}},
            },
        }
    )
    await client.wait_for("session.updated")
    client.source.play(speech_48k)
    transcript = await client.wait_for(
        "conversation.item.input_audio_transcription.completed", timeout=20
    )
    assert transcript["transcript"]


async def test_spoken_turn_through_relay(relay: RelayUnderTest, speech_48k: np.ndarray) -> None:
    """Speech from the caller reaches OpenAI's emulator as a turn; the agent's answer
    (events and audible audio) comes back to the caller through the relay."""
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        assert relay.registry.get(call_id) is not None
        await client.wait_for("session.created", timeout=10)
        await speak_a_transcribed_turn(client, speech_48k)
        await client.wait_for("output_audio_buffer.stopped", timeout=30)
        assert in_order(client.types(), TURN_EVENTS_IN_ORDER), client.types()
        for event in client.events:
            SERVER_EVENT.validate_python(event)
        agent = client.sink.samples()
        assert client.sink.loud_frames() > 25, "the agent's audio did not reach the caller"
        assert rms_dbfs(agent) > -50
        call = relay.registry.get_call(call_id)
        # Timed to the first agent packet with sound in it, not the silence before it.
        assert call.agent_audio.last_response_secs is not None
        assert 0.04 < call.agent_audio.last_response_secs < 5
        snapshot = call.snapshot()
        assert snapshot["state"] == "active"
        assert snapshot["transport"] == "udp"
        assert snapshot["audio"]["caller_frames_out"] > 25
        assert any(t["role"] == "user" for t in snapshot["transcripts"])


async def test_hangup_releases_everything(relay: RelayUnderTest) -> None:
    """After hangup: the call is gone, both peer connections closed, tasks and
    decoder threads released."""
    threads_before = decoder_threads()
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        call = relay.registry.get_call(call_id)
        await client.wait_for("session.created", timeout=10)
        response = await relay.http.post(relay.url(f"/v1/realtime/calls/{call_id}/hangup"))
        assert response.status == 200
        assert relay.registry.get(call_id) is None
        assert call.state == "ended"
        assert call.caller_pc.connectionState == "closed"
        assert call.upstream_pc.connectionState == "closed"
        assert not call._tasks
        again = await relay.http.post(relay.url(f"/v1/realtime/calls/{call_id}/hangup"))
        assert again.status == 404
        assert (await again.json())["error"]["code"] == "call_not_found"
    await _eventually(lambda: decoder_threads() <= threads_before, 5)


async def test_client_that_just_closes_ends_the_call(relay: RelayUnderTest) -> None:
    """A client that closes its peer connection without hangup ends the call in < 5 s."""
    client = RealtimeClient(PacedAudioSource())
    call_id = await call_relay(relay, client)
    await client.wait_for("session.created", timeout=10)
    closed_at = time.monotonic()
    await client.close()
    await _eventually(lambda: relay.registry.get(call_id) is None, 5)
    assert time.monotonic() - closed_at < 5


async def test_calls_end_on_shutdown(start_relay: RelayFactory) -> None:
    """Shutting the app down closes every call (both legs) within the bound."""
    relay = await start_relay()
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        call = relay.registry.get_call(call_id)
        started = time.monotonic()
        await relay.server.close()
        assert time.monotonic() - started < 10
        assert call.state == "ended" and call.outcome == "shutdown"
        assert call.upstream_pc.connectionState == "closed"


def decoder_threads() -> int:
    """aiortc's per-receiver decoder threads (the loop's executor threads are pooled)."""
    return sum(1 for t in threading.enumerate() if t.name.endswith("-decoder"))


async def _eventually(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def pink_noise(seconds: float, dbfs: float, seed: int = 7) -> np.ndarray:
    """Deterministic 1/f noise at 48 kHz, int16, at an RMS of ``dbfs``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 48000)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
    noise = np.fft.irfft(spectrum, n)
    noise *= 10 ** (dbfs / 20) / np.sqrt(np.mean(noise**2))
    return (noise * 32767).astype(np.int16)


async def received_noise_and_speech_dbfs(
    relay: RelayUnderTest, speech: np.ndarray
) -> tuple[float, float]:
    """Median level the emulator received during 2 s of noise alone, and the loudest
    frame while speech plays over the same noise."""
    from relay.embedded import EMULATOR
    from relay.emulator.app import SESSIONS

    noise = pink_noise(2.0 + speech.size / 48000, -35.0)
    mixed = noise.astype(np.int32)
    mixed[96000 : 96000 + speech.size] += speech
    async with realtime_client(PacedAudioSource()) as client:
        await call_relay(relay, client)
        emulated = await relay.app[EMULATOR][SESSIONS].wait_for_call(timeout_secs=5)
        client.source.play(np.clip(mixed, -32768, 32767).astype(np.int16))
        while client.source.playing:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        levels = list(emulated.received.frame_dbfs)
    assert len(levels) > 100 + speech.size // 960
    noise_only = float(np.median(levels[40:90]))  # after the suppressor settles
    speech_peak = float(np.max(levels[100:]))
    return noise_only, speech_peak


async def test_noise_is_reduced_before_openai(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    """With libwebrtc's suppressor on, steady noise reaching OpenAI drops by well over
    6 dB, while the speech stays about as loud."""
    plain = await start_relay(noise_suppression="off")
    noise_off, speech_off = await received_noise_and_speech_dbfs(plain, speech_48k)
    suppressed = await start_relay(noise_suppression="webrtc")
    noise_on, speech_on = await received_noise_and_speech_dbfs(suppressed, speech_48k)
    assert noise_off - noise_on > 6, (noise_off, noise_on)
    assert speech_off - speech_on < 6, (speech_off, speech_on)


async def test_rnnoise_mode_reduces_noise_too(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    """The opt-in RNNoise mode runs in the real media path and suppresses steady noise."""
    plain = await start_relay(noise_suppression="off")
    noise_off, _ = await received_noise_and_speech_dbfs(plain, speech_48k[:48000])
    rnnoise = await start_relay(noise_suppression="rnnoise")
    noise_on, _ = await received_noise_and_speech_dbfs(rnnoise, speech_48k[:48000])
    assert noise_off - noise_on > 6, (noise_off, noise_on)


async def test_listen_only_caller_is_not_hung_up(relay: RelayUnderTest) -> None:
    """A client without a microphone (recvonly audio) is not taken for a dead caller,
    and hears the agent's spoken answer to a typed message."""
    async with realtime_client(send_audio=False) as client:
        call_id = await call_relay(relay, client)
        await asyncio.sleep(relay.app[SETTINGS].media_timeout_secs + 1)
        assert relay.registry.get(call_id) is not None
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hello"}],
                },
            }
        )
        client.send({"type": "response.create"})
        await client.wait_for("output_audio_buffer.stopped", timeout=20)
        assert client.sink.loud_frames() > 10


async def test_a_muted_caller_that_stops_sending_is_not_hung_up(relay: RelayUnderTest) -> None:
    """Liveness is about the caller being there, not about it talking: a client that
    stops sending RTP (its microphone track removed) while its connection is alive
    stays in the call; its ICE agent keeps answering the relay's checks."""
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        await client.wait_for("session.created", timeout=10)
        call = relay.registry.get_call(call_id)
        client.pc.getSenders()[0].replaceTrack(None)  # no more RTP from here on
        await asyncio.sleep(0.5)
        frames = call.caller_audio.frames_in
        await asyncio.sleep(relay.app[SETTINGS].media_timeout_secs * 2 + 1)
        assert call.caller_audio.frames_in == frames, "the client was still sending"
        assert call.state == "active"
        client.send({"type": "session.update", "session": {"type": "realtime"}})
        await client.wait_for("session.updated")


async def test_a_caller_that_vanishes_is_hung_up(relay: RelayUnderTest) -> None:
    """A caller whose process is gone (no goodbye, no ICE answers) is hung up once its
    audio has stopped for the media timeout and a check finds nobody there."""
    client = RealtimeClient(PacedAudioSource())
    call_id = await call_relay(relay, client)
    await client.wait_for("session.created", timeout=10)
    call = relay.registry.get_call(call_id)
    for transceiver in client.pc.getTransceivers():  # silence, then ignore every packet
        transceiver.sender.replaceTrack(None)
    for connection in aiortc_patches.ice_connections(client.pc):
        connection.request_received = lambda *args: None  # type: ignore[method-assign]
    gone_at = time.monotonic()
    await asyncio.wait_for(call.wait_closed(), relay.app[SETTINGS].media_timeout_secs + 3)
    assert call.outcome == "caller_media_timeout"
    assert time.monotonic() - gone_at < relay.app[SETTINGS].media_timeout_secs + 2
    await client.close()
