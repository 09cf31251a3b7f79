"""``strict_consent``: like OpenAI's ICE-lite media servers, the emulator stops
answering binding requests that lack USE-CANDIDATE once a pair is nominated. A client
whose consent checks lack it (aioice's own) loses the call; a client whose checks carry
it (as libwebrtc's do) keeps it."""

from __future__ import annotations

import asyncio
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from emulator_helpers import Emulator, eventually, loopback_client, validate_events
from support import RealtimeClient

from relay.emulator.ice import ConsentGate, agents_of


def use_candidate_on_consent(pc: RTCPeerConnection, use_candidate: bool) -> None:
    """Once nominated, this client's binding requests (its consent checks) carry
    USE-CANDIDATE or not, as asked, whichever consent loop sends them."""
    for agent in agents_of(pc):
        build = agent.build_request

        def build_request(
            pair: Any, nominate: bool, _build: Any = build, _agent: Any = agent
        ) -> Any:
            return _build(pair, nominate=use_candidate if _agent._nominated else nominate)

        agent.build_request = build_request  # type: ignore[method-assign]


async def _connect(emulator: Emulator, use_candidate: bool) -> RealtimeClient:
    client = loopback_client()
    use_candidate_on_consent(client.pc, use_candidate)
    ek = (await emulator.mint())["value"]
    response = await emulator.http.post(
        emulator.url("/v1/realtime/calls"),
        data=await client.offer(),
        headers={"Authorization": f"Bearer {ek}", "Content-Type": "application/sdp"},
    )
    assert response.status == 201
    await client.pc.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
    await client.wait_for("session.created", timeout=10)
    return client


def _gates(emulator: Emulator) -> list[ConsentGate]:
    gates = [
        agent.request_received for call in emulator.sessions.calls() for agent in agents_of(call.pc)
    ]
    assert gates and all(isinstance(gate, ConsentGate) for gate in gates)
    return gates  # type: ignore[return-value]


async def test_strict_consent(start_emulator, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    emulator = await start_emulator(strict_consent=True)
    stock, nominating = await asyncio.gather(_connect(emulator, False), _connect(emulator, True))
    gates = _gates(emulator)
    try:
        # 6 failed checks (0.2 s apart, 0.5 s timeout each) end the stock client's call.
        await eventually(lambda: stock.pc.connectionState in ("failed", "closed"), within_secs=10)
        assert nominating.pc.connectionState == "connected"
        await asyncio.sleep(1.0)
        assert nominating.pc.connectionState == "connected"
        assert sum(gate.ignored for gate in gates) >= 6
        live = list(emulator.sessions.active.values())
        assert any(call.pc.connectionState == "connected" for call in live)
        # The surviving call still works end to end.
        nominating.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "instructions": "still here"},
            }
        )
        await nominating.wait_for("session.updated", timeout=5)
    finally:
        await stock.close()
        await nominating.close()
    validate_events(stock.events, "ga")
    validate_events(nominating.events, "ga")


async def test_consent_is_lenient_by_default(
    start_emulator, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Without ``strict_consent``, aioice's own consent checks keep a call alive."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    emulator = await start_emulator()
    client = await _connect(emulator, False)
    try:
        await asyncio.sleep(3.0)  # > 6 checks
        assert client.pc.connectionState == "connected"
        (call,) = emulator.sessions.active.values()
        assert not any(isinstance(a.request_received, ConsentGate) for a in agents_of(call.pc))
    finally:
        await client.close()
