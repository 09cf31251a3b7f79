"""``strict_consent``: like OpenAI's ICE-lite media servers, the emulator stops
answering consent checks that lack USE-CANDIDATE once the call is up. A stock aioice
client loses the call; a client with the relay's consent patch keeps it."""

from __future__ import annotations

import asyncio
import types

import aioice.ice
import pytest
from aiortc import RTCSessionDescription
from emulator_helpers import Emulator, eventually, validate_events
from support import RealtimeClient

from relay.aiortc_patches import ice_connections

# Captured at collection, before tests/conftest.py's session fixture installs the
# relay's patches (which replace Connection.query_consent for the whole process).
STOCK_QUERY_CONSENT = aioice.ice.Connection.query_consent


async def _connect(emulator: Emulator, stock_consent: bool) -> RealtimeClient:
    client = RealtimeClient()
    await client.offer()
    if stock_consent:
        # An instance attribute wins over the class's (patched) method; connect()
        # starts the consent task later, so this client runs aioice's own checks.
        for connection in ice_connections(client.pc):
            connection.query_consent = types.MethodType(STOCK_QUERY_CONSENT, connection)
    ek = (await emulator.mint())["value"]
    response = await emulator.http.post(
        emulator.url("/v1/realtime/calls"),
        data=client.pc.localDescription.sdp,
        headers={"Authorization": f"Bearer {ek}", "Content-Type": "application/sdp"},
    )
    assert response.status == 201
    await client.pc.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
    await client.wait_for("session.created", timeout=10)
    return client


async def test_strict_consent(start_emulator, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    assert STOCK_QUERY_CONSENT.__module__ == "aioice.ice", (
        "collected after the patches were installed"
    )
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    emulator = await start_emulator(strict_consent=True)
    stock, patched = await asyncio.gather(_connect(emulator, True), _connect(emulator, False))
    try:
        # 6 failed checks (0.2 s apart, 0.5 s timeout each) end the stock client's call.
        await eventually(lambda: stock.pc.connectionState in ("failed", "closed"), within_secs=10)
        assert patched.pc.connectionState == "connected"
        await asyncio.sleep(1.0)
        assert patched.pc.connectionState == "connected"
        live = list(emulator.sessions.active.values())
        assert any(call.pc.connectionState == "connected" for call in live)
        # The surviving call still works end to end.
        patched.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "instructions": "still here"},
            }
        )
        await patched.wait_for("session.updated", timeout=5)
    finally:
        await stock.close()
        await patched.close()
    validate_events(stock.events, "ga")
    validate_events(patched.events, "ga")
