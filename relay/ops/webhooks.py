"""Lifecycle webhooks: ``call.started``, ``call.ended``, ``transcript.completed``, ``error``.

Each webhook is a JSON ``POST`` to every configured URL::

    {"id": "whevt_...", "type": "call.ended", "created_at": 1735689600.25,
     "call_id": "rtc_...", "data": {...}}

with these headers:

- ``X-Relay-Event``: the type; ``X-Relay-Delivery``: the id (the same on every retry,
  so a receiver can drop duplicates); ``X-Relay-Attempt``: 1, 2, ...
- ``X-Relay-Timestamp``: Unix seconds when this attempt was signed.
- ``X-Relay-Signature``: ``sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`` keyed
  with the webhook secret (absent when no secret is configured). Receivers recompute
  it over the raw body, compare in constant time and reject stale timestamps (see
  :func:`verify_signature`).

A delivery is retried on network errors, timeouts, 408, 425, 429 and 5xx with
exponential backoff and jitter, up to ``max_attempts``; other statuses are final.
Deliveries to one URL are not ordered (``created_at`` orders them).

The observer methods only append to a bounded queue (a full queue drops and counts the
webhook); one background task owned by the dispatcher sends them, at most
``concurrency`` at a time, so a slow or dead receiver never slows a call. A delivery
that fails unexpectedly (a bug, not a receiver's failure) is logged once with its
traceback. Secrets and URLs (which may carry tokens) are never logged; only the
receiver's host is.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp

from relay.config import Secret
from relay.ops.encoding import to_json
from relay.ops.metrics import WEBHOOK_EVENTS, RelayMetrics
from relay.taps import CallEnd, CallInfo, Observer, TappedEvent, TranscriptEntry

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Relay-Signature"
TIMESTAMP_HEADER: Final = "X-Relay-Timestamp"
EVENT_HEADER: Final = "X-Relay-Event"
DELIVERY_HEADER: Final = "X-Relay-Delivery"
ATTEMPT_HEADER: Final = "X-Relay-Attempt"
_RETRY_STATUSES: Final = frozenset({408, 425, 429})

Result = Literal["delivered", "retry", "rejected"]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Relay-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_secs: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver should do: check the HMAC in constant time, then the age."""
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return False
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - sent) <= tolerance_secs


def _host(url: str) -> str:
    """What may be logged of a receiver URL: its host only."""
    return urlsplit(url).hostname or "?"


@dataclass(frozen=True)
class Webhook:
    id: str
    type: str
    call_id: str
    created_at: float
    data: dict[str, Any]

    def body(self) -> bytes:
        payload = {
            "id": self.id,
            "type": self.type,
            "created_at": self.created_at,
            "call_id": self.call_id,
            "data": self.data,
        }
        return to_json(payload).encode()


_STOP: Final = object()


