"""One emulator call in a process of its own, for ``test_emulator_independent``: it
imports nothing of the relay outside ``relay.emulator`` and prints, as JSON, what the
client saw and what the process looks like (stock aiortc / aioice or not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aioice.ice
import aiortc.jitterbuffer
import aiortc.rtcrtpreceiver
import numpy as np
from aiohttp import ClientSession, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from relay.emulator import SESSIONS, create_emulator_app
from relay.emulator.ice import configure_ice
from relay.emulator.settings import EmulatorSettings


async def main() -> None:
    settings = EmulatorSettings(ice_addresses=("127.0.0.1",), response_delay_secs=0.02)
    runner = web.AppRunner(create_emulator_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    channel = pc.createDataChannel("oai-events")
    configure_ice(pc, host_addresses=("127.0.0.1",))
    events: list[str] = []
    loud: list[bool] = []
    created = asyncio.Event()

    @channel.on("message")
    def on_message(message: str) -> None:
        event = json.loads(message)
        events.append(event["type"])
        if event["type"] == "session.created":
            created.set()

    async def listen(track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                pcm = (await track.recv()).to_ndarray().astype(np.float64)
                loud.append(float(np.sqrt(np.mean(pcm * pcm))) > 300)

    pc.on("track", lambda track: asyncio.ensure_future(listen(track)))
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Authorization": "Bearer sk-emulator", "Content-Type": "application/sdp"}
    async with ClientSession() as http:
        offer = pc.localDescription.sdp
        response = await http.post(f"{base}/realtime/calls", data=offer, headers=headers)
        assert response.status == 201, await response.text()
        answer = await response.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.wait_for(created.wait(), 10)
    request = {"instructions": "Say: one two three four"}
    channel.send(json.dumps({"type": "response.create", "response": request}))
    for _ in range(200):
        if "response.done" in events and sum(loud) >= 10:
            break
        await asyncio.sleep(0.05)
    call = runner.app[SESSIONS].latest()
    buffers = [
        type(t.receiver._RTCRtpReceiver__jitter_buffer).__module__
        for t in call.pc.getTransceivers()
    ]
    lines = answer.splitlines()
    candidates = [line.split()[4] for line in lines if line.startswith("a=candidate:")]
    await pc.close()
    await runner.cleanup()
    print(
        json.dumps(
            {
                "events": events,
                "loud_frames": sum(loud),
                "candidates": candidates,
                "receiver_buffers": buffers,
                "stock_buffer": aiortc.rtcrtpreceiver.JitterBuffer
                is aiortc.jitterbuffer.JitterBuffer,
                "stock_consent": aioice.ice.Connection.query_consent.__module__ == "aioice.ice",
                "stock_gathering": aioice.ice.Connection.gather_candidates.__module__
                == "aioice.ice"
                and aioice.ice.get_host_addresses.__module__ == "aioice.ice",
                "relay_modules": sorted(
                    name
                    for name in sys.modules
                    if name.startswith("relay.") and not name.startswith("relay.emulator")
                ),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
