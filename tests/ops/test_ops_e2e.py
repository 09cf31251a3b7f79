"""Operator features on a real relayed call: the relay app with its embedded emulator,
an aiortc caller speaking real speech, and every operator component attached.

One call drives everything: the live calls API, the event stream, listen-in, metrics,
the recording (audio on the wall clock, events, transcript) and the webhooks."""

from __future__ import annotations

import json
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer
from relay_fixtures import BASE_SETTINGS, RelayFactory
from support import PacedAudioSource, realtime_client

from relay.config import Secret, Settings
from relay.embedded import build_app
from relay.http.ops_routes import OPS
from relay.ops.components import Ops
from relay.ops.recording import Recorder, read_metadata
from relay.ops.webhooks import verify_signature

from .fakes import eventually

ADMIN = "e2e-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
WS_AUTH = ("relay-monitor", f"bearer.{ADMIN}")
WEBHOOK_SECRET = "e2e-webhook-secret"


@dataclass
class OpsRelay:
    server: TestServer
    http: aiohttp.ClientSession
    ops: Ops
    hooks: list[tuple[dict[str, str], bytes]]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def metric(self, name: str, **labels: str) -> float:
        found = self.ops.metrics.registry.get_sample_value("realtime_relay_" + name, labels)
        return 0.0 if found is None else found


@pytest.fixture
async def ops_relay(tmp_path: Path, aiohttp_server: AiohttpServer) -> AsyncIterator[OpsRelay]:
    hooks: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        hooks.append((dict(request.headers), await request.read()))
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    hook_server = await aiohttp_server(receiver, host="127.0.0.1")

    settings = replace(
        BASE_SETTINGS,
        admin_token=Secret(ADMIN),
        recording_policy="all",
        recording_dir=str(tmp_path / "recordings"),
        webhook_urls=(str(hook_server.make_url("/hook")),),
        webhook_secret=Secret(WEBHOOK_SECRET),
    )
    app = build_app(settings)
    ops = app[OPS]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    http = aiohttp.ClientSession()
    try:
        yield OpsRelay(server, http, ops, hooks)
    finally:
        await http.close()
        await server.close()


async def test_one_relayed_call_seen_by_every_operator_feature(
    ops_relay: OpsRelay, speech_48k: np.ndarray
) -> None:
    relay = ops_relay
    async with realtime_client(PacedAudioSource()) as client:
        response = await client.connect(relay.http, relay.url("/v1/realtime/calls"), "")
        assert response.status == 201, await response.text()
        call_id = (client.location or "").rsplit("/", 1)[-1]
        await client.wait_for("session.created", timeout=10)

        listed = await (await relay.http.get(relay.url("/api/calls"), headers=AUTH)).json()
        assert [c["id"] for c in listed["data"]] == [call_id]
        events_ws = await relay.http.ws_connect(
            relay.url(f"/api/calls/{call_id}/events"), protocols=WS_AUTH
        )
        snapshot = await events_ws.receive_json(timeout=5)
        assert snapshot["type"] == "relay.snapshot" and snapshot["call"]["id"] == call_id
        listen_ws = await relay.http.ws_connect(
            relay.url(f"/api/calls/{call_id}/listen?track=caller"), protocols=WS_AUTH
        )
        first_audio = await listen_ws.receive_bytes(timeout=5)
        assert len(first_audio) == 960  # 20 ms of 24 kHz PCM16

        client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                },
            }
        )
        spoke_at = time.time()
        client.source.play(speech_48k)
        await client.wait_for("conversation.item.input_audio_transcription.completed", 20)
        await client.wait_for("output_audio_buffer.stopped", timeout=30)
        live = await _collect_until(events_ws, "output_audio_buffer.stopped")
        assert "conversation.item.input_audio_transcription.completed" in live
        await listen_ws.close()

        hangup = await relay.http.post(
            relay.url(f"/v1/realtime/calls/{call_id}/hangup"), headers=AUTH
        )
        assert hangup.status == 200
        ended = await _collect_until(events_ws, "relay.call_ended")
        assert ended[-1] == "relay.call_ended"
        await events_ws.close()

    assert relay.metric("calls_total", outcome="hangup") == 1
    assert relay.metric("calls_active") == 0
    assert relay.metric("datachannel_events_total", type="session.created", direction="server")
    assert relay.metric("datachannel_events_total", type="session.update", direction="client")
    # The recorder makes the call decode the agent's audio, so the observer sees it.
    assert relay.metric("agent_response_latency_seconds_count") >= 1

    assert relay.ops.recorder is not None
    await relay.ops.recorder.close()  # finalised: what an operator downloads afterwards
    _check_recording(relay.ops.recorder, call_id, spoke_at)

    await eventually(lambda: len(relay.hooks) >= 3, 10)
    kinds = [json.loads(body)["type"] for _, body in relay.hooks]
    assert {"call.started", "transcript.completed", "call.ended"} <= set(kinds)
    for headers, body in relay.hooks:
        assert verify_signature(
            WEBHOOK_SECRET, body, headers["X-Relay-Timestamp"], headers["X-Relay-Signature"]
        )


