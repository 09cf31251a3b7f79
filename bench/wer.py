"""Word error rate of reference speech through the relay vs direct to the emulator.

``python -m bench.wer [--media ../shared/media] [--modes webrtc,rnnoise,off]``

Each input (clean speech, and the same speech with white, pink and babble noise at
5 dB SNR: ``speech-48k.wav``, ``speech-*-5db-48k.wav``) is played in real time by an
aiortc caller (Opus, 48 kHz), either straight to an emulator ("direct") or through a
relay with each noise-suppression mode to its embedded emulator. The emulator's
record of what it decoded (``call.received``) is cut to the played span and
recognised by the emulator's own recogniser (:mod:`relay.emulator.hearing`, Moonshine
base); "file" recognises the WAV itself, with no network or codec.

The reference text is Moonshine's transcript of the clean file (so "file/clean" is 0 %
by construction): the media folder has no transcript. The words are normalised (lower
case, no punctuation) before scoring. Calls run two at a time (``--parallel``); the
recognitions run one at a time in the emulator's recognition worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from bench.common import REPO, Pacing, drain, gather_on, rtc_config
from bench.table import Table, num
from relay.config import EmulatorSettings, Settings
from relay.embedded import EMULATOR, build_app
from relay.emulator import SESSIONS, create_emulator_app, hearing
from relay.emulator.settings import DEFAULT_API_KEY

RATE = 48000
INPUTS = {
    "clean": "speech-48k.wav",
    "white 5 dB": "speech-white-5db-48k.wav",
    "pink 5 dB": "speech-pink-5db-48k.wav",
    "babble 5 dB": "speech-babble-5db-48k.wav",
}
MODES = ("webrtc", "rnnoise", "off")
#: Received audio kept beyond the played span (network and jitter-buffer delay).
TAIL_SECS = 0.6


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        if wav.getframerate() != RATE or wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 48 kHz 16-bit")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        channels = wav.getnchannels()
    return pcm.reshape(-1, channels)[:, 0].copy() if channels > 1 else pcm


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words), normalised words."""
    ref = hearing.normalise(reference).split()
    hyp = hearing.normalise(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, words = word_errors(reference, hypothesis)
    return errors / max(words, 1)


FRAME = 960  # 20 ms


class ClipSource(MediaStreamTrack):
    """A caller's microphone: paced 20 ms frames, silence but for :meth:`play`."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self._pacing = Pacing()
        self._played = asyncio.Event()

    async def play(self, clip: np.ndarray) -> None:
        """Queue ``clip`` and return once its last frame has left."""
        self._played.clear()
        self._pending = clip.astype(np.int16)
        await self._played.wait()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacing.wait(self._pts / RATE)
        samples = np.zeros(FRAME, dtype=np.int16)
        if self._pending.size:
            n = min(FRAME, self._pending.size)
            samples[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            if not self._pending.size:
                self._played.set()
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


@dataclass
class Route:
    """Where a caller's offer goes, and the emulator that ends up with the call."""

    name: str
    calls_url: str
    token: str
    registry: Any


_SETTING_UP = asyncio.Lock()


async def _call(http: aiohttp.ClientSession, route: Route, clip: np.ndarray) -> np.ndarray:
    """One call on ``route`` playing ``clip``: what the emulator decoded of it."""
    source = ClipSource()
    pc = RTCPeerConnection(rtc_config())
    pc.addTrack(source)
    pc.createDataChannel("oai-events")
    sinks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: sinks.append(asyncio.ensure_future(drain(track))))
    try:
        async with _SETTING_UP:  # one call appears at a time: it is this one
            before = {id(c) for c in route.registry.calls()}
            await pc.setLocalDescription(await pc.createOffer())
            headers = {"Content-Type": "application/sdp"}
            if route.token:
                headers["Authorization"] = f"Bearer {route.token}"
            sdp = pc.localDescription.sdp
            async with http.post(route.calls_url, data=sdp, headers=headers) as r:
                answer = await r.text()
                if r.status != 201:
                    raise RuntimeError(f"{route.name}: {r.status} {answer[:200]}")
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            deadline = time.monotonic() + 15
            call = None
            while call is None or call.received.frames < 25:  # media flowing for 0.5 s
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{route.name}: no media reached the emulator")
                await asyncio.sleep(0.05)
                if call is None:
                    call = next((c for c in route.registry.calls() if id(c) not in before), None)
        start = call.received.samples
        await source.play(clip)
        await asyncio.sleep(TAIL_SECS)
        received = call.received.pcm()
        offset = max(start - (call.received.samples - received.size), 0)
        out: np.ndarray = received[offset : offset + clip.size + int(TAIL_SECS * RATE)]
        return out
    finally:
        for sink in sinks:
            sink.cancel()
            with contextlib.suppress(BaseException):
                await sink
        await pc.close()


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _route(mode: str | None) -> AsyncIterator[Route]:
    """Direct to an emulator (``mode`` None) or through a relay suppressing with ``mode``."""
    emulator = EmulatorSettings(ice_addresses=("127.0.0.1",))
    if mode is None:
        app = create_emulator_app(emulator)
        async with _served(app) as base:
            yield Route("direct", f"{base}/v1/realtime/calls", DEFAULT_API_KEY, app[SESSIONS])
        return
    settings = Settings(
        open_mode=True,
        ice_addresses=("127.0.0.1",),
        noise_suppression=mode,  # type: ignore[arg-type]
        # The callers and the emulator share this process: no admission by its load.
        max_loop_lag_ms=5000.0,
        max_loop_load=0.0,
        emulator=emulator,
    )
    app = build_app(settings)
    async with _served(app) as base:
        registry = app[EMULATOR][SESSIONS]
        yield Route(f"relay {mode}", f"{base}/v1/realtime/calls", "", registry)


