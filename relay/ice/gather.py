"""Host candidates the way the relay wants them, for one aioice connection.

aioice binds every host candidate to an ephemeral port on every interface but
loopback, and has no notion of a public address. :class:`IcePlan` says where to bind
(addresses, a UDP port range), what to announce (a relay behind 1:1 NAT binds locally
and advertises its public address, like LiveKit's node IP or Janus' nat_1_1_mapping),
and whether to add a passive ICE-TCP candidate on the page's port."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from dataclasses import dataclass

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from ..errors import RelayError
from .tcp import IceTcpMux, passive_candidate

logger = logging.getLogger(__name__)

UDP_BUFFER_BYTES = 1024 * 1024


class NoMediaPort(RelayError):
    """No UDP port could be bound for a leg's media: a relay misconfiguration
    (``RELAY_ICE_ADDRESSES`` not on this host) or an exhausted ``RELAY_UDP_PORTS``."""

    status = 503
    type = "server_error"
    code = "media_port_unavailable"


@dataclass(frozen=True)
class TcpOffer:
    """A passive ICE-TCP candidate: the mux that takes the connections, and the port
    browsers connect to (the page's port, or a separate one)."""

    mux: IceTcpMux
    port: int


@dataclass(frozen=True)
class IcePlan:
    """How one of the relay's peer connections gathers."""

    #: Addresses to bind host candidates on (empty: aioice's choice of interfaces).
    host_addresses: tuple[str, ...] = ()
    #: Addresses announced instead of the bound ones (a relay behind NAT); one for all,
    #: or one per bound address, in order.
    public_addresses: tuple[str, ...] = ()
    #: Inclusive UDP port range for host candidates (``None``: ephemeral ports).
    udp_ports: tuple[int, int] | None = None
    tcp: TcpOffer | None = None
    #: Our ICE ufrags start with this (a shard's mark, so ICE-TCP finds its owner).
    ufrag_prefix: str = ""
    #: Which leg gathers with this plan ("caller" or "upstream"), for error messages.
    leg: str = "caller"

    def announced(self, bound: str, index: int) -> str:
        if not self.public_addresses:
            return bound
        if len(self.public_addresses) == 1:
            return self.public_addresses[0]
        return self.public_addresses[min(index, len(self.public_addresses) - 1)]


async def gather(connection: aioice.ice.Connection, plan: IcePlan) -> None:
    """``Connection.gather_candidates`` per ``plan`` (host candidates only: the relay's
    peer connections have no STUN or TURN server)."""
    if connection._local_candidates_start:
        return
    connection._local_candidates_start = True
    addresses = list(plan.host_addresses) or aioice.ice.get_host_addresses(
        use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6
    )
    usable = [a for a in addresses if (connection._use_ipv6 if ":" in a else connection._use_ipv4)]
    failures: list[str] = []
    for component in connection._components:
        for index, address in enumerate(usable):
            candidate, error = await _bind_host(connection, component, address, plan)
            if candidate is not None:
                candidate.host = plan.announced(address, index)
                connection._local_candidates.append(candidate)
            elif error is not None:
                failures.append(f"{address}: {error}")
    if failures and not connection._local_candidates:
        raise _no_media_port(plan, usable, failures)
    if plan.tcp is not None and usable:
        for index, address in enumerate(usable):
            tcp = passive_candidate(plan.announced(address, index), plan.tcp.port)
            connection._local_candidates.append(tcp)
            if index == 0:
                plan.tcp.mux.register(connection, tcp)
    connection._local_candidates_end = True


def _no_media_port(plan: IcePlan, addresses: list[str], failures: list[str]) -> NoMediaPort:
    ports = f"ports {plan.udp_ports[0]}-{plan.udp_ports[1]}" if plan.udp_ports else "any port"
    peer = "the browser" if plan.leg == "caller" else "OpenAI"
    message = (
        f"The relay could not open a UDP port for the {plan.leg} leg (relay <-> {peer}) on "
        f"{', '.join(addresses) or 'no address'} ({ports}): {'; '.join(failures[:3])}. "
        "RELAY_ICE_ADDRESSES must be addresses of this host (announce a public one with "
        "RELAY_ICE_PUBLIC_ADDRESSES); a RELAY_UDP_PORTS range must have a free port per call leg."
    )
    logger.error("%s", message)
    return NoMediaPort(message)


async def _bind_host(
    connection: aioice.ice.Connection, component: int, address: str, plan: IcePlan
) -> tuple[Candidate | None, str | None]:
    """The host candidate bound on ``address``, or ``None`` and the last error."""
    loop = asyncio.get_running_loop()
    error: str | None = None
    for port in _ports(plan.udp_ports):
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError as exc:
            error = exc.strerror or str(exc)
            if plan.udp_ports is not None and exc.errno == errno.EADDRINUSE:
                error = "every port of the range is in use"
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER_BYTES)
        bound = transport.get_extra_info("sockname")
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", bound[0]),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=bound[0],
            port=bound[1],
            type="host",
        )
        connection._protocols.append(protocol)
        return protocol.local_candidate, None
    return None, error


def _ports(udp_ports: tuple[int, int] | None) -> list[int]:
    """Ports to try: 0 (any), or the range from a random start, each once."""
    if udp_ports is None:
        return [0]
    low, high = udp_ports
    ports = list(range(low, high + 1))
    start = random.randrange(len(ports))
    return ports[start:] + ports[:start]


@dataclass
class IceSetup:
    """This process's ICE choices and its ICE-TCP mux; each leg's plan comes from here.

    ``tcp_port`` is set by the listener once it is bound (the port browsers reach,
    which may differ when a load balancer or NAT maps another one)."""

    host_addresses: tuple[str, ...] = ()
    public_addresses: tuple[str, ...] = ()
    udp_ports: tuple[int, int] | None = None
    mux: IceTcpMux | None = None
    tcp_port: int | None = None
    ufrag_prefix: str = ""

    def caller_plan(self) -> IcePlan:
        tcp = None
        if self.mux is not None and self.tcp_port:
            tcp = TcpOffer(self.mux, self.tcp_port)
        return IcePlan(
            self.host_addresses,
            self.public_addresses,
            self.udp_ports,
            tcp,
            self.ufrag_prefix,
            leg="caller",
        )

    def upstream_plan(self) -> IcePlan:
        """OpenAI answers from wherever the relay's checks come from: no announcing."""
        return IcePlan(self.host_addresses, (), self.udp_ports, None, leg="upstream")
