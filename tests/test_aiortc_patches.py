"""The aiortc workarounds (relay/aiortc_patches.py) still do what they claim with the
pinned aiortc: these fail loudly if an upgrade moves the internals they rely on."""

from __future__ import annotations

import asyncio

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket
from support import PacedAudioSource

from relay import aiortc_patches
from relay.aiortc_patches import PassThroughAudioBuffer
from relay.ice.gather import IcePlan


def rtp(seq: int, ts: int, payload: bytes = b"x") -> RtpPacket:
    packet = RtpPacket(sequence_number=seq, timestamp=ts)
    packet._data = payload  # type: ignore[attr-defined]
    return packet


def test_pass_through_buffer_releases_in_order_packets_at_once() -> None:
    buffer = PassThroughAudioBuffer()
    released = [buffer.add(rtp(seq, seq * 960))[1] for seq in (10, 11, 13)]
    assert [f.timestamp for f in released if f] == [9600, 10560, 12480]
    assert buffer.add(rtp(12, 11520))[1] is None  # late: dropped, never reordered
    assert buffer.add(rtp(13, 12480))[1] is None  # duplicate
    assert buffer.packets_dropped_late == 2
    wrap = PassThroughAudioBuffer()
    assert wrap.add(rtp(65535, 0))[1] is not None
    assert wrap.add(rtp(0, 960))[1] is not None  # 16-bit wrap is "newer"


def test_pass_through_buffer_sink_without_decoding() -> None:
    buffer = PassThroughAudioBuffer()
    got: list[tuple[bytes, int]] = []
    buffer.packet_sink = lambda payload, ts: got.append((payload, ts))
    buffer.decode = False
    assert buffer.add(rtp(1, 960, b"opus"))[1] is None
    assert got == [(b"opus", 960)]


async def test_adopt_changes_only_the_adopted_peer_connection() -> None:
    """Pass-through buffer, USE-CANDIDATE consent and fixed host addresses on the
    adopted PC; a PC next to it (the emulator's, a test's) keeps stock aiortc."""
    adopted = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stock = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for pc in (adopted, stock):
            pc.addTransceiver("audio")
            pc.createDataChannel("oai-events")
        aiortc_patches.adopt(adopted, IcePlan(host_addresses=("127.0.0.1",)))
        receiver = adopted.getTransceivers()[0].receiver
        assert isinstance(aiortc_patches.audio_buffer_of(receiver), PassThroughAudioBuffer)
        with pytest.raises(RuntimeError):
            aiortc_patches.audio_buffer_of(stock.getTransceivers()[0].receiver)
        for connection in aiortc_patches.ice_connections(adopted):
            assert connection.query_consent.__func__ is aiortc_patches.consent_checks
        for connection in aiortc_patches.ice_connections(stock):
            assert "query_consent" not in vars(connection)
        assert aioice.ice.Connection.query_consent is not aiortc_patches.consent_checks
        await adopted.setLocalDescription(await adopted.createOffer())
        hosts = {c.split()[4] for c in adopted.localDescription.sdp.split("a=candidate:")[1:]}
        assert hosts == {"127.0.0.1"}
    finally:
        await adopted.close()
        await stock.close()


async def test_one_lost_packet_costs_exactly_one_frame() -> None:
    """With the pass-through buffer a lost packet is one 20 ms gap, not aiortc's
    permanent +200 ms backlog with 5 frames discarded."""
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    source = PacedAudioSource(np.full(48000, 3000, dtype=np.int16))
    sender.addTrack(source)
    pts: list[int] = []

    async def read(track):  # type: ignore[no-untyped-def]
        while True:
            pts.append((await track.recv()).pts)

    reader: list[asyncio.Task[None]] = []
    receiver.on("track", lambda track: reader.append(asyncio.ensure_future(read(track))))
    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        aiortc_patches.adopt(receiver)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(
            RTCSessionDescription(receiver.localDescription.sdp, "answer")
        )
        dtls = sender.getSenders()[0].transport
        send_rtp = dtls._send_rtp
        counter = {"n": 0}

        sending = {"on": True}

        async def drop_the_20th(data: bytes) -> None:
            if not sending["on"]:
                return
            counter["n"] += 1
            if counter["n"] != 20:
                await send_rtp(data)

        dtls._send_rtp = drop_the_20th
        await asyncio.sleep(1.5)
        sending["on"] = False  # then let what is in flight arrive (bounded: a loaded
        # machine may take longer than the 0.5 s an idle one needs)
        await asyncio.sleep(0.5)
        gaps = [b - a for a, b in zip(pts, pts[1:], strict=False) if b - a != 960]
        assert gaps == [1920], gaps  # exactly one frame missing
        # Everything else arrived: one slot short of what was sent, but for the newest
        # frame, which aiortc's decoder may still hold, and the very first packet, which
        # the sender may send before the receiver's DTLS is ready (a set-up race of the
        # two peers, not a loss in the stream: the frames received are contiguous).
        assert counter["n"] - 3 <= len(pts) <= counter["n"] - 1, (pts[-3:], counter)
    finally:
        for task in reader:
            task.cancel()
        await asyncio.gather(*reader, return_exceptions=True)
        await sender.close()
        await receiver.close()
