"""Helpers shared by the tests: real speech, a paced audio source, an audio sink, and
an aiortc client that calls ``/v1/realtime/calls`` like OpenAI's clients do."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz


def espeak(text: str, path: Path) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng and return 48 kHz mono int16 samples."""
    espeak_bin = shutil.which("espeak-ng")
    if espeak_bin is None:
        raise RuntimeError("espeak-ng is not installed: run `make test` (it installs it)")
    raw = path.with_suffix(".22k.wav")
    subprocess.run([espeak_bin, "-w", str(raw), text], check=True, timeout=30)
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(path)],
        check=True,
        timeout=30,
    )
    return read_wav(path)


def read_wav(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == RATE and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()


def rms_dbfs(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
    return 20 * np.log10(max(rms, 1e-6))


class PacedAudioSource(MediaStreamTrack):
    """Plays 48 kHz mono samples in real time as 20 ms frames, then silence.

    ``play(samples)`` queues more audio; ``muted`` sends digital silence."""

    kind = "audio"

    def __init__(self, samples: np.ndarray | None = None, loop: bool = False) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._loop_samples = samples if loop else None
        if samples is not None:
            self.play(samples)
        self._pts = 0
        self._start: float | None = None
        self.muted = False
        self.sent_frames = 0

    def play(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, samples.astype(np.int16)])

    @property
    def playing(self) -> bool:
        return self._pending.size > 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._pending.size < FRAME and self._loop_samples is not None:
            self.play(self._loop_samples)
        chunk = self._pending[:FRAME]
        self._pending = self._pending[FRAME:]
        if chunk.size < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - chunk.size, dtype=np.int16)])
        if self.muted:
            chunk = np.zeros(FRAME, dtype=np.int16)
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        self.sent_frames += 1
        return frame


@dataclass
class AudioSink:
    """Reads a remote track to the end, keeping mono int16 48 kHz samples."""

    frames: list[np.ndarray] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self, track: MediaStreamTrack) -> None:
        self.task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().reshape(-1)
                if frame.layout.name == "stereo":
                    pcm = pcm[0::2]
                self.frames.append(pcm.astype(np.int16))
                self.arrival.append(time.monotonic())

    def samples(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, dtype=np.int16)

    def loud_frames(self, threshold_dbfs: float = -45.0) -> int:
        return sum(1 for f in self.frames if rms_dbfs(f) > threshold_dbfs)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class RealtimeClient:
    """An aiortc client of the Realtime WebRTC API: what OpenAI's clients do."""

    def __init__(self, source: PacedAudioSource | None = None, send_audio: bool = True) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.source = source or PacedAudioSource()
        if send_audio:
            self.pc.addTrack(self.source)
        else:  # a listen-only client: no microphone
            self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self._new_event = asyncio.Event()
        self.sink = AudioSink()
        self.channel_open = asyncio.Event()
        self.location: str | None = None

        @self.channel.on("open")
        def _on_open() -> None:
            self.channel_open.set()

        @self.channel.on("message")
        def _on_message(message: str | bytes) -> None:
            self.events.append(json.loads(message))
            self._new_event.set()

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self.sink.start(track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def connect(
        self, session: aiohttp.ClientSession, url: str, token: str, **post: Any
    ) -> aiohttp.ClientResponse:
        """POST the offer as ``application/sdp``; on 201 apply the answer."""
        sdp = await self.offer()
        headers = {"Content-Type": "application/sdp", **post.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await session.post(url, data=sdp, headers=headers, **post)
        if response.status == 201:
            self.location = response.headers.get("Location")
            answer = await response.text()
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return response

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_for(self, type_: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first event of ``type_`` at index >= ``after``; waits up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[after:]:
                if event["type"] == type_:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {type_} within {timeout}s; got {self.types()}")
            self._new_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), remaining)

    async def close(self) -> None:
        await self.sink.stop()
        await self.pc.close()


@contextlib.asynccontextmanager
async def realtime_client(
    source: PacedAudioSource | None = None, send_audio: bool = True
) -> AsyncIterator[RealtimeClient]:
    client = RealtimeClient(source, send_audio)
    try:
        yield client
    finally:
        await client.close()
