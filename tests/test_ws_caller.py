"""A call over the WebSocket caller leg, end to end: an aiohttp WebSocket client streams
real speech (espeak-ng) as 24 kHz PCM16 frames to the relay, which calls the embedded
emulator over WebRTC and plays the agent back on the same socket, paced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from relay_fixtures import BASE_SETTINGS, RelayUnderTest
from support import rms_dbfs

from relay.caller.websocket import AgentPcm
from relay.embedded import build_app
from relay.http.ops_routes import OPS
from relay.media.opus import Opus24kEncoder
from relay.media.pcm import To24kMono
from relay.ops.recording import read_metadata
from relay.taps import Observer, Speaker

FRAME_SAMPLES = 480  # 20 ms at 24 kHz
FRAME_SECS = 0.02
WS_PATH = "/v1/realtime/ws"
TRANSCRIPTION = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
}


def to_24k_frames(samples_48k: np.ndarray) -> list[bytes]:
    frames = To24kMono(48000).push(samples_48k.astype(np.int16))
    return [f.astype("<i2").tobytes() for f in frames]


SILENCE = np.zeros(FRAME_SAMPLES, dtype="<i2").tobytes()


@dataclass
class WsCaller:
    """The test's browser: a WebSocket, a paced microphone, what came back."""

    ws: aiohttp.ClientWebSocketResponse
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Where each event came in the socket's stream (audio and events share it).
    event_seq: list[int] = field(default_factory=list)
    #: (arrival, place in the stream, samples)
    audio: list[tuple[float, int, np.ndarray]] = field(default_factory=list)
    received: int = 0
    pending: list[bytes] = field(default_factory=list)
    sent_frames: int = 0
    _waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = field(default_factory=list)

    def play(self, frames: list[bytes]) -> None:
        self.pending.extend(frames)

    async def send_microphone(self) -> None:
        """20 ms frames in real time: queued speech, else silence (a live microphone)."""
        started = time.monotonic()
        while not self.ws.closed:
            frame = self.pending.pop(0) if self.pending else SILENCE
            await self.ws.send_bytes(frame)
            self.sent_frames += 1
            await asyncio.sleep(
                max(0.0, started + self.sent_frames * FRAME_SECS - time.monotonic())
            )

    async def receive(self) -> None:
        async for message in self.ws:
            self.received += 1
            if message.type == aiohttp.WSMsgType.BINARY:
                pcm = np.frombuffer(message.data, dtype="<i2")
                self.audio.append((time.monotonic(), self.received, pcm))
            elif message.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(message.data)
                self.events.append(event)
                self.event_seq.append(self.received)
                for kind, future in list(self._waiters):
                    if kind == event["type"] and not future.done():
                        future.set_result(event)

    async def wait_for(self, kind: str, timeout: float = 20, after: int = 0) -> dict[str, Any]:
        """The first ``kind`` event from the ``after``-th on, waiting if need be."""
        for event in self.events[after:]:
            if event["type"] == kind:
                return event
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((kind, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(f"no {kind} within {timeout} s: {self.events}") from None

    def send(self, event: dict[str, Any]) -> None:
        asyncio.ensure_future(self.ws.send_str(json.dumps(event)))  # noqa: RUF006

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def loud_frames(self, after_seq: int = 0) -> list[float]:
        """Arrival times of the audible agent frames that came after the ``after_seq``-th
        message of the socket."""
        return [t for t, seq, pcm in self.audio if seq > after_seq and rms_dbfs(pcm) > -45]


@contextlib.asynccontextmanager
async def ws_call(
    http: aiohttp.ClientSession, url: str, secret: str | None = None
) -> AsyncIterator[WsCaller]:
    protocols = ["realtime"] + ([f"openai-insecure-api-key.{secret}"] if secret else [])
    ws = await http.ws_connect(url, protocols=protocols)
    caller = WsCaller(ws)
    tasks = [
        asyncio.ensure_future(caller.receive()),
        asyncio.ensure_future(caller.send_microphone()),
    ]
    try:
        yield caller
    finally:
        await ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Heard(Observer):
    """A test observer: the canonical frames the taps carry, per speaker."""

    name = "test"

    def __init__(self) -> None:
        self.frames: dict[Speaker, list[np.ndarray]] = {"caller": [], "agent": []}
        self.started: list[str] = []

    def call_started(self, call: Any) -> None:
        self.started.append(call.call_id)

    def audio(self, call_id: str, speaker: Speaker, pcm: np.ndarray, wallclock: float) -> None:
        self.frames[speaker].append(pcm.copy())

    def loud(self, speaker: Speaker) -> int:
        return sum(1 for f in self.frames[speaker] if rms_dbfs(f) > -45)


async def eventually(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def mint(relay: RelayUnderTest) -> str:
    response = await relay.http.post(relay.url("/v1/realtime/client_secrets"), json={})
    assert response.status == 200, await response.text()
    return str((await response.json())["value"])


async def speak_a_turn(caller: WsCaller, speech_48k: np.ndarray) -> None:
    """Transcription on, the speech streamed, its transcript back."""
    caller.send(TRANSCRIPTION)
    await caller.wait_for("session.updated")
    caller.play(to_24k_frames(speech_48k))
    transcript = await caller.wait_for(
        "conversation.item.input_audio_transcription.completed", timeout=20
    )
    assert transcript["transcript"]


def max_lead(arrivals: list[float], pause_secs: float = 0.2) -> float:
    """How many frames ahead of real time the arrivals ever got, counted from the start
    of each stretch of audio (a pause longer than ``pause_secs`` starts a new one)."""
    worst, start, count = 0.0, 0.0, 0
    for i, t in enumerate(arrivals):
        if i == 0 or t - arrivals[i - 1] > pause_secs:
            start, count = t, 0
        count += 1
        worst = max(worst, count - 1 - (t - start) / FRAME_SECS)
    return worst


async def test_spoken_turn_over_websocket(relay: RelayUnderTest, speech_48k: np.ndarray) -> None:
    """Speech streamed as PCM frames reaches OpenAI's emulator as a turn (the user's
    transcript comes back), the agent's answer comes back as audible PCM paced in real
    time, and the taps hear the caller."""
    heard = Heard()
    relay.registry.add_observer(heard)
    secret = await mint(relay)
    async with ws_call(relay.http, relay.url(WS_PATH), secret) as caller:
        hello = await caller.wait_for("relay.call", timeout=10)
        assert hello["transport"] == "websocket"
        await caller.wait_for("session.created", timeout=10)
        call = relay.registry.get_call(hello["call_id"])
        assert call is not None and call.snapshot()["transport"] == "websocket"
        await speak_a_turn(caller, speech_48k)
        started = await caller.wait_for("output_audio_buffer.started", timeout=20)
        assert started
        await caller.wait_for("output_audio_buffer.stopped", timeout=30)
        loud = caller.loud_frames()
        assert len(loud) > 25, "the agent's audio did not reach the caller"
        arrivals = [t for t, _, _ in caller.audio]
        # Paced: never ahead of real time (a late read only puts frames behind it).
        assert max_lead(arrivals) <= 3, max_lead(arrivals)
        snapshot = call.snapshot()
        assert snapshot["legs"]["caller"]["connection_state"] == "connected"
        assert snapshot["audio"]["caller_frames_in"] > 100
        # Every frame the relay counts as sent arrives (one may still be on its way).
        assert 0 <= snapshot["audio"]["caller_frames_out"] - len(caller.audio) <= 1
        assert any(t["role"] == "user" for t in snapshot["transcripts"])
        assert heard.loud("caller") > 50, "the taps did not hear the caller"
        assert all(f.size == FRAME_SAMPLES for f in heard.frames["caller"])
    # The socket closing is the caller hanging up.
    await eventually(lambda: relay.registry.get(hello["call_id"]) is None, 5)
    assert call.outcome == "caller_closed"


async def test_noise_suppression_runs_on_pcm(start_relay: Any, speech_48k: np.ndarray) -> None:
    """With the suppressor on, PCM goes 24 -> 48 kHz -> suppressor -> 24 kHz canonical:
    the taps still hear the speech, in whole 20 ms frames, and OpenAI transcribes it."""
    relay = await start_relay(noise_suppression="webrtc")
    heard = Heard()
    relay.registry.add_observer(heard)
    async with ws_call(relay.http, relay.url(WS_PATH)) as caller:
        await caller.wait_for("session.created", timeout=10)
        await speak_a_turn(caller, speech_48k)
        await eventually(lambda: heard.loud("caller") > 100, 10)
        assert all(f.size == FRAME_SAMPLES for f in heard.frames["caller"])


async def test_barge_in_clears_agent_audio(relay: RelayUnderTest, speech_48k: np.ndarray) -> None:
    """Speaking over the agent: OpenAI clears its output, the relay drops the agent
    audio it still holds, and the socket goes quiet within a few frames."""
    async with ws_call(relay.http, relay.url(WS_PATH)) as caller:
        hello = await caller.wait_for("relay.call", timeout=10)
        await caller.wait_for("session.created", timeout=10)
        caller.play(to_24k_frames(speech_48k[:48000]))  # "Hello there."
        await caller.wait_for("output_audio_buffer.started", timeout=20)
        await eventually(lambda: len(caller.loud_frames()) > 10, 10)
        before = len(caller.events)
        caller.play(to_24k_frames(speech_48k))  # barge in
        await caller.wait_for("output_audio_buffer.cleared", timeout=10, after=before)
        cleared = caller.event_seq[caller.types().index("output_audio_buffer.cleared", before)]
        await asyncio.sleep(0.5)
        # Audio and events share the socket, in order: nothing audible after the clear.
        late = caller.loud_frames(after_seq=cleared)
        assert len(late) <= 1, f"{len(late)} agent frames after the barge-in"
        call = relay.registry.get_call(hello["call_id"])
        assert call is not None
        assert call.caller.snapshot()["agent_frames_queued"] <= 1


def test_barge_in_drops_queued_frames() -> None:
    """The paced sender's queue: a burst waits (the oldest beyond 200 ms dropped), and a
    clear drops everything queued before it, not what comes after."""

    async def run() -> None:
        agent = AgentPcm(max_frames=10)
        encoder = Opus24kEncoder()
        tone = (np.sin(np.arange(FRAME_SAMPLES) * 0.3) * 8000).astype(np.int16)
        for _ in range(15):
            agent.push(encoder.encode(tone))
        assert agent.queued == 10 and agent.dropped >= 4
        agent.clear()
        agent.push(encoder.encode(tone))
        frame = await asyncio.wait_for(agent.next_frame(), 1)
        assert frame is not None and len(frame) == FRAME_SAMPLES * 2
        assert agent.cleared == 9 and agent.queued == 0  # the 10th was dropped for the new one
        agent.clear(hold=True)
        agent.push(encoder.encode(tone))
        assert agent.queued == 0 and agent.cleared == 10
        agent.resume()
        agent.push(encoder.encode(tone))
        assert agent.queued == 1

    asyncio.run(run())


async def test_unauthorised_socket_is_refused(start_relay: Any) -> None:
    """Outside open mode a socket without a valid client secret gets a 401 before the
    upgrade, and no call is made."""
    from relay.config import Secret

    relay = await start_relay(open_mode=False, relay_api_key=Secret("sk-relay-test"))
    for protocols in (["realtime"], ["realtime", "openai-insecure-api-key.ek_wrong"]):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await relay.http.ws_connect(relay.url(WS_PATH), protocols=protocols)
        assert refused.value.status == 401
    assert len(relay.registry) == 0


@pytest.mark.parametrize("upstream_transport", ["webrtc", "websocket"])
async def test_recording_has_both_channels(
    tmp_path: Path, speech_48k: np.ndarray, upstream_transport: str
) -> None:
    """With recording_policy="all", a WebSocket call's recording has the caller and the
    agent, each on its own channel (the agent's decoded from OpenAI's Opus, or, from a
    WebSocket upstream, the PCM the relay plays)."""
    settings = replace(
        BASE_SETTINGS,
        recording_policy="all",
        recording_dir=str(tmp_path / "recordings"),
        upstream_transport=upstream_transport,
    )
    app = build_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    http = aiohttp.ClientSession()
    try:
        async with ws_call(http, str(server.make_url(WS_PATH))) as caller:
            hello = await caller.wait_for("relay.call", timeout=10)
            await caller.wait_for("session.created", timeout=10)
            caller.play(to_24k_frames(speech_48k))
            await caller.wait_for("output_audio_buffer.stopped", timeout=30)
        call_id = hello["call_id"]
        recorder = app[OPS].recorder
        assert recorder is not None
        await eventually(lambda: recorder.find(call_id) is not None, 5)
        await recorder.close()
        folder = recorder.find(call_id)
        assert folder is not None
        metadata = read_metadata(folder)
        assert metadata is not None and metadata["status"] == "complete"
        with wave.open(str(folder / "audio.wav"), "rb") as wav:
            audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
        assert rms_dbfs(audio[:, 0]) > -50, "no caller audio in the recording"
        assert rms_dbfs(audio[:, 1]) > -50, "no agent audio in the recording"
    finally:
        await http.close()
        await server.close()


async def test_plain_get_is_refused_without_a_call(relay: RelayUnderTest) -> None:
    response = await relay.http.get(relay.url(WS_PATH))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "websocket_required"
    assert len(relay.registry) == 0


async def test_agent_audio_is_paced_from_a_burst() -> None:
    """A burst of agent packets (a network hiccup upstream) leaves at 20 ms intervals,
    never faster; beyond 200 ms queued, the oldest is dropped."""
    from relay.caller.websocket import WebSocketCallerLeg

    class Socket:
        closed = False

        def __init__(self) -> None:
            self.sent: list[float] = []

        async def send_bytes(self, data: bytes) -> None:
            self.sent.append(time.monotonic())

    ws = Socket()
    leg = WebSocketCallerLeg(ws, call_id="rtc_test")  # type: ignore[arg-type]
    sender = asyncio.ensure_future(leg._send_agent_audio())
    encoder = Opus24kEncoder()
    tone = (np.sin(np.arange(FRAME_SAMPLES) * 0.3) * 8000).astype(np.int16)
    for _ in range(14):
        leg.play(encoder.encode(tone), 0)
    await eventually(lambda: len(ws.sent) >= 10, 2)
    await asyncio.sleep(0.1)
    assert len(ws.sent) == 10 and leg.dropped_out >= 3
    # Never ahead of a 20 ms clock (a late wake-up may catch up by one frame, no more).
    for i, sent in enumerate(ws.sent):
        assert sent - ws.sent[0] >= i * FRAME_SECS - 0.003, np.diff(ws.sent)
    leg.stop()
    await asyncio.wait_for(sender, 1)
