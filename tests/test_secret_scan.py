"""No secret ever leaves the relay (issue 2/8, "make it stay fixed").

A relay with distinctive keys (OpenAI key, relay API key, admin token, metrics token,
webhook secret, a token in the webhook URL), recording on and a local webhook receiver,
runs a real call (speech, transcripts, events good and bad, listen-in, monitoring,
hangup) and every error path there is: wrong keys of every kind, bad offers, bad
events, OpenAI refusing the relay's key (a second relay with a wrong OpenAI key against
the same emulator), and two shards (their private token and their emulator key). Every
response (status line, headers, body), WebSocket message, log record (``relay`` and
``aiohttp`` at DEBUG), byte printed, file written and webhook received is searched for
each secret, raw and as hex or base64."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fuzzing import ALWAYS_ADMIT
from relay_fixtures import BASE_SETTINGS
from support import PacedAudioSource, RealtimeClient, realtime_client
from test_hostile_security import running_shards

from relay.config import EmulatorSettings, Secret, Settings
from relay.embedded import build_app
from relay.emulator.app import create_emulator_app
from relay.http.app import UPSTREAM

OPENAI_KEY = "sk-proj-SCANopenai-4f1d9c2b7a6e5d8c3b1a0f9e8d7c6b5a4"
WRONG_OPENAI_KEY = "sk-proj-SCANwrongkey-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
RELAY_KEY = "rk-SCANrelaykey-2b4d6f8a0c2e4a6c8e0b2d4f6a8c0e2d4f"
ADMIN = "adm-SCANadmintoken-7f5e3d1c9b7a5f3e1d9c7b5a3f1e9d7c5b"
METRICS = "met-SCANmetricstoken-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d"
WEBHOOK_SECRET = "whs-SCANwebhooksecret-5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f"
WEBHOOK_URL_TOKEN = "hooktok-SCANurltoken-8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b"
TURN_SECRET = "turn-SCANturnsecret-3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d"
#: TURN credentials are minted only where the relay has the settings for them.
HAS_TURN = "turn_secret" in {f.name for f in fields(Settings)}
SECRETS = (
    OPENAI_KEY,
    WRONG_OPENAI_KEY,
    RELAY_KEY,
    ADMIN,
    METRICS,
    WEBHOOK_SECRET,
    WEBHOOK_URL_TOKEN,
    TURN_SECRET,
)
SPEECH_SECS = 2.5
TRANSCRIBED = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}


def forms(secret: str) -> list[bytes]:
    """``secret`` as it could appear: raw, hex (both cases), and base64 (standard and
    URL-safe) at each of the three alignments it can have inside longer encoded text
    (the edge characters, which depend on the neighbours, left out)."""
    raw = secret.encode()
    found = [raw, binascii.hexlify(raw), binascii.hexlify(raw).upper()]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        stable = encoded[(offset * 4 + 2) // 3 + 1 : -4]
        found += [stable, stable.replace(b"+", b"-").replace(b"/", b"_")]
    return found


@dataclass
class Haystack:
    """Everything the relay let out, as bytes, each piece labelled with where from."""

    pieces: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, where: str, data: bytes | str) -> None:
        self.pieces.append(
            (where, data.encode("utf-8", "replace") if isinstance(data, str) else data)
        )

    def leaks(self, secrets: tuple[str, ...]) -> list[str]:
        found = []
        for secret in secrets:
            needles = forms(secret)
            for where, data in self.pieces:
                if any(needle in data for needle in needles):
                    found.append(f"{secret[:12]}... in {where}: {data[:200]!r}")
        return found


@dataclass
class Http:
    """An HTTP client whose every answer is kept in the haystack."""

    session: aiohttp.ClientSession
    hay: Haystack

    async def request(self, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        async with self.session.request(method, url, **kwargs) as response:
            body = await response.read()
            self.keep(f"{method} {url}", response, body)
            return response.status, body

    def keep(self, what: str, response: aiohttp.ClientResponse, body: bytes = b"") -> None:
        head = f"{response.status} {response.reason}\n".encode()
        head += b"".join(k + b": " + v + b"\n" for k, v in response.raw_headers)
        self.hay.add(f"answer to {what}", head + body)

    async def websocket(
        self, url: str, protocols: tuple[str, ...], messages: int, **kwargs: Any
    ) -> int:
        """Open a WebSocket, keep up to ``messages`` messages; the handshake's status."""
        try:
            ws = await self.session.ws_connect(url, protocols=protocols, **kwargs)
        except aiohttp.WSServerHandshakeError as exc:
            self.hay.add(f"refused WebSocket {url}", f"{exc.status} {exc.message} {exc.headers}")
            return exc.status
        self.hay.add(f"WebSocket {url} handshake", str(ws._response.raw_headers))
        for _ in range(messages):
            try:
                message = await ws.receive(timeout=5)
            except TimeoutError:
                break
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.hay.add(f"WebSocket {url} message", message.data)
            else:
                break
        await ws.close()
        return 101


