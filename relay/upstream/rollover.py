"""Calls that outlive their upstream sessions: rollover and recovery.

OpenAI ends a Realtime session at its cap (60 minutes; ``session_expired``). Before that,
:class:`Rollover` opens a second upstream session for the same call (a fresh ephemeral
key, the call's own locked session config, the ``session.update`` fields changed since
replayed), seeds it with the conversation so far as text items
(:mod:`relay.upstream.context`), and swaps over at a quiet moment: nobody speaking, no
response in flight, no transcript still to come; forced just before the cap. The swap
is one step on the event loop: the caller's audio goes to the new session's track, the
agent's packets come from the new session (their RTP timestamps continued, so the
browser hears one stream), and the event bridge takes the new session's channel. The
call id, the browser's connection, the recording, the monitor and the sideband stay;
the browser gets one ``relay.session.renewed`` event and never the new session's
``session.created``/``session.updated`` (the new session's events go to the rollover
until the swap).

**Why start ``rollover_lead_secs`` (2 min) early**: opening and seeding a session takes
about a second, and a quiet moment needs the current turn to end; two minutes of a
60-minute session is a small price for almost never forcing a swap mid-sentence. The
forced swap comes ``FORCE_MARGIN_SECS`` (5 s; a third of the lead if shorter) before the
cap, counted from before the key was minted, so OpenAI's clock cannot be earlier.

**Recovery** uses the same steps when the current session dies (its process gone, ICE
failed, ``session_expired``; not when OpenAI's side closes it on purpose): a new session
with the conversation, swapped in at once, if one opens within ``upstream_recovery_secs``
of OpenAI last being heard; otherwise the call ends with the caller told (an ``error``
event), as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..caller.leg import CallRequest
from ..config import Settings
from ..events import EventBridge
from ..media.downlink import AgentAudio
from ..media.tracks import UplinkTrack
from ..taps import CallTaps, TappedEvent
from .context import Activity, SessionUpdates, Transcript
from .handover import KEEP_RENEWALS, AgentClock, NewSession
from .leg import Upstream, UpstreamLeg

logger = logging.getLogger(__name__)

FORCE_MARGIN_SECS = 5.0
#: A new session's ``session.created`` and the acknowledgement of its seed items.
SEED_TIMEOUT_SECS = 5.0
#: A rollover whose new session could not be opened is tried again after this.
RETRY_AFTER_SECS = 5.0
#: Recovery: pause between attempts (a refused connection fails at once).
RECOVERY_PAUSE_SECS = 0.1
#: The old session is closed this long after a swap, not in the swap's first moments
#: (closing a peer connection and hanging up cost the event loop a few milliseconds).
RETIRE_AFTER_SECS = 1.0
#: Recovery: the last attempt, begun before the deadline, may finish this much after it.
ATTEMPT_GRACE_SECS = 3.0
#: Recovery gets at least this long, however long ago OpenAI was last heard.
MIN_RECOVERY_SECS = 0.2
RENEWED_EVENT = "relay.session.renewed"
#: How a session may die and be replaced: its peer gone (the probe, ICE) or its cap hit.
#: A session OpenAI's side closes (a hangup) ends the call.
RECOVERABLE = ("upstream_failed", "upstream_session_expired")


class Host(Protocol):
    """What the rollover uses of its call (:class:`relay.call.Call`)."""

    upstream: Upstream
    uplink: UplinkTrack
    bridge: EventBridge
    agent_audio: AgentAudio
    taps: CallTaps
    request: CallRequest
    model: str

    def replace_upstream(self, leg: UpstreamLeg, uplink: UplinkTrack) -> UplinkTrack: ...


LegFactory = Callable[[Callable[[str], None]], UpstreamLeg]


@dataclass
class _Prepared:
    leg: UpstreamLeg
    uplink: UplinkTrack
    events: NewSession
    opened_secs: float = 0.0
    seeded: set[str] = field(default_factory=set)
    #: Items already weighed for seeding (carried, or left out by the budget).
    weighed: set[str] = field(default_factory=set)
    lost: bool = False


@dataclass(frozen=True)
class Renewal:
    """One swap to a new upstream session (for tests, benchmarks and logs)."""

    reason: str  # rollover (at a quiet moment), forced (at the cap), recovered
    at: float  # monotonic
    items_carried: int
    #: Opening and seeding the new session (before any wait for a quiet moment).
    prepare_secs: float
    #: The upstream call ids (OpenAI's ``rtc_...``) of the old and the new session.
    old_call_id: str | None = None
    new_call_id: str | None = None


class Rollover:
    """Renews a call's upstream session before its cap, and recovers a dead one."""

    def __init__(
        self,
        call: Host,
        settings: Settings,
        *,
        dialect: str,
        make_leg: LegFactory,
        end: Callable[[str], None],
    ) -> None:
        self._call = call
        #: Renewal and recovery need a WebRTC upstream (the WebSocket one has neither).
        self.enabled = isinstance(call.upstream, UpstreamLeg)
        cap = settings.upstream_session_max_secs
        if settings.embedded_emulator:  # beta sessions: half the cap, as OpenAI's were
            emulated = settings.emulator.max_session_secs
            cap = min(cap, emulated / 2 if dialect == "beta" else emulated)
        self.cap_secs = cap
        self.lead_secs = min(settings.rollover_lead_secs, cap / 2)
        self.force_margin_secs = min(FORCE_MARGIN_SECS, self.lead_secs / 3)
        self._budget = settings.rollover_context_tokens
        self._recovery_secs = settings.upstream_recovery_secs
        self._dialect = dialect
        self._make_leg = make_leg
        self._end = end
        self.transcript = Transcript()
        self.activity = Activity()
        self._updates = SessionUpdates()
        self.clock = AgentClock(call.agent_audio.on_packet)
        self._prepared: _Prepared | None = None
        self._legs: set[UpstreamLeg] = set()  # opened or retired here, not yet closed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rolling = False
        self._recovering = False
        self._failed = False
        self._urgent = False
        self._retry_at = 0.0
        self._lost: tuple[str, float] = ("", 0.0)  # why and until when recovery runs
        self._roll_task: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()
        #: Swaps so far, oldest first.
        self.renewals: deque[Renewal] = deque(maxlen=KEEP_RENEWALS)

    @property
    def _leg(self) -> UpstreamLeg:
        leg = self._call.upstream
        assert isinstance(leg, UpstreamLeg), "rollover runs on WebRTC upstreams only"
        return leg

    # -- what the call tells it ------------------------------------------------------

    def on_event(self, event: TappedEvent) -> None:
        if event.direction == "server":
            self.transcript.on_server_event(event.data)
            self.activity.on_server_event(event.data, time.monotonic())
            self._wake.set()
        elif event.direction == "client":
            self._updates.on_client_event(event.data)

    def tick(self, now: float) -> None:
        """Start a rollover once the current session is within the lead of its cap."""
        if not self.enabled:
            return
        self.clock.adopt(self._leg)
        if self.lead_secs <= 0 or self._rolling or self._recovering or self._failed:
            return
        age = now - self._leg.opened_at
        if now >= self._retry_at and age >= self.cap_secs - self.lead_secs:
            self._rolling = True
            self._roll_task = self._spawn(self._roll())

    def recover(self, outcome: str) -> bool:
        """The current session died (``outcome``): try a new one. ``False``: the call
        should end (recovery is off, or it was tried and failed)."""
        if not self.enabled:
            return False
        if self._recovering:
            return True
        if self._recovery_secs <= 0 or self._failed or outcome not in RECOVERABLE:
            return False
        self._recovering = True
        self.clock.adopt(self._leg)
        self._leg.detach()
        heard = self._call.agent_audio.last_packet_at + self._recovery_secs
        deadline = max(heard, time.monotonic() + MIN_RECOVERY_SECS)
        self._lost = (outcome, deadline)
        logger.info("upstream session lost (%s): recovering", outcome)
        if self._prepared is not None:  # a rollover has one ready: take it now
            self._urgent = True
            self._wake.set()
            return True
        if self._roll_task is not None:  # a rollover still opening: recovery takes over
            self._roll_task.cancel()
        self._spawn(self._recover(outcome, deadline))
        return True

    async def close(self) -> None:
        """Cancel what is under way and close every leg not handed to the call."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        legs, self._legs = list(self._legs), set()
        await asyncio.gather(*(leg.close(hangup=True) for leg in legs), return_exceptions=True)

    # -- rollover --------------------------------------------------------------------

    async def _roll(self) -> None:
        try:
            prepared = self._prepared = await self._open_seeded()
            await self._wait_for_quiet(prepared)
            if prepared.lost:
                raise ConnectionError("the prepared session ended before the swap")
            quiet = self.activity.quiet(time.monotonic())
            reason = "recovered" if self._urgent else "rollover" if quiet else "forced"
            await self._swap(prepared, reason)
        except Exception as exc:  # noqa: BLE001 (any failure: try again later)
            logger.warning("rollover: no swap to a new upstream session: %r", exc)
            if self._prepared is not None and self._prepared.leg is not self._call.upstream:
                await self._drop(self._prepared.leg)
            self._retry_at = time.monotonic() + RETRY_AFTER_SECS
            if self._urgent:  # the current session died meanwhile: recovery goes on
                self._spawn(self._recover(self._lost[0], self._lost[1]))
                return
            self._recovering = False
        finally:
            self._prepared = None
            self._rolling = self._urgent = False
        self._recovering = False

    async def _wait_for_quiet(self, prepared: _Prepared) -> None:
        """Until a quiet moment, the forced swap's time, or an urgent swap."""
        force_at = self._leg.opened_at + self.cap_secs - self.force_margin_secs
        while not (self._urgent or prepared.lost):
            now = time.monotonic()
            if self.activity.quiet(now) or now >= force_at:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(force_at - now, 0.25))

    async def _recover(self, outcome: str, deadline: float) -> None:
        """Attempts start until ``deadline``; the last may take ``ATTEMPT_GRACE_SECS``
        more (an upstream that answers is worth the wait; one that refuses fails fast)."""
        while time.monotonic() < deadline:
            try:
                bound = deadline + ATTEMPT_GRACE_SECS - time.monotonic()
                prepared = await asyncio.wait_for(self._open_seeded(), bound)
            except Exception as exc:  # noqa: BLE001 (any failure: try again until the deadline)
                logger.warning("upstream recovery attempt failed: %r", exc)
                pause = min(RECOVERY_PAUSE_SECS, deadline - time.monotonic())
                await asyncio.sleep(max(0.0, pause))
                continue
            await self._swap(prepared, "recovered")
            self._recovering = False
            return
        logger.warning("upstream recovery gave up: %s", outcome)
        self._failed = True
        self._recovering = False
        self._end(outcome)

    # -- the steps -------------------------------------------------------------------

    def _leg_ended(self, leg: UpstreamLeg, outcome: str) -> None:
        if leg is self._call.upstream:
            self._end(outcome)
        elif self._prepared is not None and leg is self._prepared.leg:
            self._prepared.lost = True
            self._wake.set()

    async def _open_seeded(self) -> _Prepared:
        """A new upstream session for the call, seeded with the conversation so far."""
        events = NewSession()
        uplink = UplinkTrack()
        started = time.monotonic()
        leg = self._make_leg(lambda outcome: self._leg_ended(leg, outcome))
        self._legs.add(leg)
        try:
            await leg.open(
                self._call.request.session,
                self._call.model,
                uplink=uplink,
                agent_audio=self.clock.sink_for(leg),
                bridge=events.on_message,
                decode_agent=False,
            )
            await asyncio.wait_for(events.created.wait(), SEED_TIMEOUT_SECS)
            prepared = _Prepared(leg, uplink, events)
            self._replay_updates(leg)
            await self._seed(prepared)
            prepared.opened_secs = time.monotonic() - started
            return prepared
        except BaseException:
            uplink.stop()
            await self._drop(leg)
            raise

    def _replay_updates(self, leg: UpstreamLeg) -> None:
        session = dict(self._updates.merged)
        if not session:
            return
        if self._dialect == "ga":
            session.setdefault("type", "realtime")
        leg.send(json.dumps({"type": "session.update", "session": session}))

    async def _seed(self, prepared: _Prepared) -> None:
        """Create the items not yet carried (all, the first time) and wait for them."""
        items = self.transcript.items(self._budget, self._dialect, frozenset(prepared.weighed))
        prepared.weighed.update(self.transcript.carriable(self._dialect))
        if not items:
            return
        for item_id, payload in items:
            if len(item_id) <= 32:  # the browser's references to items stay valid
                payload = {**payload, "id": item_id}
            else:
                item_id = payload["id"] = "item_relay" + secrets.token_hex(8)
            prepared.events.expect(item_id)
            event = {
                "type": "conversation.item.create",
                "event_id": "relay_seed_" + item_id,
                "item": payload,
            }
            prepared.leg.send(json.dumps(event))
            prepared.seeded.add(item_id)
        await asyncio.wait_for(prepared.events.settled.wait(), SEED_TIMEOUT_SECS)
        if prepared.events.errors:
            logger.warning("seeding the new session: errors %s", prepared.events.errors)

    async def _swap(self, prepared: _Prepared, reason: str) -> None:
        call = self._call
        await self._seed(prepared)  # what was said while it waited
        old, new = self._leg, prepared.leg
        self.clock.adopt(old)
        old.detach()
        new.attach(call.bridge)
        new.decode_agent(call.taps.wants_agent_audio())
        self.clock.follow(new)
        self._legs.discard(new)
        for payload, pts in call.uplink.recent:  # what the old session had not yet heard
            prepared.uplink.push(payload, pts)
        old_uplink = call.replace_upstream(new, prepared.uplink)
        prepared.uplink.packets_sent = old_uplink.packets_sent
        old_uplink.stop()
        self._legs.add(old)
        self._spawn(self._drop(old, after_secs=RETIRE_AFTER_SECS))
        self._end_cut_turns(self.activity)
        self.activity = Activity()
        self.renewals.append(
            Renewal(
                reason,
                time.monotonic(),
                len(prepared.seeded),
                prepared.opened_secs,
                old.call_id,
                new.call_id,
            )
        )
        self._announce(prepared, reason)
        logger.info("upstream session renewed (%s), %d items carried", reason, len(prepared.seeded))

    def _end_cut_turns(self, activity: Activity) -> None:
        """A forced swap cuts the old session's response: the browser gets the ends it
        waits for (``output_audio_buffer.stopped``, ``response.done`` cancelled)."""
        cut: list[dict[str, Any]] = []
        if activity.playing:
            cut.append(
                {"type": "output_audio_buffer.stopped", "response_id": activity.playing_response}
            )
        for response_id in sorted(activity.responses):
            response = {
                "id": response_id,
                "object": "realtime.response",
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "session_renewed"},
                "output": [],
            }
            cut.append({"type": "response.done", "response": response})
        for event in cut:
            self._relay_event({"event_id": "event_relay" + secrets.token_hex(8), **event})

    def _relay_event(self, event: dict[str, Any]) -> None:
        """A server event of the relay's own: to the browser (as its policy allows) and
        to the call's observers."""
        text = json.dumps(event)
        policy = self._call.bridge.policy
        shown = policy.server_view(event, text) if policy is not None else text
        if shown is not None:
            self._call.bridge.caller.send(shown)
        self._call.taps.event(TappedEvent("server", event["type"], event, text, time.time()))

    def _announce(self, prepared: _Prepared, reason: str) -> None:
        notice = {
            "type": RENEWED_EVENT,
            "event_id": "event_relay" + secrets.token_hex(8),
            "reason": reason,
            "session": {
                "id": prepared.events.session.get("id"),
                "expires_at": prepared.events.session.get("expires_at"),
            },
            "items_carried": len(prepared.seeded),
        }
        self._relay_event(notice)

    async def _drop(self, leg: UpstreamLeg, *, after_secs: float = 0.0) -> None:
        try:
            await asyncio.sleep(after_secs)
            await leg.close(hangup=True)
        finally:
            self._legs.discard(leg)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
