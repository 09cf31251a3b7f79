"""Sideband: the app backend's own event channel on a live call.

OpenAI's ``wss://.../v1/realtime?call_id=...``: a trusted party (authenticated with the
relay API key) receives every server event of the call, hidden or not from the browser,
and sends client events that no browser policy applies to. The relay serves it as a
WebSocket in OpenAI's event protocol (:mod:`relay.http.sideband_routes`); this module
is the call side: an observer of every call that fans server events out to the
sidebands attached to it, each with its own bounded queue; and the optional tool
webhook (``RELAY_TOOL_WEBHOOK_URL``), which answers tool calls for the backend."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from .ops.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from .queues import DropOldestQueue
from .taps import CallEnd, CallInfo, Observer, TappedEvent

logger = logging.getLogger(__name__)

#: Server events queued for a sideband that does not read; past this it is closed
#: (a backend must not silently miss a tool call).
MAX_QUEUED = 10_000


@dataclass(eq=False)
class Sideband:
    """One attached sideband: server events to send, then why the call ended."""

    call_id: str
    queue: DropOldestQueue[str] = field(default_factory=lambda: DropOldestQueue(MAX_QUEUED))
    #: Set when the call ended (its outcome) or the sideband fell behind.
    ended: str | None = None
    fell_behind: bool = False


class SidebandHub(Observer):
    """Fans each call's server events out to its sidebands."""

    name = "sideband"

    def __init__(self) -> None:
        self._attached: dict[str, set[Sideband]] = {}
        self.attached_total = 0

    def attach(self, call_id: str) -> Sideband:
        sideband = Sideband(call_id)
        self._attached.setdefault(call_id, set()).add(sideband)
        self.attached_total += 1
        return sideband

    def detach(self, sideband: Sideband) -> None:
        attached = self._attached.get(sideband.call_id)
        if attached is not None:
            attached.discard(sideband)
            if not attached:
                del self._attached[sideband.call_id]
        sideband.queue.close()

    def count(self, call_id: str | None = None) -> int:
        if call_id is not None:
            return len(self._attached.get(call_id, ()))
        return sum(len(s) for s in self._attached.values())

    def event(self, call_id: str, event: TappedEvent) -> None:
        if event.direction != "server":
            return
        for sideband in list(self._attached.get(call_id, ())):
            if len(sideband.queue) >= MAX_QUEUED:
                sideband.fell_behind = True
                self.end(sideband, "sideband_too_slow")
                continue
            sideband.queue.put(event.text)

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        self.end_call(call.call_id, end.outcome)

    def end_call(self, call_id: str, outcome: str) -> None:
        """Close every sideband of a call (after what is queued)."""
        for sideband in list(self._attached.get(call_id, ())):
            self.end(sideband, outcome)

    def end(self, sideband: Sideband, outcome: str) -> None:
        if sideband.ended is None:
            sideband.ended = outcome
        self.detach(sideband)

    def snapshot(self) -> Mapping[str, int]:
        return {call_id: len(s) for call_id, s in self._attached.items()}


#: The largest tool webhook answer read (its body becomes the function's output).
MAX_TOOL_ANSWER_BYTES = 256 * 1024
_ARGUMENTS_DONE = "response.function_call_arguments.done"


class _Bridge(Protocol):
    def send_trusted(self, event: dict[str, Any], text: str) -> None: ...


class _CallLike(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def bridge(self) -> _Bridge: ...


class ToolWebhook(Observer):
    """Answers a call's tool calls by POSTing each to the backend's URL (signed like
    the relay's webhooks) and injecting the answer: a ``function_call_output`` (the
    answer's ``output`` field, or its whole body) and a ``response.create``. A failure
    or a timeout becomes an output saying so, and the model carries on."""

    name = "tool_webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str | None,
        timeout_secs: float,
        find_call: Callable[[str], _CallLike | None],
        http: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self._find_call = find_call
        self._http = http
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self.answered = 0
        self.failed = 0

    def event(self, call_id: str, event: TappedEvent) -> None:
        if event.direction != "server" or event.type != _ARGUMENTS_DONE:
            return
        task = asyncio.ensure_future(self._answer(call_id, dict(event.data)))
        tasks = self._tasks.setdefault(call_id, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        for task in self._tasks.pop(call.call_id, set()):
            task.cancel()

    async def _answer(self, call_id: str, event: dict[str, Any]) -> None:
        body = json.dumps(
            {
                "type": "tool.call",
                "call_id": call_id,
                "item_id": event.get("item_id"),
                "tool_call_id": event.get("call_id"),
                "name": event.get("name"),
                "arguments": event.get("arguments"),
            }
        ).encode()
        try:
            output = await self._post(body)
            self.answered += 1
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.failed += 1
            logger.warning("call %s: the tool webhook failed: %r", call_id, exc)
            output = json.dumps({"error": f"The tool could not be run: {_reason(exc)}."})
        call = self._find_call(call_id)
        if call is None or call.state != "active":
            return
        for reply in (
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": event.get("call_id"),
                    "output": output,
                },
            },
            {"type": "response.create"},
        ):
            call.bridge.send_trusted(reply, json.dumps(reply))

    async def _post(self, body: bytes) -> str:
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        async with self._http().post(
            self._url, data=body, headers=headers, timeout=self._timeout
        ) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            raw = await response.content.read(MAX_TOOL_ANSWER_BYTES + 1)
        if len(raw) > MAX_TOOL_ANSWER_BYTES:
            raise ValueError("the answer is too large")
        text = raw.decode("utf-8", "replace")
        try:
            answer = json.loads(text)
        except ValueError:
            return text
        if isinstance(answer, dict) and isinstance(answer.get("output"), str):
            return str(answer["output"])
        return text


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    if isinstance(exc, ValueError):
        return f"it answered {exc}"
    return "it could not be reached"