async def _collect_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> list[str]:
    """Types of the monitor messages (event types for relay.event) up to ``kind``."""
    seen: list[str] = []
    while True:
        message: dict[str, Any] = await ws.receive_json(timeout=10)
        name = message["event"]["type"] if message["type"] == "relay.event" else message["type"]
        seen.append(name)
        if name == kind:
            return seen


def _check_recording(recorder: Recorder, call_id: str, spoke_at: float) -> None:
    """Both legs are in the WAV on the wall clock of events.jsonl: the caller's speech
    starts when it was played and the agent's audio when OpenAI said its output audio
    started; events in both directions and the transcript are there."""
    folder = recorder.find(call_id)
    assert folder is not None
    metadata = read_metadata(folder)
    assert metadata is not None and metadata["status"] == "complete"
    assert metadata["outcome"] == "hangup" and metadata["model"]
    with wave.open(str(folder / "audio.wav"), "rb") as wav:
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    duration = metadata["ended_at"] - metadata["started_at"]
    assert len(audio) / 24000 == pytest.approx(duration, abs=0.5)
    caller_onset = _onset_secs(audio[:, 0])
    agent_onset = _onset_secs(audio[:, 1])
    assert caller_onset is not None and agent_onset is not None
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert {e["direction"] for e in events} == {"client", "server"}
    output_started = next(
        e["t"] for e in events if e["event"]["type"] == "output_audio_buffer.started"
    )
    # 0.3 s: 20 ms analysis windows, plus jitter buffer and pacing on each leg.
    assert caller_onset == pytest.approx(spoke_at - metadata["started_at"], abs=0.3)
    assert agent_onset == pytest.approx(output_started - metadata["started_at"], abs=0.3)
    turns = (folder / "transcript.jsonl").read_text()
    assert '"role": "user"' in turns


def _onset_secs(samples: np.ndarray, threshold_dbfs: float = -40.0) -> float | None:
    """Start of the first 20 ms window louder than ``threshold_dbfs``."""
    frames = samples[: len(samples) // 480 * 480].reshape(-1, 480).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1)) / 32768
    loud = np.flatnonzero(rms > 10 ** (threshold_dbfs / 20))
    return float(loud[0] * 480 / 24000) if loud.size else None


async def test_the_event_limit_fits_the_message_size_the_relay_advertises(
    start_relay: RelayFactory,
) -> None:
    """A browser may send what the relay's answer allows (``a=max-message-size``, SCTP);
    the default event limit must not promise more than that."""
    relay = await start_relay()
    async with realtime_client() as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        answer = client.pc.remoteDescription.sdp
    sizes = [
        int(line.split(":", 1)[1]) for line in answer.splitlines() if "max-message-size" in line
    ]
    assert sizes, answer
    assert Settings().max_event_bytes <= min(sizes)
    assert BASE_SETTINGS.max_event_bytes == Settings().max_event_bytes
