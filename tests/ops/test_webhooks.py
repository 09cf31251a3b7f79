"""WebhookDispatcher against a real HTTP receiver: payloads, signatures, retries with
backoff, final failures, a full queue, and a shutdown that never hangs."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from relay.config import Secret
from relay.ops.metrics import RelayMetrics
from relay.ops.webhooks import WebhookDispatcher, sign, verify_signature

from .fakes import FakeCall, FakeDirectory, eventually

SECRET = "whsec_test"


@dataclass
class Receiver:
    """A webhook endpoint that answers with ``statuses`` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    delay_secs: float = 0.0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        self.arrived.set()
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


ServerFactory = Callable[[Receiver], Awaitable[str]]


@pytest.fixture
def serve(aiohttp_server: AiohttpServer) -> ServerFactory:
    async def start(receiver: Receiver) -> str:
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = await aiohttp_server(app)
        return str(server.make_url("/hook"))

    return start


def value(metrics: RelayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value("realtime_relay_" + name, labels) or 0.0


async def test_lifecycle_webhooks_are_signed_and_carry_the_call(serve: ServerFactory) -> None:
    """call.started, transcript.completed, error and call.ended reach the receiver
    with a verifiable signature and the documented headers."""
    receiver = Receiver()
    url = await serve(receiver)
    metrics = RelayMetrics(process=False)
    dispatcher = WebhookDispatcher([url], secret=Secret(SECRET), metrics=metrics)
    await dispatcher.start()
    directory = FakeDirectory()
    directory.add_observer(dispatcher)
    call = directory.start(FakeCall())
    now = time.time()
    done = {"type": "response.output_audio_transcript.done", "item_id": "i1", "transcript": "Hi"}
    directory.event(call, "server", done, now)
    directory.event(call, "server", {"type": "error", "error": {"code": "invalid_value"}}, now)
    directory.event(call, "client", {"type": "response.create"}, now)  # not a webhook
    directory.end(call, "hangup")
    await receiver.wait_for(4)
    await dispatcher.close()

    kinds = sorted(body["type"] for body in receiver.bodies())
    assert kinds == ["call.ended", "call.started", "error", "transcript.completed"]
    for headers, body in receiver.received:
        assert verify_signature(
            SECRET, body, headers["X-Relay-Timestamp"], headers["X-Relay-Signature"]
        )
        payload = json.loads(body)
        assert payload["call_id"] == call.id and headers["X-Relay-Event"] == payload["type"]
        assert headers["X-Relay-Delivery"] == payload["id"] and headers["X-Relay-Attempt"] == "1"
    by_type = {body["type"]: body["data"] for body in receiver.bodies()}
    assert by_type["transcript.completed"]["text"] == "Hi"
    assert by_type["transcript.completed"]["role"] == "agent"
    assert by_type["error"]["error"]["code"] == "invalid_value"
    assert by_type["call.ended"]["outcome"] == "hangup"
    assert by_type["call.started"] == {
        "model": call.model,
        "user_agent": call.user_agent,
        "created_at": call.created_at,
    }
    ended = by_type["call.ended"]
    assert set(ended) == {
        "outcome", "model", "created_at", "ended_at", "duration_secs", "transcript"
    }  # fmt: skip
    assert ended["duration_secs"] == pytest.approx(ended["ended_at"] - call.created_at)
    assert ended["transcript"] == [{"role": "agent", "text": "Hi", "item_id": "i1", "t": now}]
    assert value(metrics, "webhook_deliveries_total", event="call.ended") == 1


def test_signature_rejects_tampering_wrong_secret_and_stale_timestamps() -> None:
    body, ts = b'{"a":1}', str(int(time.time()))
    good = sign(SECRET, ts, body)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    assert verify_signature(SECRET, body, ts, good)
    assert not verify_signature(SECRET, b'{"a":2}', ts, good)
    assert not verify_signature("other", body, ts, good)
    old = str(int(time.time()) - 3600)
    assert not verify_signature(SECRET, body, old, sign(SECRET, old, body))


async def test_server_errors_are_retried_and_client_errors_are_final(
    serve: ServerFactory,
) -> None:
    """503, 429 then 200: delivered on the third attempt, same delivery id. A 400 is
    not retried and counts as rejected."""
    flaky, refusing = Receiver(statuses=[503, 429]), Receiver(statuses=[400])
    urls = [await serve(flaky), await serve(refusing)]
    metrics = RelayMetrics(process=False)
    dispatcher = WebhookDispatcher(
        urls, secret=SECRET, metrics=metrics, initial_backoff_secs=0.01, events=["call.started"]
    )
    await dispatcher.start()
    dispatcher.call_started(FakeCall().info())
    await flaky.wait_for(3)
    await refusing.wait_for(1)
    await dispatcher.close()
    assert [h["X-Relay-Attempt"] for h, _ in flaky.received] == ["1", "2", "3"]
    assert len({h["X-Relay-Delivery"] for h, _ in flaky.received}) == 1
    assert len(refusing.received) == 1
    assert value(metrics, "webhook_attempts_total", event="call.started") == 4
    assert value(metrics, "webhook_deliveries_total", event="call.started") == 1
    assert value(metrics, "webhook_failures_total", event="call.started", reason="rejected") == 1


async def test_a_dead_receiver_is_given_up_after_max_attempts() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    metrics = RelayMetrics(process=False)
    dispatcher = WebhookDispatcher(
        [f"http://127.0.0.1:{port}/hook"],
        metrics=metrics,
        max_attempts=3,
        initial_backoff_secs=0.01,
    )
    await dispatcher.start()
    dispatcher.call_started(FakeCall().info())
    await eventually(
        lambda: value(metrics, "webhook_failures_total", event="call.started", reason="exhausted")
    )
    await dispatcher.close()
    assert value(metrics, "webhook_attempts_total", event="call.started") == 3
    assert value(metrics, "webhook_failures_total", event="call.started", reason="exhausted") == 1


async def test_a_slow_receiver_never_slows_calls_and_shutdown_is_bounded(
    serve: ServerFactory,
) -> None:
    """A receiver that takes 30 s per request: webhooks beyond the queue are dropped
    and counted, the observer returns at once, and close() gives up after its drain
    timeout instead of waiting for the receiver."""
    slow = Receiver(delay_secs=30)
    url = await serve(slow)
    metrics = RelayMetrics(process=False)
    dispatcher = WebhookDispatcher(
        [url], metrics=metrics, queue_size=5, concurrency=1, events=["call.started"]
    )
    await dispatcher.start()
    for _ in range(20):
        dispatcher.call_started(FakeCall().info())  # returns with the receiver still busy
    await slow.wait_for(1)
    assert value(metrics, "webhook_failures_total", event="call.started", reason="dropped") >= 14
    closing = time.monotonic()
    await dispatcher.close(drain_timeout_secs=0.2)
    assert time.monotonic() - closing < 2.0
    await dispatcher.close()  # idempotent


async def test_without_urls_the_dispatcher_does_nothing() -> None:
    dispatcher = WebhookDispatcher([])
    await dispatcher.start()
    dispatcher.call_started(FakeCall().info())
    assert not dispatcher.enabled and dispatcher.pending() == 0
    await dispatcher.close()


async def test_an_unexpected_delivery_error_is_logged_once_and_retrieved(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a delivery (not a receiver's failure) is logged once with its
    traceback; asyncio never has to report an exception nobody retrieved."""
    url = await serve(Receiver())
    dispatcher = WebhookDispatcher([url], events=["call.started"])

    async def broken(*args: object) -> str:
        raise RuntimeError("a bug in the dispatcher")

    dispatcher._attempt = broken  # type: ignore[method-assign]
    await dispatcher.start()
    caplog.set_level(logging.ERROR)
    dispatcher.call_started(FakeCall().info())
    await eventually(lambda: caplog.records)
    await dispatcher.close()
    gc.collect()  # an unretrieved task exception would be reported now
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "failed" in messages[0], messages
    assert caplog.records[0].exc_info is not None
