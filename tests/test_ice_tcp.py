"""ICE-TCP end to end with an *active* ICE-TCP client (bench/ice_tcp_client.py: aiortc
whose aioice agent gets a TCP connection to the relay's passive candidate, RFC 4571
framing): a call whose only way in is TCP to the relay's port connects and carries
audio both ways, on one process and across shards (``serve --workers 2``), where the
shard that accepts the TCP connection is not the one that owns the call and hands the
socket over (SCM_RIGHTS)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCSessionDescription
from relay_fixtures import BASE_SETTINGS, ServeRelay
from support import PacedAudioSource, RealtimeClient
from test_process import free_port, start, wait_healthy

from bench.ice_tcp_client import TcpLink, attach_tcp, tcp_only_offer
from relay.embedded import build_app
from relay.http.state import ICE, MEDIA_HANDOFF, REGISTRY
from relay.ice import tcp as ice_tcp
from relay.ice.demux import SharedPortSite
from relay.serving import start_site
from relay.shards import ShardLayout


async def _until(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def tcp_call(
    http: aiohttp.ClientSession,
    client: RealtimeClient,
    calls_url: str,
    *,
    connect_to: tuple[str, int] | None = None,
    end_of_candidates: bool = False,
) -> tuple[str, TcpLink]:
    """Open a call whose media can only go over ICE-TCP; returns its id and the link."""
    offer = tcp_only_offer(await client.offer(), end_of_candidates=end_of_candidates)
    response = await http.post(calls_url, data=offer, headers={"Content-Type": "application/sdp"})
    assert response.status == 201, await response.text()
    answer, link = await attach_tcp(client.pc, await response.text(), connect_to=connect_to)
    assert " udp " not in answer.lower().replace("a=candidate", "")
    await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return response.headers["Location"].rsplit("/", 1)[-1], link


async def _assert_flows(call: Any, client: RealtimeClient, link: TcpLink) -> None:
    await _until(
        lambda: call.caller_audio.frames_in > 50 and call.downlink.packets_sent > 50,
        20,
        "audio both ways through the relay over ICE-TCP",
    )
    pair = call.snapshot()["legs"]["caller"]["selected_pair"]
    assert pair is not None and pair["protocol"] == "tcp", pair
    assert call.snapshot()["transport"] == "tcp"
    assert client.pc.iceConnectionState == "completed"
    assert link.frames_in > 50 and link.frames_out > 50


@pytest.mark.parametrize("end_of_candidates", [False, True], ids=["trickle", "complete"])
async def test_a_tcp_only_client_makes_a_call(
    serve_relay: ServeRelay, end_of_candidates: bool
) -> None:
    """Whether or not the offer signals end-of-candidates: with it, and only TCP
    candidates (which never pair on the passive side), the relay's check list is empty
    until the TCP connection comes, and it must wait for it rather than fail."""
    relay = await serve_relay(host="127.0.0.1", port=0)
    client = RealtimeClient(PacedAudioSource())
    try:
        call_id, link = await tcp_call(
            relay.http,
            client,
            relay.url("/v1/realtime/calls"),
            end_of_candidates=end_of_candidates,
        )
        call = relay.registry.get_call(call_id)
        assert call is not None
        await client.wait_for("session.created", timeout=15)
        await _assert_flows(call, client, link)
        assert relay.app[ICE].mux is not None and relay.app[ICE].mux.refused == 0
        # Media never waits for Nagle on the relay's side (it did: +12-15 ms downlink).
        assert _relay_nodelay(relay.app[ICE].mux) == [1]
    finally:
        await client.close()
    # The call's agent closes, and with it its TCP stream and its place in the mux.
    await _until(lambda: relay.registry.get_call(call_id) is None, 10, "the call to end")
    await _until(lambda: len(relay.app[ICE].mux) == 0, 5, "the mux to forget the agent")


def _relay_nodelay(mux: Any) -> list[int]:
    """TCP_NODELAY of each ICE-TCP stream the relay holds."""
    return [
        stream.extra("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        for agent in mux._agents.values()
        for stream in agent.streams
    ]


async def test_a_tcp_only_offer_whose_connection_never_comes_fails_in_bounded_time(
    serve_relay: ServeRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for a TCP connection is bounded: without one, the caller leg's ICE
    fails at the deadline (and the call ends), it does not hang."""
    monkeypatch.setattr(ice_tcp, "TCP_WAIT_SECS", 1.0)
    relay = await serve_relay(host="127.0.0.1", port=0, media_timeout_secs=30.0)
    client = RealtimeClient(PacedAudioSource())
    try:
        offer = tcp_only_offer(await client.offer(), end_of_candidates=True)
        response = await relay.http.post(
            relay.url("/v1/realtime/calls"),
            data=offer,
            headers={"Content-Type": "application/sdp"},
        )
        assert response.status == 201, await response.text()
        call = relay.registry.get_call(response.headers["Location"].rsplit("/", 1)[-1])
        assert call is not None
        states: list[str] = [call.caller_pc.iceConnectionState]
        call.caller_pc.on(
            "iceconnectionstatechange", lambda: states.append(call.caller_pc.iceConnectionState)
        )
        started = asyncio.get_running_loop().time()
        await _until(lambda: relay.registry.get_call(call.id) is None, 8, "the call to end")
        assert asyncio.get_running_loop().time() - started < 6  # not the media timeout
        assert "failed" in states, states
    finally:
        await client.close()