_ONE_AT_A_TIME = asyncio.Lock()  # within hearing.MAX_PENDING


def _dbfs(pcm: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0
    return 20 * float(np.log10(max(rms, 1e-9) / 32768.0))


async def _recognise(pcm: np.ndarray) -> str:
    async with _ONE_AT_A_TIME:
        heard = await hearing.recognize(pcm, RATE, timeout_secs=120)
    if heard is None:
        raise SystemExit("speech recognition is unavailable (pip install moonshine-cpp)")
    return heard


async def run(media: Path, modes: list[str], parallel: int = 2) -> dict[str, Any]:
    clips = {name: read_wav(media / file) for name, file in INPUTS.items()}
    started = time.monotonic()
    reference = await _recognise(clips["clean"])
    load = hearing.load_secs
    heard: dict[str, dict[str, str]] = {"file": {"clean": reference}}
    recognitions: list[asyncio.Task[None]] = []

    levels: dict[str, dict[str, tuple[float, float]]] = {}

    async def recognise_into(path: str, name: str, pcm: np.ndarray) -> None:
        levels.setdefault(path, {})[name] = (pcm.size / RATE, _dbfs(pcm))
        heard[path][name] = await _recognise(pcm)

    for name, clip in clips.items():  # while the calls stream
        if name != "clean":
            recognitions.append(asyncio.ensure_future(recognise_into("file", name, clip)))

    async with aiohttp.ClientSession() as http:
        for mode in [None, *modes]:
            async with _route(mode) as route:
                received: list[np.ndarray] = []
                batch = list(clips.values())
                for first in range(0, len(batch), parallel):
                    received += await asyncio.gather(
                        *(_call(http, route, clip) for clip in batch[first : first + parallel])
                    )
                # Calls of the next path stream while these are recognised.
                heard[route.name] = {}
                for name, pcm in zip(clips, received, strict=True):
                    recognitions.append(
                        asyncio.ensure_future(recognise_into(route.name, name, pcm))
                    )
        await asyncio.gather(*recognitions)
    rates = {
        path: {name: wer(reference, text) for name, text in by_input.items()}
        for path, by_input in heard.items()
    }
    return {
        "reference": reference,
        "model_load_secs": load,
        "elapsed_secs": time.monotonic() - started,
        "wer": rates,
        "heard": heard,
        "seconds_and_dbfs": levels,
    }


def report(result: dict[str, Any]) -> None:
    paths = list(result["wer"])
    table = Table("{:<13}" + "{:>15}" * len(paths), ",".join(["input", *paths]))
    print(f"reference ({len(result['reference'].split())} words, Moonshine on the clean file):")
    print(f"  {result['reference']}")
    print("word error rate, % (lower is better):")
    for line in table.head():
        print(line)
    for name in INPUTS:
        cells = [num(100 * result["wer"][path][name], 1) for path in paths]
        print(table.row(name, *cells))
    print(f"model load {result['model_load_secs']:.2f} s, whole run {result['elapsed_secs']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wer", description=__doc__)
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--modes", default=",".join(MODES), help="relay noise suppression modes")
    parser.add_argument("--parallel", type=int, default=2, help="concurrent calls per path")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        parser.error(f"unknown modes: {', '.join(bad)}")
    gather_on(["127.0.0.1"])
    result = asyncio.run(run(args.media, modes, max(args.parallel, 1)))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
