"""The emulator's own ICE behaviour, set on one peer connection at a time.

The relay runs the emulator in its own process, so nothing here touches aiortc's or
aioice's modules or classes: each setting replaces a method on the ``aioice``
connections of one :class:`~aiortc.RTCPeerConnection`, and no other connection sees it.

* **Host addresses.** aioice gathers on every interface but loopback; with
  ``ice_addresses`` the emulator binds its host candidates on exactly those addresses
  (127.0.0.1 in the tests).
* **Strict consent.** OpenAI's ICE-lite media servers have been seen to ignore binding
  requests without USE-CANDIDATE once a pair is nominated, so a client whose consent
  checks lack it loses the call after ~30 s. ``strict_consent`` does the same.

Call :func:`configure_ice` after ``setRemoteDescription`` (an answerer's transports
exist and are bundled by then) and before ``setLocalDescription`` (which gathers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aioice import Candidate, Connection, stun
from aiortc import RTCPeerConnection


def agents_of(pc: RTCPeerConnection) -> list[Connection]:
    """The distinct aioice connections under ``pc`` (one per ICE transport)."""
    dtls_transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls_transports.append(pc.sctp.transport)
    by_ice = {id(d.transport): d.transport for d in dtls_transports if d is not None}
    return [ice._connection for ice in by_ice.values()]


class HostGathering:
    """``gather_candidates`` of one connection: host candidates on given addresses
    only, no server-reflexive or relayed ones (the emulator has no STUN/TURN)."""

    def __init__(self, agent: Connection, addresses: Iterable[str]) -> None:
        self._agent = agent
        self._addresses = list(addresses)

    async def __call__(self) -> None:
        agent = self._agent
        if agent._local_candidates_start:
            return
        agent._local_candidates_start = True
        found: list[Candidate] = []
        for component in sorted(agent._components):
            found += await agent.get_component_candidates(component, self._addresses)
        agent._local_candidates += found
        agent._local_candidates_end = True


class ConsentGate:
    """``request_received`` of one connection: once a pair is nominated, binding
    requests without USE-CANDIDATE get no answer at all (not even an error)."""

    def __init__(self, agent: Connection) -> None:
        self._agent = agent
        self._stock = agent.request_received
        #: Requests left unanswered (for tests and logs).
        self.ignored = 0

    def __call__(self, message: stun.Message, addr: tuple[str, int], protocol: Any) -> None:
        nominated = bool(self._agent._nominated)
        if nominated and "USE-CANDIDATE" not in message.attributes:
            self.ignored += 1
            return
        self._stock(message, addr, protocol)


def configure_ice(
    pc: RTCPeerConnection, *, host_addresses: Sequence[str] = (), strict_consent: bool = False
) -> list[Connection]:
    """Apply the emulator's ICE settings to ``pc`` alone; returns its connections."""
    agents = agents_of(pc)
    for agent in agents:
        if host_addresses:
            agent.gather_candidates = HostGathering(agent, host_addresses)  # type: ignore[method-assign]
        if strict_consent:
            agent.request_received = ConsentGate(agent)  # type: ignore[method-assign]
    return agents
