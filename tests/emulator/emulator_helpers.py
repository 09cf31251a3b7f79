"""Helpers for the emulator's tests: a running emulator, calls into it, and
validation of every server event with the official ``openai`` package's types."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import aiohttp
import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import RTCSessionDescription
from pydantic import TypeAdapter
from support import PacedAudioSource, RealtimeClient

from relay.emulator import SESSIONS, CallRegistry
from relay.emulator.ice import configure_ice

STANDARD_KEY = "sk-emulator"
#: Where every peer connection of these tests gathers (set per connection: the
#: emulator's tests need none of the relay's process-wide or per-call workarounds).
LOOPBACK = ("127.0.0.1",)
EVENT_ID = re.compile(r"^event_[0-9A-Za-z]{21}$")
AUDIO_BUFFER_EVENT_ID = re.compile(r"^event_[0-9a-f]{16}$")


@cache
def _adapter(dialect: str) -> TypeAdapter[Any]:
    if dialect == "ga":
        return TypeAdapter(ga_types.RealtimeServerEvent)
    return TypeAdapter(beta_types.realtime_server_event.RealtimeServerEvent)


def validate_events(events: Iterable[dict[str, Any]], dialect: str) -> None:
    """Every event parses as the openai package's server-event union member of its
    own ``type``, and carries an OpenAI-shaped ``event_id``."""
    adapter = _adapter(dialect)
    for event in events:
        model = adapter.validate_python(event)
        assert model.type == event["type"], event
        pattern = (
            AUDIO_BUFFER_EVENT_ID if event["type"].startswith("output_audio_buffer.") else EVENT_ID
        )
        assert pattern.match(event["event_id"]), event


def in_order(types: Sequence[str], expected: Sequence[str]) -> bool:
    """``expected`` occurs in ``types`` as a subsequence."""
    it = iter(types)
    return all(any(t == e for t in it) for e in expected)


def index_of(types: Sequence[str], type_: str, start: int = 0) -> int:
    return list(types).index(type_, start)


async def eventually(predicate: Callable[[], bool], within_secs: float = 5.0) -> None:
    deadline = time.monotonic() + within_secs
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


@dataclass
class Emulator:
    server: TestServer
    http: aiohttp.ClientSession

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def sessions(self) -> CallRegistry:
        return self.app[SESSIONS]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def mint(self, session: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
        payload: dict[str, Any] = dict(body)
        if session is not None:
            payload["session"] = session
        response = await self.http.post(
            self.url("/v1/realtime/client_secrets"),
            json=payload,
            headers={"Authorization": f"Bearer {STANDARD_KEY}"},
        )
        data: dict[str, Any] = await response.json()
        assert response.status == 200, data
        return data

    async def mint_beta(self, **body: Any) -> dict[str, Any]:
        response = await self.http.post(
            self.url("/v1/realtime/sessions"),
            json=body,
            headers={"Authorization": f"Bearer {STANDARD_KEY}"},
        )
        data: dict[str, Any] = await response.json()
        assert response.status == 200, data
        return data

    @contextlib.asynccontextmanager
    async def call(
        self,
        token: str | None = None,
        *,
        dialect: str = "ga",
        path: str = "/v1/realtime/calls",
        source: PacedAudioSource | None = None,
        session: dict[str, Any] | None = None,
    ) -> AsyncIterator[RealtimeClient]:
        """A connected client whose data channel is open; on a clean exit, every
        event it received is validated against the openai package's types."""
        client = loopback_client(source or PacedAudioSource())
        try:
            if token is None:  # an ephemeral key minted for this call
                if dialect == "ga":
                    token = (await self.mint(session or {"type": "realtime"}))["value"]
                else:
                    token = (await self.mint_beta(**(session or {})))["client_secret"]["value"]
            response = await client.connect(self.http, self.url(path), token)
            assert response.status == 201, await response.text()
            await asyncio.wait_for(client.channel_open.wait(), 10)
            yield client
        finally:
            await client.close()
        validate_events(client.events, dialect)

    async def call_multipart(
        self, client: RealtimeClient, token: str, session: dict[str, Any] | None
    ) -> aiohttp.ClientResponse:
        """POST the offer as multipart/form-data (``sdp`` + ``session``)."""
        sdp = await client.offer()
        form = aiohttp.FormData()
        form.add_field("sdp", sdp, content_type="application/sdp")
        if session is not None:
            import json

            form.add_field("session", json.dumps(session), content_type="application/json")
        response = await self.http.post(
            self.url("/v1/realtime/calls"), data=form, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status == 201:
            client.location = response.headers.get("Location")
            answer = await response.text()
            await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return response


def loopback_client(
    source: PacedAudioSource | None = None, send_audio: bool = True
) -> RealtimeClient:
    """A :class:`RealtimeClient` whose own ICE gathers on 127.0.0.1 only."""
    client = RealtimeClient(source, send_audio)
    configure_ice(client.pc, host_addresses=LOOPBACK)
    return client


def error_of(response_body: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = response_body["error"]
    assert set(error) == {"message", "type", "code", "param"}, error
    return error
