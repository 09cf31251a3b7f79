"""Liveness: a call's legs are hung up for being gone, not for being silent.

A leg whose audio stopped (a closed tab, a dead upstream: neither says goodbye) is
probed: its peer must answer a connectivity check. A muted caller or a quiet agent whose
peer answers is left alone; one that does not is gone now, not at ICE consent expiry
(~30 s). The registry's one ticker drives the checks (:meth:`Liveness.check`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .taps import Leg

#: Agent audio silent this long: check that OpenAI's side still answers (the caller's
#: side is checked after ``media_timeout_secs`` of silence).
UPSTREAM_QUIET_SECS = 0.4
#: How long a quiet leg's peer has to answer: the caller may be on a slow mobile
#: network; OpenAI's side is a data centre away (and a dead one must be replaced, or the
#: browser told, within 2 s: quiet + a tick + this + recovery).
PROBE_SECS: dict[Leg, float] = {"caller": 0.7, "upstream": 0.5}


class Peer(Protocol):
    async def answers(self, timeout_secs: float) -> bool: ...


class Liveness:
    """Probes a call's quiet legs, one probe per leg at a time."""

    def __init__(
        self,
        peer_of: Callable[[Leg], Peer],
        on_gone: Callable[[Leg], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._peer_of = peer_of
        self._on_gone = on_gone
        self._spawn = spawn
        self._probing: set[Leg] = set()
        self._probed_at: dict[Leg, float] = {"caller": 0.0, "upstream": 0.0}

    def check(self, leg: Leg, last_heard: float, quiet_secs: float, now: float) -> None:
        """Probe ``leg`` if nothing was heard from it (or a probe) for ``quiet_secs``."""
        if leg in self._probing or now - max(last_heard, self._probed_at[leg]) <= quiet_secs:
            return
        self._probing.add(leg)
        self._probed_at[leg] = now
        self._spawn(self._probe(leg))

    def heard(self, leg: Leg, now: float) -> None:
        """``leg`` is new or was heard from: its quiet counts from ``now``."""
        self._probed_at[leg] = now

    async def _probe(self, leg: Leg) -> None:
        peer = self._peer_of(leg)
        try:
            # a leg replaced meanwhile (a rollover, a resumed caller) is not ours to judge
            alive = await peer.answers(PROBE_SECS[leg]) or peer is not self._peer_of(leg)
        finally:
            self._probing.discard(leg)
        if not alive:
            self._on_gone(leg)
