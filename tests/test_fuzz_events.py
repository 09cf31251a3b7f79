"""Fuzzing a live call's ``oai-events`` data channel (issue 2/8, "make it stay fixed").

A real call (aiortc caller, the relay, its embedded emulator) receives generated events
(``fuzzing.client_events``): known and unknown types, unknown fields, sizes up to and
over the relay's event limit, deep nesting, lone surrogates as JSON escapes, invalid
JSON, binary messages. Invariants: every refused event gets OpenAI's ``error`` event
with the expected code, in order; the call stays active and the caller's audio keeps
reaching OpenAI; a monitor events WebSocket stays connected and every message on it is
strict JSON; the recording ends ``complete`` and every line of its ``events.jsonl`` is
strict JSON; no traceback is logged.

Session configs are fuzzed through real calls too (``test_fuzzed_sessions_...``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from fuzzing import (
    ALWAYS_ADMIT,
    CALL_SESSIONS,
    FuzzEvent,
    LogWatch,
    client_events,
    draw,
    envelope_problem,
    send_events,
    strict_json,
)
from hypothesis import strategies as st
from relay_fixtures import RelayFactory, RelayUnderTest
from support import RealtimeClient, realtime_client

from relay.config import Secret
from relay.http.ops_routes import OPS
from relay.ops.recording import read_metadata

ADMIN = "fuzz-events-admin-token-3f6a2c"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
WS_PROTOCOLS = ("relay-monitor", f"bearer.{ADMIN}")
#: Small, so that crossing it is cheap on the data channel.
MAX_EVENT_BYTES = 8192
EVENTS = 400
SESSIONS_TRIED = 8


@dataclass
class Monitor:
    """A monitor events WebSocket read in the background: every message strictly
    parsed; the first one that is not JSON is kept."""

    ws: aiohttp.ClientWebSocketResponse
    messages: list[dict[str, Any]] = field(default_factory=list)
    not_json: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                self.messages.append(strict_json(message.data))
            except ValueError:
                self.not_json.append(message.data[:300])

    def types(self) -> list[str]:
        return [m.get("type", "?") for m in self.messages]

    async def ended(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while "relay.call_ended" not in self.types() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return "relay.call_ended" in self.types()


@contextlib.asynccontextmanager
async def monitoring(relay: RelayUnderTest, call_id: str) -> AsyncIterator[Monitor]:
    ws = await relay.http.ws_connect(
        relay.url(f"/api/calls/{call_id}/events"), protocols=WS_PROTOCOLS
    )
    monitor = Monitor(ws)
    monitor.task = asyncio.create_task(monitor._read())
    try:
        yield monitor
    finally:
        await ws.close()
        monitor.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor.task


async def recording_relay(
    start_relay: RelayFactory, tmp_path: Path, **settings: Any
) -> RelayUnderTest:
    """A relay (open mode) that records every call, with the admin token set."""
    return await start_relay(
        admin_token=Secret(ADMIN),
        recording_policy="all",
        recording_dir=str(tmp_path / "recordings"),
        **{**ALWAYS_ADMIT, **settings},
    )


async def open_call(relay: RelayUnderTest, client: RealtimeClient) -> str:
    response = await client.connect(relay.http, relay.calls_url, "")
    assert response.status == 201, await response.text()
    await client.wait_for("session.created", timeout=10)
    return (client.location or "").rsplit("/", 1)[-1]


async def upstream_frames(relay: RelayUnderTest, call_id: str) -> int:
    response = await relay.http.get(relay.url(f"/api/calls/{call_id}"), headers=AUTH)
    assert response.status == 200, await response.text()
    snapshot = await response.json()
    assert snapshot["state"] == "active", snapshot["state"]
    return int(snapshot["audio"]["upstream_frames_out"])


async def finished_recording(relay: RelayUnderTest, call_id: str) -> Path:
    recorder = relay.app[OPS].recorder
    assert recorder is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        folder = recorder.find(call_id)
        metadata = read_metadata(folder) if folder is not None else None
        if folder is not None and metadata is not None and metadata["status"] != "recording":
            return folder
        await asyncio.sleep(0.1)
    raise AssertionError(f"the recording of {call_id} did not finish")


def recorded_events(folder: Path) -> list[dict[str, Any]]:
    """``events.jsonl`` as JSON Lines (lines end at ``\\n`` only), each strictly parsed."""
    text = (folder / "events.jsonl").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == "", "events.jsonl does not end with a line break"
    parsed = []
    for number, line in enumerate(lines[:-1], 1):
        try:
            parsed.append(strict_json(line))
        except ValueError as exc:
            raise AssertionError(f"events.jsonl line {number} is not JSON: {line[:200]!r}") from exc
    return parsed


async def test_fuzz_events_on_a_live_call(start_relay: RelayFactory, tmp_path: Path) -> None:
    events = await asyncio.to_thread(draw, client_events(MAX_EVENT_BYTES), EVENTS)
    refused = [e for e in events if e.refused_with is not None]
    forwarded = [e for e in events if e.refused_with is None]
    # The generators reach every kind of refusal, and forward plenty.
    codes = {e.refused_with for e in refused}
    assert codes == {"invalid_json", "invalid_event", "event_too_large"}, codes
    assert len(forwarded) > EVENTS // 4 and any(isinstance(e.message, bytes) for e in events)

    relay = await recording_relay(start_relay, tmp_path, max_event_bytes=MAX_EVENT_BYTES)
    with LogWatch() as watch:
        async with realtime_client() as client:
            call_id = await open_call(relay, client)
            async with monitoring(relay, call_id) as monitor:
                frames_before = await upstream_frames(relay, call_id)
                outcome = await send_events(client, events)
                assert not outcome.mismatches, outcome.mismatches[:5]
                # Still up, and the caller's audio still reaches OpenAI.
                await asyncio.sleep(1.0)
                assert await upstream_frames(relay, call_id) >= frames_before + 25
                assert not monitor.ws.closed and not monitor.not_json, monitor.not_json[:3]
                hangup = await relay.http.post(
                    relay.url(f"/v1/realtime/calls/{call_id}/hangup"), headers=AUTH
                )
                assert hangup.status == 200
                assert await monitor.ended(), monitor.types()[-5:]
                assert not monitor.not_json, monitor.not_json[:3]
    assert not watch.tracebacks, watch.tracebacks[:5]

    folder = await finished_recording(relay, call_id)
    metadata = read_metadata(folder)
    assert metadata is not None and metadata["status"] == "complete", metadata
    lines = recorded_events(folder)
    client_lines = [line for line in lines if line["direction"] == "client"]
    assert len(client_lines) == len(forwarded)
    assert [json.dumps(line["event"]) for line in client_lines] == [
        json.dumps(json.loads(e.message)) for e in forwarded
    ]
    relayed = [m for m in monitor.messages if m["type"] == "relay.event"]
    assert sum(1 for m in relayed if m["direction"] == "client") == len(forwarded)


def _offer_form(sdp: str, session: Any) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("sdp", sdp, content_type="application/sdp")
    text = json.dumps(session, ensure_ascii=True)
    form.add_field("session", text, content_type="application/json")
    return form


async def test_fuzzed_sessions_through_real_calls(
    start_relay: RelayFactory, tmp_path: Path
) -> None:
    """Generated session configs (multipart ``session`` part and ``?model=``) open real
    calls: each gets a 201 or a 4xx envelope (never a 5xx), and a call that opened shows
    up in the operator API, the monitor and its recording as JSON."""
    sessions = await asyncio.to_thread(
        draw,
        st.tuples(CALL_SESSIONS, st.one_of(st.none(), st.text(max_size=20))),
        SESSIONS_TRIED,
    )
    relay = await recording_relay(start_relay, tmp_path)
    opened = 0
    with LogWatch() as watch:
        for session, model in sessions:
            async with realtime_client() as client:
                params = {"model": model} if model else {}
                response = await relay.http.post(
                    relay.calls_url, data=_offer_form(await client.offer(), session), params=params
                )
                body = await response.read()
                assert response.status < 500, (session, model, body[:300])
                if response.status != 201:
                    assert envelope_problem(body) is None, (session, body[:300])
                    continue
                opened += 1
                call_id = response.headers["Location"].rsplit("/", 1)[-1]
                for path in ("/api/calls", f"/api/calls/{call_id}"):
                    listed = await relay.http.get(relay.url(path), headers=AUTH)
                    assert listed.status == 200, (session, model, await listed.text())
                    strict_json(await listed.read())
                async with monitoring(relay, call_id) as monitor:
                    await relay.http.post(
                        relay.url(f"/v1/realtime/calls/{call_id}/hangup"), headers=AUTH
                    )
                    assert await monitor.ended(), (session, model, monitor.not_json)
                    assert not monitor.not_json, monitor.not_json[:2]
    assert opened >= 1
    assert not watch.tracebacks, watch.tracebacks[:5]
    recordings = await relay.http.get(relay.url("/api/recordings"), headers=AUTH)
    assert recordings.status == 200 and len(strict_json(await recordings.read())["data"]) == opened


# -- found by the fuzzers --------------------------------------------------------------------


async def test_non_finite_numbers_in_events_are_refused(
    start_relay: RelayFactory, tmp_path: Path
) -> None:
    relay = await recording_relay(start_relay, tmp_path)
    async with realtime_client() as client:
        call_id = await open_call(relay, client)
        async with monitoring(relay, call_id) as monitor:
            bad = [
                FuzzEvent('{"type": "x.nan", "v": NaN}', "invalid_json"),
                FuzzEvent('{"type": "x.inf", "v": -Infinity}', "invalid_json"),
                FuzzEvent('{"type": "x.big", "v": 1e400}', "invalid_json"),
            ]
            outcome = await send_events(client, bad, timeout=2)
            await asyncio.sleep(0.5)
            await relay.http.post(relay.url(f"/v1/realtime/calls/{call_id}/hangup"), headers=AUTH)
            await monitor.ended()
    folder = await finished_recording(relay, call_id)
    recorded_events(folder)
    assert not monitor.not_json, monitor.not_json
    assert not outcome.mismatches, outcome.mismatches


async def test_a_lone_surrogate_in_the_model_breaks_no_operator_route(
    start_relay: RelayFactory, tmp_path: Path
) -> None:
    relay = await recording_relay(start_relay, tmp_path)
    minted = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"),
        data=b'{"session": {"model": "gpt-realtime\\ud800"}}',
        headers={"Content-Type": "application/json"},
    )
    assert minted.status in (200, 400), await minted.text()
    if minted.status == 400:
        return  # refused up front: fixed
    secret = (await minted.json())["value"]
    with LogWatch() as watch:
        async with realtime_client() as client:
            response = await client.connect(relay.http, relay.calls_url, secret)
            body = await response.read()
            assert response.status == 201 or envelope_problem(body) is None, body[:300]
            if response.status == 201:
                call_id = (client.location or "").rsplit("/", 1)[-1]
                for path in ("/api/calls", f"/api/calls/{call_id}"):
                    listed = await relay.http.get(relay.url(path), headers=AUTH)
                    assert listed.status == 200, (path, await listed.text())
    assert not watch.tracebacks, watch.tracebacks[:3]
