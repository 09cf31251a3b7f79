"""CPU per 20 ms frame of each caller-audio stage, on real speech (thread CPU time).

.venv/bin/python -m bench.stages [--frames 1500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import espeak  # noqa: E402

from relay.media.denoise import RnnoiseDenoiser, WebRtcDenoiser  # noqa: E402
from relay.media.opus import Opus24kEncoder, OpusDecoder  # noqa: E402
from relay.media.uplink import To24kMono  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog. " * 6


def speech_48k() -> np.ndarray:
    shared = Path(__file__).resolve().parents[2] / "shared/media/speech-48k.wav"
    if shared.is_file():
        import wave

        with wave.open(str(shared)) as wav:
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()
    with tempfile.TemporaryDirectory() as folder:
        return espeak(TEXT, Path(folder) / "speech.wav")


def per_frame_us(stage: Callable[[np.ndarray], object], frames: list[np.ndarray]) -> float:
    for frame in frames[:50]:  # warm up
        stage(frame)
    started = time.thread_time()
    for frame in frames:
        stage(frame)
    return (time.thread_time() - started) / len(frames) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1500)
    args = parser.parse_args()
    pcm = speech_48k()
    count = min(args.frames, pcm.size // 960)
    frames = [np.ascontiguousarray(pcm[i * 960 : (i + 1) * 960]) for i in range(count)]
    packet_maker = Opus24kEncoder()  # only to make Opus packets to decode
    resampler = To24kMono()
    packets = [packet_maker.encode(f[::2].copy()) for f in frames]
    decoder = OpusDecoder()
    packet_iter = iter(packets * 2)
    encoder = Opus24kEncoder()
    down = [f[::2].copy() for f in frames]
    rows = [
        (
            "Opus decode (48 kHz mono)",
            per_frame_us(lambda _: decoder.decode(next(packet_iter)), frames),
        ),
        (
            "noise suppression: webrtc, reused FFI request",
            per_frame_us(WebRtcDenoiser().process, frames),
        ),
        (
            "noise suppression: webrtc, livekit's public call",
            per_frame_us(WebRtcDenoiser(reuse_request=False).process, frames),
        ),
        ("noise suppression: rnnoise", per_frame_us(RnnoiseDenoiser().process, frames)),
        ("resample 48 -> 24 kHz", per_frame_us(resampler.push, frames)),
        ("Opus encode (24 kHz mono, 32 kb/s)", per_frame_us(encoder.encode, down)),
    ]
    print(f"{count} frames of 20 ms speech; CPU per frame (1 % of a core = 200 us):")
    for name, us in rows:
        print(f"  {name:50s} {us:8.1f} us  ({us / 200:5.2f} % of a core)")


if __name__ == "__main__":
    main()
