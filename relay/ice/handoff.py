"""ICE-TCP connections accepted by one shard, handed to the shard that owns the call.

Shards share the listen port (``SO_REUSEPORT``), so the kernel may give a call's
ICE-TCP connection to any of them. The accepting shard reads the call's ufrag from the
first STUN frame (its shard prefix, :meth:`relay.shards.ShardLayout.ufrag_owner`) and
passes the socket itself to the owner over a Unix datagram socket (``SCM_RIGHTS``): the
media then flows owner <-> browser directly, with no copy through the first shard.
This is the same routing as HTTP follow-ups (a call's id names its shard), for media."""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from .tcp import IceTcpMux

logger = logging.getLogger(__name__)


class MediaHandoff:
    """Sends and receives accepted ICE-TCP sockets between sibling shards."""

    def __init__(
        self,
        own_index: int,
        path_of: Callable[[int], str],
        owner_of: Callable[[str], int | None],
        mux: IceTcpMux,
    ) -> None:
        self._own = own_index
        self._path_of = path_of
        self._owner_of = owner_of
        self._mux = mux
        self._inbox: socket.socket | None = None
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._outbox.setblocking(False)  # a sibling's full inbox must not stall the loop
        self._tasks: set[asyncio.Task[None]] = set()
        self.received = 0

    def start(self) -> None:
        path = self._path_of(self._own)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.bind(path)
        inbox.setblocking(False)
        self._inbox = inbox
        asyncio.get_running_loop().add_reader(inbox.fileno(), self._receive)

    def route(self, conn: socket.socket, ufrag: str) -> bool:
        """Pass ``conn`` to the shard that owns ``ufrag``; ``False`` if none does."""
        owner = self._owner_of(ufrag)
        if owner is None or owner == self._own:
            return False
        try:
            # Not socket.send_fds: it drops its address argument (CPython), and an
            # unconnected datagram socket then fails with ENOTCONN.
            rights = array.array("i", [conn.fileno()])
            self._outbox.sendmsg(
                [b"i"],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)],
                0,
                self._path_of(owner),
            )
        except OSError as exc:
            logger.warning("could not hand an ICE-TCP connection to shard %d: %s", owner, exc)
            return False
        conn.close()  # the owner has its own copy of the socket now
        return True

    def _receive(self) -> None:
        assert self._inbox is not None
        try:
            _, fds, _, _ = socket.recv_fds(self._inbox, 16, 4)
        except (BlockingIOError, InterruptedError):
            return
        for fd in fds:
            conn = socket.socket(fileno=fd)
            conn.setblocking(False)
            self.received += 1
            task = asyncio.ensure_future(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._mux.stream, conn)
        except OSError:
            conn.close()

    async def close(self) -> None:
        """Stop receiving and release both sockets (idempotent)."""
        if self._inbox is not None:
            asyncio.get_running_loop().remove_reader(self._inbox.fileno())
            self._inbox.close()
            self._inbox = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._outbox.close()