async def webhook_receiver(hooks: list[tuple[str, bytes]]) -> TestServer:
    async def receive(request: web.Request) -> web.Response:
        headers = "".join(f"{k}: {v}\n" for k, v in request.headers.items())
        hooks.append((headers, await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", receive)
    # No access log: the receiver's own log (the URL's token in it) is not the relay's.
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(access_log=None)
    return server


async def emulator_with_key(key: str) -> TestServer:
    emulator = create_emulator_app(EmulatorSettings(api_keys=(key,), ice_addresses=("127.0.0.1",)))
    server = TestServer(emulator, host="127.0.0.1")
    await server.start_server()
    return server


async def relay_server(settings: Settings) -> TestServer:
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    return server


def scan_settings(emulator_url: str, hook_url: str, recordings: Path) -> Settings:
    turn: dict[str, Any] = {}
    if HAS_TURN:
        turn = {"turn_secret": Secret(TURN_SECRET), "turn_urls": ("turn:127.0.0.1:3478",)}
    return replace(
        BASE_SETTINGS,
        open_mode=False,
        openai_api_key=Secret(OPENAI_KEY),
        openai_base_url=emulator_url,
        relay_api_key=Secret(RELAY_KEY),
        admin_token=Secret(ADMIN),
        metrics_token=Secret(METRICS),
        webhook_secret=Secret(WEBHOOK_SECRET),
        webhook_urls=(f"{hook_url}?token={WEBHOOK_URL_TOKEN}",),
        webhook_max_attempts=2,
        recording_policy="all",
        recording_dir=str(recordings),
        enable_direct_session=True,
        max_event_bytes=4096,
        **turn,
        **ALWAYS_ADMIT,
    )


@pytest.fixture
async def scan(
    tmp_path: Path,
) -> AsyncIterator[tuple[Http, TestServer, TestServer, list[tuple[str, bytes]], Path]]:
    hooks: list[tuple[str, bytes]] = []
    receiver = await webhook_receiver(hooks)
    emulator = await emulator_with_key(OPENAI_KEY)
    recordings = tmp_path / "recordings"
    settings = scan_settings(
        str(emulator.make_url("/v1")), str(receiver.make_url("/hook")), recordings
    )
    relay = await relay_server(settings)
    wrong = await relay_server(replace(settings, openai_api_key=Secret(WRONG_OPENAI_KEY)))
    session = aiohttp.ClientSession()
    try:
        yield Http(session, Haystack()), relay, wrong, hooks, recordings
    finally:
        await session.close()
        for server in (wrong, relay, emulator, receiver):
            await server.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def exercise_errors(http: Http, relay: TestServer, wrong: TestServer) -> str:
    """Every refusal there is; returns a client secret minted on the way."""
    url = relay.make_url
    for path in ("/healthz", "/readyz", "/openapi.json", "/", "/monitor/"):
        await http.request("GET", url(path))
    for headers in ({}, bearer(METRICS + "x"), bearer(ADMIN), bearer(METRICS)):
        await http.request("GET", url("/metrics"), headers=headers)
    for token in (RELAY_KEY + "x", ADMIN, METRICS, OPENAI_KEY, "ek_" + "0" * 32, RELAY_KEY[:-1]):
        status, _ = await http.request(
            "POST", url("/v1/realtime/client_secrets"), json={}, headers=bearer(token)
        )
        assert status == 401
    status, body = await http.request(
        "POST",
        url("/v1/realtime/client_secrets"),
        json={"session": {"type": "realtime", "instructions": "Scan."}},
        headers=bearer(RELAY_KEY),
    )
    assert status == 200, body
    secret = str(json.loads(body)["value"])
    for token in (RELAY_KEY + "x", ADMIN + "x", ""):
        for path in ("/v1/realtime/calls", "/v1/realtime/calls/rtc_x/hangup"):
            await http.request("POST", url(path), data=b"v=0\r\n", headers=bearer(token))
    for data in (b"garbage", b"v=0\r\nm=audio 9 RTP/AVP 0\r\n", b"v=0\r\n" + b"a" * 70_000):
        await http.request(
            "POST",
            url("/v1/realtime/calls"),
            data=data,
            headers={**bearer(secret), "Content-Type": "application/sdp"},
        )
    for token in (ADMIN + "x", RELAY_KEY, METRICS, ""):
        for path in ("/api/calls", "/api/recordings", "/api/calls/rtc_x"):
            await http.request("GET", url(path), headers=bearer(token))
        await http.websocket(
            str(url("/api/calls/rtc_x/events")), ("relay-monitor", f"bearer.{token}"), 1
        )
    if HAS_TURN:
        for token in (secret, RELAY_KEY, ADMIN, TURN_SECRET):
            await http.request("POST", url("/api/turn_credentials"), headers=bearer(token))
    # A call over the WebSocket leg: the key as a subprotocol (right, wrong, alone).
    for protocols in (
        ("realtime", f"openai-insecure-api-key.{secret}"),
        ("realtime", f"openai-insecure-api-key.{RELAY_KEY}x"),
        (f"openai-insecure-api-key.{RELAY_KEY}",),
    ):
        await http.websocket(str(url("/v1/realtime/ws")), protocols, 3)
    await http.request("POST", url("/api/realtime/session"), json={}, headers=bearer(ADMIN))
    await http.request("POST", url("/api/realtime/session"), json={}, headers=bearer(RELAY_KEY))
    await http.request("POST", url("/api/demo/client_secret"), json={}, headers=bearer(RELAY_KEY))
    # OpenAI refuses the relay's key: a 502 that names no key.
    wrong_secret = await http.request(
        "POST", wrong.make_url("/v1/realtime/client_secrets"), json={}, headers=bearer(RELAY_KEY)
    )
    ek = str(json.loads(wrong_secret[1])["value"])
    async with realtime_client() as client:
        status, body = await http.request(
            "POST",
            wrong.make_url("/v1/realtime/calls"),
            data=await client.offer(),
            headers={**bearer(ek), "Content-Type": "application/sdp"},
        )
        assert status == 502 and b"upstream_auth_failed" in body, body
    status, _ = await http.request(
        "POST", wrong.make_url("/api/realtime/session"), json={}, headers=bearer(RELAY_KEY)
    )
    assert status == 502
    return secret


async def run_call(
    http: Http, relay: TestServer, secret: str, speech: np.ndarray
) -> tuple[str, RealtimeClient]:
    url = relay.make_url
    client = RealtimeClient(PacedAudioSource())
    response = await client.connect(http.session, str(url("/v1/realtime/calls")), secret)
    http.keep("POST /v1/realtime/calls", response, await response.read())
    assert response.status == 201
    call_id = (client.location or "").rsplit("/", 1)[-1]
    await client.wait_for("session.created", timeout=10)
    client.send({"type": "session.update", "session": TRANSCRIBED})
    monitor = asyncio.create_task(
        http.websocket(
            str(url(f"/api/calls/{call_id}/events")), ("relay-monitor", f"bearer.{ADMIN}"), 400
        )
    )
    client.source.play(speech[: int(48_000 * SPEECH_SECS)])
    # Refused by the relay (bad JSON, too big, binary, no type, unknown type) and by
    # OpenAI (an item that does not exist: an ``error`` event, so an error webhook).
    for sent in (
        "not json",
        "{" * 5000,
        b"\x00\xff",
        '{"no": "type"}',
        '{"type": "x.unknown"}',
        '{"type": "conversation.item.delete", "item_id": "item_nope"}',
    ):
        client.channel.send(sent)
    await client.wait_for("conversation.item.input_audio_transcription.completed", 20)
    for query in ("track=caller", "track=both&format=twilio", "track=nope"):
        await http.websocket(
            str(url(f"/api/calls/{call_id}/listen?{query}")),
            ("relay-monitor", f"bearer.{ADMIN}"),
            5,
        )
    for path in ("/api/calls", f"/api/calls/{call_id}", "/metrics"):
        token = METRICS if path == "/metrics" else ADMIN
        await http.request("GET", url(path), headers=bearer(token))
    for token in (RELAY_KEY, RELAY_KEY + "x", secret):  # the sideband takes the API key
        await http.websocket(
            str(url(f"/v1/realtime?call_id={call_id}")), (), 3, headers=bearer(token)
        )
    other = await http.request(
        "POST", url("/v1/realtime/client_secrets"), json={}, headers=bearer(RELAY_KEY)
    )
    other_secret = str(json.loads(other[1])["value"])
    status, _ = await http.request(
        "POST", url(f"/v1/realtime/calls/{call_id}/hangup"), headers=bearer(other_secret)
    )
    assert status == 404
    status, _ = await http.request(
        "POST", url(f"/v1/realtime/calls/{call_id}/hangup"), headers=bearer(secret)
    )
    assert status == 200
    await monitor
    for event in client.events:
        http.hay.add("a data-channel event", json.dumps(event))
    return call_id, client


async def test_no_secret_leaves_the_relay(
    scan: tuple[Http, TestServer, TestServer, list[tuple[str, bytes]], Path],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    speech_48k: np.ndarray,
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    http, relay, wrong, hooks, recordings = scan
    secret = await exercise_errors(http, relay, wrong)
    call_id, client = await run_call(http, relay, secret, speech_48k)
    await client.close()
    for _ in range(100):  # the call's end reaches the receiver
        if any(b'"call.ended"' in body for _, body in hooks):
            break
        await asyncio.sleep(0.1)
    url = relay.make_url
    status, _ = await http.request("GET", url("/api/recordings"), headers=bearer(ADMIN))
    assert status == 200
    await http.request("GET", url(f"/api/recordings/{call_id}"), headers=bearer(ADMIN))
    for name in ("metadata.json", "events.jsonl", "transcript.jsonl", "transcript.txt"):
        status, _ = await http.request(
            "GET", url(f"/api/recordings/{call_id}/{name}"), headers=bearer(ADMIN)
        )
        assert status == 200, name

    hay = http.hay
    kinds = {json.loads(body)["type"] for _, body in hooks}
    assert {"call.started", "call.ended", "transcript.completed", "error"} <= kinds, kinds
    for headers, body in hooks:
        hay.add("a webhook", headers.encode() + body)
    files = [p for p in recordings.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"audio.wav", "events.jsonl", "metadata.json"}
    for path in files:
        hay.add(f"file {path.name}", path.read_bytes())
    assert caplog.records
    for record in caplog.records:
        hay.add(f"log {record.name}", caplog.handler.format(record))
    printed = capfd.readouterr()
    hay.add("stdout", printed.out)
    hay.add("stderr", printed.err)
    assert len(hay.pieces) > 150  # answers, messages, logs, files, webhooks: all looked at
    assert not hay.leaks(SECRETS)
    # The scan would have seen them: the secrets themselves match their forms.
    probe = Haystack()
    probe.add(
        "probe",
        base64.b64encode(b"Bearer " + ADMIN.encode()) + b" " + RELAY_KEY.encode().hex().encode(),
    )
    assert len(probe.leaks(SECRETS)) == 2


async def test_no_secret_leaves_two_shards(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Sharded: the shards' private token (Unix socket only) and the keys, through
    cross-shard secret lookups, forwarded hangups and WebSockets, gathered listings."""
    caplog.set_level(logging.DEBUG, logger="relay")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    overrides = {
        "relay_api_key": Secret(RELAY_KEY),
        "admin_token": Secret(ADMIN),
        "metrics_token": Secret(METRICS),
        **ALWAYS_ADMIT,
    }
    async with running_shards(**overrides) as shards, aiohttp.ClientSession() as session:
        http = Http(session, Haystack())
        secrets = (*SECRETS, shards[0].layout.token)
        secrets += tuple(shard.app[UPSTREAM].api_key.value for shard in shards)
        status, body = await http.request(
            "POST",
            shards[0].url("/v1/realtime/client_secrets"),
            json={},
            headers=bearer(RELAY_KEY),
        )
        assert status == 200
        secret = str(json.loads(body)["value"])
        async with realtime_client() as client:
            response = await client.connect(session, shards[1].url("/v1/realtime/calls"), secret)
            http.keep("call on shard 1", response, await response.read())
            assert response.status == 201
            call_id = (client.location or "").rsplit("/", 1)[-1]
            for token in (ADMIN, ADMIN + "x"):
                for path in ("/api/calls", f"/api/calls/{call_id}", "/metrics"):
                    real = METRICS if path == "/metrics" and token == ADMIN else token
                    await http.request("GET", shards[0].url(path), headers=bearer(real))
                await http.websocket(
                    shards[0].url(f"/api/calls/{call_id}/events"),
                    ("relay-monitor", f"bearer.{token}"),
                    3,
                )
            for token in (secret + "0", secret):
                await http.request(
                    "POST",
                    shards[0].url(f"/v1/realtime/calls/{call_id}/hangup"),
                    headers=bearer(token),
                )
    for record in caplog.records:
        http.hay.add(f"log {record.name}", caplog.handler.format(record))
    printed = capfd.readouterr()
    http.hay.add("output", printed.out + printed.err)
    assert len(http.hay.pieces) > 30
    assert not http.hay.leaks(secrets)


async def test_a_bearer_only_subprotocol_is_never_logged(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A monitor offering only ``bearer.<admin token>`` (no ``relay-monitor``): aiohttp
    logs the client's protocols when none is the server's (item 7)."""
    caplog.set_level(logging.DEBUG, logger="relay")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    relay = await relay_server(replace(BASE_SETTINGS, admin_token=Secret(ADMIN), **ALWAYS_ADMIT))
    try:
        async with aiohttp.ClientSession() as session, realtime_client() as client:
            http = Http(session, Haystack())
            response = await client.connect(session, str(relay.make_url("/v1/realtime/calls")), "")
            assert response.status == 201
            call_id = (client.location or "").rsplit("/", 1)[-1]
            for path in (f"/api/calls/{call_id}/events", f"/api/calls/{call_id}/listen"):
                await http.websocket(str(relay.make_url(path)), (f"bearer.{ADMIN}",), 2)
    finally:
        await relay.close()
    for record in caplog.records:
        http.hay.add(f"log {record.name}", caplog.handler.format(record))
    printed = capfd.readouterr()
    http.hay.add("output", printed.out + printed.err)
    assert not http.hay.leaks((ADMIN,))
