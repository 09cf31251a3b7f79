"""Two pieces of a swap between upstream sessions (:mod:`relay.upstream.rollover`):
the agent's RTP timestamps continued across sessions, and a new session's events
before it takes over the call."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from ..media.opus import FRAME_TICKS, RTP_WRAP
from .leg import PacketSink, UpstreamLeg

#: Renewals remembered per call (one an hour with OpenAI's cap).
KEEP_RENEWALS = 100


class AgentClock:
    """Agent packets of the call's current leg only, with RTP timestamps that continue
    across legs (a new session starts its own random timeline)."""

    def __init__(self, sink: PacketSink) -> None:
        self._sink = sink
        self.current: UpstreamLeg | None = None
        self._offset = 0
        self._last: int | None = None
        self._last_at = 0.0
        self._rebase = False
        #: The agent audio's gap at the last swap (ms between the last packet of the old
        #: session and the first of the new one).
        self.last_gap_ms: float | None = None
        self.gaps_ms: deque[float] = deque(maxlen=KEEP_RENEWALS)

    def sink_for(self, leg: UpstreamLeg) -> PacketSink:
        def sink(payload: bytes, rtp_timestamp: int) -> None:
            if leg is self.current:
                self._forward(payload, rtp_timestamp)

        return sink

    def adopt(self, leg: UpstreamLeg) -> None:
        """Start following ``leg`` (the call's first), as it is."""
        if self.current is None:
            self.current = leg
            leg.agent_sink(self.sink_for(leg))

    def follow(self, leg: UpstreamLeg) -> None:
        self.current, self._rebase = leg, self._last is not None

    def _forward(self, payload: bytes, rtp_timestamp: int) -> None:
        now = time.monotonic()
        if self._rebase and self._last is not None:
            self._rebase = False
            self.last_gap_ms = (now - self._last_at) * 1000
            self.gaps_ms.append(self.last_gap_ms)
            frames = max(1, round((now - self._last_at) * 50))  # 20 ms frames
            self._offset = (self._last + frames * FRAME_TICKS - rtp_timestamp) % RTP_WRAP
        out = (rtp_timestamp + self._offset) % RTP_WRAP
        self._last, self._last_at = out, now
        self._sink(payload, out)


class NewSession:
    """A new leg's events until it takes over the call: its ``session.created`` and the
    acknowledgements of the items seeded into it."""

    def __init__(self) -> None:
        self.created = asyncio.Event()
        self.session: dict[str, Any] = {}
        self.pending: set[str] = set()
        self.settled = asyncio.Event()
        self.errors: list[str] = []

    def on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        item: dict[str, Any] = event["item"] if isinstance(event.get("item"), dict) else {}
        if kind == "session.created" and isinstance(event.get("session"), dict):
            self.session = event["session"]
            self.created.set()
        elif kind in ("conversation.item.done", "conversation.item.created"):
            self._acked(str(item.get("id")))
        elif kind == "error":
            error: dict[str, Any] = event["error"] if isinstance(event.get("error"), dict) else {}
            self.errors.append(str(error.get("code")))
            self._acked(str(error.get("event_id") or "").removeprefix("relay_seed_"))

    def expect(self, item_id: str) -> None:
        self.pending.add(item_id)
        self.settled.clear()

    def _acked(self, item_id: str) -> None:
        self.pending.discard(item_id)
        if not self.pending:
            self.settled.set()