@dataclass
class Shard:
    layout: ShardLayout
    site: SharedPortSite
    app: web.Application

    @property
    def port(self) -> int:
        return self.site.port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def two_shards() -> AsyncIterator[list[Shard]]:
    """Two shards as ``serve --workers 2`` runs them (same apps, Unix sockets, token and
    listener as relay.serving), each on its own port, so the test chooses which one
    accepts a connection."""
    socket_dir = tempfile.mkdtemp(prefix="rr-")
    token = ShardLayout.new_token()
    settings = replace(BASE_SETTINGS, host="127.0.0.1", port=0)
    runners: list[web.AppRunner] = []
    shards: list[Shard] = []
    try:
        for index in range(2):
            layout = ShardLayout(index, 2, socket_dir, token)
            runner = web.AppRunner(
                build_app(settings, shard=layout), handle_signals=False, shutdown_timeout=5
            )
            runners.append(runner)
            await runner.setup()
            site = await start_site(runner, settings)
            await web.UnixSite(runner, layout.socket_path(index)).start()
            shards.append(Shard(layout, site, runner.app))
        yield shards
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        shutil.rmtree(socket_dir, ignore_errors=True)


async def test_a_sibling_shard_hands_the_tcp_connection_to_the_owner() -> None:
    async with two_shards() as shards, aiohttp.ClientSession() as http:
        owner, other = shards[1], shards[0]
        client = RealtimeClient(PacedAudioSource())
        try:
            # The call is made on shard 1, whose candidate names its own port; the TCP
            # connection lands on shard 0 (as SO_REUSEPORT may spread it).
            call_id, link = await tcp_call(
                http,
                client,
                owner.url("/v1/realtime/calls"),
                connect_to=("127.0.0.1", other.port),
            )
            assert call_id.startswith("rtc_s1_")
            call = owner.app[REGISTRY].get_call(call_id)
            assert call is not None
            await client.wait_for("session.created", timeout=15)
            await _assert_flows(call, client, link)
            assert owner.app[MEDIA_HANDOFF].received == 1
            assert _relay_nodelay(owner.app[ICE].mux) == [1]
            assert other.app[MEDIA_HANDOFF].received == 0
            for shard in shards:
                mux = shard.app[ICE].mux
                assert mux is not None and mux.refused == 0
        finally:
            await client.close()


async def test_a_tcp_connection_for_no_live_agent_is_refused() -> None:
    """A first frame whose ufrag names no shard (or one out of range) is closed by the
    shard that accepted it; one naming a sibling's unknown agent is handed over and
    closed there. Nothing answers."""
    from test_demux import binding_request, framed, read_until_closed

    async with two_shards() as shards:
        for ufrag in ("s7xabcd", "nobody", "s1xabcd"):
            reader, writer = await asyncio.open_connection("127.0.0.1", shards[0].port)
            writer.write(framed(binding_request(f"{ufrag}:peer")))
            await writer.drain()
            assert await read_until_closed(reader, 5) == b""
            writer.close()
        assert shards[0].site.refused == 2
        assert shards[1].app[MEDIA_HANDOFF].received == 1
        await _until(lambda: _mux(shards[1]).refused == 1, 5, "the owner to refuse it")
        assert shards[0].app[MEDIA_HANDOFF].received == 0 and _mux(shards[0]).refused == 0


def _mux(shard: Shard) -> Any:
    return shard.app[ICE].mux


async def test_serve_workers_2_every_tcp_call_connects(tmp_path: Path) -> None:
    """The real thing: ``realtime-relay serve --workers 2`` on one port (SO_REUSEPORT).
    The kernel spreads the HTTP POSTs and the ICE-TCP connections over both shards on
    its own, so about half of the calls need a handoff (the chance that none of 6 does
    is 1/64); every one of them connects and carries audio back."""
    port = free_port()
    relay = start(
        ["serve", "--workers", "2", "--port", str(port)],
        {
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            "RELAY_NOISE_SUPPRESSION": "off",
            "RELAY_OPEN": "1",
            # Admission by loop lag is tested on its own (as in relay_fixtures).
            "RELAY_MAX_LOOP_LAG_MS": "2000",
        },
        tmp_path / "relay.log",
    )
    base = f"http://127.0.0.1:{port}"
    clients: list[RealtimeClient] = []
    try:
        await wait_healthy(f"{base}/healthz", relay)
        async with aiohttp.ClientSession() as http:
            for _ in range(6):
                client = RealtimeClient(PacedAudioSource())
                clients.append(client)
                _, link = await tcp_call(http, client, f"{base}/v1/realtime/calls")
                await client.wait_for("session.created", timeout=15)
                await _until(lambda link=link: link.frames_in > 20, 10, "media over ICE-TCP")
        for client in clients:
            assert client.pc.iceConnectionState == "completed"
    finally:
        for client in clients:
            await client.close()
        relay.send_signal(signal.SIGTERM)
        relay.wait(20)
    log = (tmp_path / "relay.log").read_text()
    assert "could not hand an ICE-TCP connection" not in log, log[-3000:]
