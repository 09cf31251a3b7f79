"""The operator HTTP surface over real HTTP and real WebSockets: auth, live calls,
event and listen-in streams, recordings, /metrics and the monitor page."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from relay.config import Secret
from relay.http.errors import error_middleware
from relay.http.ops_routes import setup_ops_routes
from relay.media.pcm import level_dbfs
from relay.ops.components import Ops
from relay.ops.metrics import RelayMetrics
from relay.ops.monitor import MonitorHub, MonitorLimits, mulaw_decode
from relay.ops.recording import Recorder

from .fakes import FRAME_SECS, FakeCall, FakeDirectory, eventually, tone

ADMIN = "admin-token-123"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
WS_AUTH = ("relay-monitor", f"bearer.{ADMIN}")


@dataclass
class OpsApp:
    client: TestClient[web.Request, web.Application]
    directory: FakeDirectory
    ops: Ops

    def gauge(self, name: str, **labels: str) -> float:
        found = self.ops.metrics.registry.get_sample_value("realtime_relay_" + name, labels)
        return 0.0 if found is None else found


MakeApp = Callable[..., Awaitable[OpsApp]]


@pytest.fixture
def make_app(aiohttp_client: AiohttpClient, tmp_path: Path) -> MakeApp:
    async def make(
        *,
        admin: str | None = ADMIN,
        metrics_token: str | None = None,
        recorder: bool = False,
        event_queue_size: int = 1000,
    ) -> OpsApp:
        metrics = RelayMetrics(process=False)
        directory = FakeDirectory()
        ops = Ops(
            directory=directory,
            metrics=metrics,
            hub=MonitorHub(
                directory.snapshot_of, metrics, MonitorLimits(event_queue_size=event_queue_size)
            ),
            recorder=Recorder(tmp_path / "rec", policy="all", metrics=metrics)
            if recorder
            else None,
            admin_token=Secret(admin) if admin else None,
            metrics_token=Secret(metrics_token) if metrics_token else None,
            max_calls=10,
        )
        app = web.Application(middlewares=[error_middleware])
        setup_ops_routes(app, ops)
        return OpsApp(await aiohttp_client(app), directory, ops)

    return make


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    error: dict[str, Any] = body["error"]
    return error


async def test_admin_routes_need_the_admin_token(make_app: MakeApp) -> None:
    """No token or a wrong one: 401 in OpenAI's envelope; no admin token configured:
    403; the right token as header or WebSocket subprotocol: in."""
    app = await make_app()
    call = app.directory.start(FakeCall())
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": ADMIN}):
        response = await app.client.get("/api/calls", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await error_of(response))["code"] == "invalid_api_key"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await app.client.ws_connect(f"/api/calls/{call.id}/events", protocols=("relay-monitor",))
    assert refused.value.status == 401
    assert (await app.client.get("/api/recordings")).status == 401
    assert (await app.client.get("/api/calls", headers=AUTH)).status == 200
    ws = await app.client.ws_connect(f"/api/calls/{call.id}/events", protocols=WS_AUTH)
    assert ws.protocol == "relay-monitor"
    await ws.close()

    disabled = await make_app(admin=None)
    response = await disabled.client.get("/api/calls", headers=AUTH)
    assert response.status == 403 and (await error_of(response))["code"] == "admin_api_disabled"


async def test_live_calls_are_listed_with_their_snapshot(make_app: MakeApp) -> None:
    app = await make_app()
    call = app.directory.start(FakeCall(model="gpt-realtime"))
    listed = await (await app.client.get("/api/calls", headers=AUTH)).json()
    assert listed["object"] == "list" and [c["id"] for c in listed["data"]] == [call.id]
    one = await (await app.client.get(f"/api/calls/{call.id}", headers=AUTH)).json()
    assert one == call.snapshot()
    missing = await app.client.get("/api/calls/rtc_nope", headers=AUTH)
    assert missing.status == 404 and (await error_of(missing))["param"] == "call_id"


async def test_event_stream_is_snapshot_then_live_then_end(make_app: MakeApp) -> None:
    app = await make_app()
    call = app.directory.start(FakeCall())
    app.directory.event(call, "server", {"type": "session.created"}, time.time())
    ws = await app.client.ws_connect(f"/api/calls/{call.id}/events", protocols=WS_AUTH)
    snapshot = await ws.receive_json(timeout=5)
    assert snapshot["type"] == "relay.snapshot" and snapshot["call"]["id"] == call.id
    assert [e["event"]["type"] for e in snapshot["events"]] == ["session.created"]
    assert app.gauge("monitor_subscribers", kind="events") == 1
    event = {
        "type": "conversation.item.input_audio_transcription.completed",
        "transcript": "hello",
    }
    app.directory.event(call, "server", event, time.time())
    live = await ws.receive_json(timeout=5)
    assert live["type"] == "relay.event" and live["event"] == event
    app.directory.end(call, "hangup")
    ended = await ws.receive_json(timeout=5)
    assert ended["type"] == "relay.call_ended" and ended["outcome"] == "hangup"
    assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await ws.close()
    assert app.gauge("monitor_subscribers", kind="events") == 0


async def test_a_subscriber_that_leaves_is_forgotten(make_app: MakeApp) -> None:
    app = await make_app()
    call = app.directory.start(FakeCall())
    ws = await app.client.ws_connect(f"/api/calls/{call.id}/listen", protocols=WS_AUTH)
    assert app.gauge("monitor_subscribers", kind="listen") == 1
    await ws.close()
    await eventually(lambda: app.gauge("monitor_subscribers", kind="listen") == 0)
    app.directory.audio(call, "caller", tone(440), time.time())  # nobody to send to


async def test_a_stalled_subscriber_loses_events_instead_of_slowing_the_call(
    make_app: MakeApp,
) -> None:
    """A monitor that stops reading while 20 MB of events go out: the socket backs up,
    its queue keeps the newest events and counts the rest (so what the call hands over
    never waits on the socket), and the monitor is told how many it missed when it reads
    again."""
    app = await make_app(event_queue_size=10)
    call = app.directory.start(FakeCall())
    ws = await app.client.ws_connect(f"/api/calls/{call.id}/events", protocols=WS_AUTH)
    await ws.receive_json(timeout=5)  # the snapshot; then the client stops reading
    big = {"type": "response.output_text.done", "text": "x" * 100_000}
    for _ in range(200):
        app.directory.event(call, "server", big, time.time())
        await asyncio.sleep(0.001)  # let the sender run, as a real call's loop would
    dropped = app.gauge("monitor_dropped_total", kind="events")
    assert dropped > 0
    notices = []
    async with asyncio.timeout(20):
        while not notices:
            message = await ws.receive_json()
            if message["type"] == "relay.dropped":
                notices.append(message["count"])
    assert 0 < notices[0] <= dropped
    await ws.close()


async def test_listen_pcm16_sends_the_frames_as_they_came(make_app: MakeApp) -> None:
    app = await make_app()
    call = app.directory.start(FakeCall())
    url = f"/api/calls/{call.id}/listen?track=caller&format=pcm16"
    ws = await app.client.ws_connect(url, protocols=WS_AUTH)
    t0 = time.time()
    frames = [tone(440, start=i * 480) for i in range(5)]
    for i, frame in enumerate(frames):
        app.directory.audio(call, "caller", frame, t0 + i * FRAME_SECS)
        app.directory.audio(call, "agent", tone(1000), t0 + i * FRAME_SECS)
    received = [await ws.receive_bytes(timeout=5) for _ in frames]
    assert received == [f.astype("<i2").tobytes() for f in frames]
    await ws.close()


async def test_listen_twilio_speaks_media_streams(make_app: MakeApp) -> None:
    """connected, start, media per track (mu-law 8 kHz, 160 bytes per 20 ms), and stop
    when the call ends."""
    app = await make_app()
    call = app.directory.start(FakeCall())
    ws = await app.client.ws_connect(
        f"/api/calls/{call.id}/listen?track=both&format=twilio", protocols=WS_AUTH
    )
    assert (await ws.receive_json(timeout=5))["event"] == "connected"
    start = await ws.receive_json(timeout=5)
    assert start["event"] == "start" and start["start"]["tracks"] == ["inbound", "outbound"]
    t0 = time.time()
    for i in range(10):
        app.directory.audio(call, "caller", tone(440, start=i * 480), t0 + i * FRAME_SECS)
        app.directory.audio(call, "agent", tone(1000, start=i * 480), t0 + i * FRAME_SECS)
    media = [await ws.receive_json(timeout=5) for _ in range(20)]
    app.directory.end(call, "hangup")
    assert (await ws.receive_json(timeout=5))["event"] == "stop"
    await ws.close()
    assert {m["media"]["track"] for m in media} == {"inbound", "outbound"}
    assert all(m["streamSid"] == start["streamSid"] for m in media)
    inbound = [
        base64.b64decode(m["media"]["payload"]) for m in media if m["media"]["track"] == "inbound"
    ]
    assert all(len(p) == 160 for p in inbound)
    decoded = mulaw_decode(b"".join(inbound[2:]))
    assert level_dbfs(decoded) == pytest.approx(level_dbfs(tone(440, frames=8)), abs=1.0)


async def test_listen_rejects_bad_parameters_and_plain_http(make_app: MakeApp) -> None:
    app = await make_app()
    call = app.directory.start(FakeCall())
    for query, param in (("track=everyone", "track"), ("format=mp3", "format")):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await app.client.ws_connect(f"/api/calls/{call.id}/listen?{query}", protocols=WS_AUTH)
        assert refused.value.status == 400, param
    plain = await app.client.get(f"/api/calls/{call.id}/events", headers=AUTH)
    assert plain.status == 400 and (await error_of(plain))["code"] == "websocket_required"
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
        await app.client.ws_connect("/api/calls/rtc_nope/listen", protocols=WS_AUTH)
    assert missing.value.status == 404


async def test_recordings_can_be_listed_described_and_downloaded(make_app: MakeApp) -> None:
    app = await make_app(recorder=True)
    call = app.directory.start(FakeCall())
    t0 = time.time()
    for i in range(10):
        app.directory.audio(call, "caller", tone(440, start=i * 480), t0 + i * FRAME_SECS)
    app.directory.event(call, "client", {"type": "response.create"}, t0)
    app.directory.end(call, "hangup")
    assert app.ops.recorder is not None
    await app.ops.recorder.close()  # finalised and flushed: what an operator downloads later

    listed = await (await app.client.get("/api/recordings", headers=AUTH)).json()
    assert [m["call_id"] for m in listed["data"]] == [call.id]
    described = await (await app.client.get(f"/api/recordings/{call.id}", headers=AUTH)).json()
    assert described["status"] == "complete"
    assert "audio.wav" in {f["name"] for f in described["files"]}
    wav = await app.client.get(f"/api/recordings/{call.id}/audio.wav", headers=AUTH)
    assert wav.status == 200 and wav.headers["Content-Type"] == "audio/wav"
    assert wav.headers["Content-Disposition"] == f'attachment; filename="{call.id}-audio.wav"'
    assert (await wav.read())[:4] == b"RIFF"
    events = await app.client.get(f"/api/recordings/{call.id}/events.jsonl", headers=AUTH)
    assert json.loads((await events.text()).splitlines()[0])["event"]["type"] == "response.create"
    for path in (
        f"/api/recordings/{call.id}/..%2Fmetadata.json",
        f"/api/recordings/{call.id}/passwd",
        "/api/recordings/..%2F..%2Fetc/passwd",
        "/api/recordings/rtc_nope",
    ):
        assert (await app.client.get(path, headers=AUTH)).status == 404, path


async def test_metrics_are_served_and_optionally_need_a_token(make_app: MakeApp) -> None:
    app = await make_app()
    response = await app.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    assert "realtime_relay_calls_capacity 10.0" in text

    guarded = await make_app(metrics_token="scrape-me")
    assert (await guarded.client.get("/metrics")).status == 401
    ok = await guarded.client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status == 200


async def test_the_monitor_page_and_its_assets_are_served(make_app: MakeApp) -> None:
    app = await make_app()
    redirect = await app.client.get("/monitor", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"] == "/monitor/"
    page = await app.client.get("/monitor/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "monitor.js" in await page.text()
    script = await app.client.get("/monitor/monitor.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert (await app.client.get("/monitor/..%2Fapp.js")).status == 404
    assert (await app.client.get("/monitor/index.html")).status == 404


async def test_shutdown_ends_open_streams(make_app: MakeApp) -> None:
    """A monitor left connected does not hold up the app's shutdown."""
    app = await make_app()
    call = app.directory.start(FakeCall())
    ws = await app.client.ws_connect(f"/api/calls/{call.id}/events", protocols=WS_AUTH)
    await ws.receive_json(timeout=5)
    started = time.monotonic()
    await app.client.close()
    assert time.monotonic() - started < 3
    assert app.gauge("monitor_subscribers", kind="events") == 0