class WebhookDispatcher(Observer):
    """The call observer that sends lifecycle webhooks.

    Owner: the app. ``await start()`` inside the event loop, ``await close()`` at
    shutdown (idempotent): it lets queued webhooks go out for up to
    ``drain_timeout_secs``, then cancels what is left and awaits it."""

    name = "webhooks"

    def __init__(
        self,
        urls: Iterable[str],
        *,
        secret: Secret | str | None = None,
        metrics: RelayMetrics | None = None,
        events: Iterable[str] = WEBHOOK_EVENTS,
        max_attempts: int = 5,
        initial_backoff_secs: float = 0.5,
        max_backoff_secs: float = 30.0,
        timeout_secs: float = 5.0,
        queue_size: int = 1000,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.urls = tuple(urls)
        self._secret = secret.value if isinstance(secret, Secret) else secret
        self._metrics = metrics
        self.events = frozenset(events) & frozenset(WEBHOOK_EVENTS)
        self._max_attempts = max(1, max_attempts)
        self._initial_backoff = initial_backoff_secs
        self._max_backoff = max_backoff_secs
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._clock = clock
        # Unbounded as a type so that the stop marker always fits; _enqueue bounds it.
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def enabled(self) -> bool:
        return bool(self.urls and self.events)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None or self._closed or not self.enabled:
            return
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._runner = asyncio.create_task(self._run(), name="webhooks")
        self._runner.add_done_callback(self._task_done)

    async def close(self, drain_timeout_secs: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            self._queue.put_nowait(_STOP)
            await asyncio.wait({runner}, timeout=drain_timeout_secs)
            pending = [runner, *self._inflight]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- observer ----------------------------------------------------------------------

    def call_started(self, call: CallInfo) -> None:
        data = {"model": call.model, "user_agent": call.user_agent, "created_at": call.created_at}
        self._enqueue("call.started", call.call_id, data)

    def event(self, call_id: str, event: TappedEvent) -> None:
        if event.direction == "server" and event.type == "error":
            data = {"t": event.wallclock, "error": event.data.get("error")}
            self._enqueue("error", call_id, data)

    def transcript(self, call_id: str, entry: TranscriptEntry) -> None:
        data = {"t": entry.t, "role": entry.role, "item_id": entry.item_id, "text": entry.text}
        self._enqueue("transcript.completed", call_id, data)

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        data = {
            "outcome": end.outcome,
            "model": call.model,
            "created_at": call.created_at,
            "ended_at": end.ended_at,
            "duration_secs": end.ended_at - call.created_at,
            "transcript": [entry.as_dict() for entry in end.transcripts],
        }
        self._enqueue("call.ended", call.call_id, data)

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, kind: str, call_id: str, data: dict[str, Any]) -> None:
        if kind not in self.events or self._runner is None:
            return
        if self._queue.qsize() >= self._queue_size:
            self._count_failure(kind, "dropped")
            log.warning("webhook queue full: dropped a %s webhook", kind)
            return
        webhook = Webhook("whevt_" + secrets.token_hex(12), kind, call_id, self._clock(), data)
        self._queue.put_nowait(webhook)

    async def _run(self) -> None:
        assert self._session is not None
        slots = asyncio.Semaphore(self._concurrency)
        while (item := await self._queue.get()) is not _STOP:
            assert isinstance(item, Webhook)
            for url in self.urls:
                await slots.acquire()
                task = asyncio.create_task(self._deliver(url, item))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                task.add_done_callback(lambda _t: slots.release())
                task.add_done_callback(self._task_done)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        """Retrieve a finished task's exception, logging an unexpected one once (receivers'
        failures are handled in :meth:`_deliver`; this is for bugs)."""
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("webhook task %s failed", task.get_name(), exc_info=error)

    async def _deliver(self, url: str, webhook: Webhook) -> None:
        body = webhook.body()
        for attempt in range(1, self._max_attempts + 1):
            result = await self._attempt(url, webhook, body, attempt)
            if result == "delivered":
                if self._metrics is not None:
                    self._metrics.webhook_deliveries_total.labels(webhook.type).inc()
                return
            if result == "rejected":
                self._count_failure(webhook.type, "rejected")
                return
            if attempt < self._max_attempts:
                await asyncio.sleep(self._backoff(attempt))
        self._count_failure(webhook.type, "exhausted")
        log.warning(
            "webhook %s to %s given up after %d attempts", webhook.type, _host(url), attempt
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so that many calls' retries spread out."""
        base = min(self._max_backoff, self._initial_backoff * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)

    async def _attempt(self, url: str, webhook: Webhook, body: bytes, attempt: int) -> Result:
        assert self._session is not None
        headers = self._headers(webhook, body, attempt)
        started = time.monotonic()
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info(
                "webhook %s to %s failed (attempt %d): %s",
                webhook.type,
                _host(url),
                attempt,
                type(exc).__name__,
            )
            return "retry"
        finally:
            if self._metrics is not None:
                self._metrics.webhook_attempts_total.labels(webhook.type).inc()
                self._metrics.webhook_delivery_seconds.observe(time.monotonic() - started)
        if 200 <= status < 300:
            return "delivered"
        log.info("webhook %s to %s: HTTP %d", webhook.type, _host(url), status)
        return "retry" if status >= 500 or status in _RETRY_STATUSES else "rejected"

    def _headers(self, webhook: Webhook, body: bytes, attempt: int) -> dict[str, str]:
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "realtime-relay-webhooks/1",
            EVENT_HEADER: webhook.type,
            DELIVERY_HEADER: webhook.id,
            ATTEMPT_HEADER: str(attempt),
            TIMESTAMP_HEADER: timestamp,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return headers

    def _count_failure(self, kind: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_failures_total.labels(kind, reason).inc()

    def pending(self) -> int:
        """Webhooks waiting to be sent (not counting those being sent or retried)."""
        return self._queue.qsize()