async def test_no_log_line_carries_the_admin_token_whatever_the_client_offers(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """A WebSocket that authenticates with ``bearer.<token>`` alone (no ``relay-monitor``),
    or with the token in its header and odd subprotocols, is served, and nothing it
    offered reaches a log line: aiohttp logs the subprotocols that match none of the
    server's, token included."""
    caplog.set_level(logging.DEBUG)
    app = await make_app()
    call = app.directory.start(FakeCall())
    offers: list[tuple[tuple[str, ...], dict[str, str]]] = [
        ((f"bearer.{ADMIN}",), {}),
        (("chat", f"bearer.{ADMIN}"), {}),
        ((f"bearer.{ADMIN}", "relay-monitor"), {}),
        ((ADMIN, "x"), AUTH),  # the token as a bare subprotocol, authorised by header
    ]
    for protocols, headers in offers:
        for route in ("events", "listen"):
            ws = await app.client.ws_connect(
                f"/api/calls/{call.id}/{route}", protocols=protocols, headers=headers
            )
            await ws.close()
    plain = await app.client.get(
        f"/api/calls/{call.id}/events",
        headers={**AUTH, "Sec-WebSocket-Protocol": f"bearer.{ADMIN}, {ADMIN}"},
    )
    assert plain.status == 400
    app.directory.end(call, "hangup")
    await app.client.close()
    assert caplog.records, "nothing was logged at all: the capture is not working"
    for record in caplog.records:
        text = record.getMessage() + (caplog.text if record.exc_info else "")
        assert ADMIN not in text, f"{record.name}: {text}"
    assert ADMIN not in caplog.text


async def test_recording_downloads_refuse_symlinks(make_app: MakeApp, tmp_path: Path) -> None:
    """A file of a recording folder that is a symlink (to a file outside, or even to a
    sibling inside) is not served; neither is a call folder that is a symlink."""
    app = await make_app(recorder=True)
    call = app.directory.start(FakeCall())
    app.directory.event(call, "client", {"type": "response.create"}, time.time())
    app.directory.end(call, "hangup")
    assert app.ops.recorder is not None
    await app.ops.recorder.close()
    folder = app.ops.recorder.find(call.id)
    assert folder is not None
    secret = tmp_path / "secret.txt"
    secret.write_text("not a recording")
    (folder / "transcript.txt").unlink(missing_ok=True)
    (folder / "transcript.txt").symlink_to(secret)
    (folder / "transcript.jsonl").unlink(missing_ok=True)
    (folder / "transcript.jsonl").symlink_to(folder / "events.jsonl")
    ok = await app.client.get(f"/api/recordings/{call.id}/events.jsonl", headers=AUTH)
    assert ok.status == 200
    for name in ("transcript.txt", "transcript.jsonl"):
        response = await app.client.get(f"/api/recordings/{call.id}/{name}", headers=AUTH)
        assert response.status == 404, name
        assert "not a recording" not in await response.text()
    described = await (await app.client.get(f"/api/recordings/{call.id}", headers=AUTH)).json()
    assert {"transcript.txt", "transcript.jsonl"}.isdisjoint(f["name"] for f in described["files"])

    # A whole call folder that is a link to a folder elsewhere.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "metadata.json").write_text(json.dumps({"call_id": "rtc_linked"}))
    (outside / "events.jsonl").write_text("not a recording\n")
    (folder.parent / "rtc_linked").symlink_to(outside, target_is_directory=True)
    linked = await app.client.get("/api/recordings/rtc_linked/events.jsonl", headers=AUTH)
    assert linked.status == 404
