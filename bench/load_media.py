"""Media for ``bench.load``: real speech, pre-encoded browser-like Opus, paced packet
tracks and packet counters (the tone bursts and their onsets: :mod:`bench.tones`).

The load side must stay cheap, so every loop is encoded once at start-up (libopus,
mono, 48 kHz, 32 kb/s, ``voip``: what a browser sends) and the tracks hand aiortc
``av.Packet`` objects, which its sender only packs (no encode). Receivers count RTP
packets in the pass-through buffer (``relay.aiortc_patches``) without decoding, except
the one latency-probe call, which decodes and finds tone onsets.

Speech comes from ``../shared/media/speech-48k.wav`` when it exists (a convenience of
this workplace), else it is synthesised with ``espeak-ng`` and converted with ``sox``
(cached under the system temp folder).
"""

from __future__ import annotations

import fractions
import hashlib
import shutil
import subprocess
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from bench.common import REPO, Pacing
from bench.tones import FRAME, RATE, burst_period, find_onsets

SHARED_SPEECH = REPO.parent / "shared" / "media" / "speech-48k.wav"

FRAME_S = FRAME / RATE
TIME_BASE = fractions.Fraction(1, RATE)

#: Level of the low noise floor under everything (a browser never sends digital zero).
NOISE_FLOOR_DBFS = -65.0
#: Speech is normalised to this peak (well below the onset threshold).
SPEECH_PEAK = 0.25

ESPEAK_TEXT = (
    "Hello, I would like to check the status of my order. I placed it last Tuesday and "
    "the tracking page still says it is being prepared. Could you tell me when it will "
    "ship, and whether I can still change the delivery address? Thank you. Also, the "
    "weather here has been terrible all week, with rain every afternoon and strong wind "
    "in the evening, so please do not leave the parcel outside the door."
)


# -- speech --------------------------------------------------------------------------


def _read_wav_mono48(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: not 16-bit PCM")
        channels = w.getnchannels()
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    pcm = np.frombuffer(raw, dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != RATE:
        raise ValueError(f"{path}: {rate} Hz, expected {RATE}")
    return pcm


def _espeak_speech() -> tuple[np.ndarray, str]:
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        raise RuntimeError(
            f"{SHARED_SPEECH} is absent and espeak-ng/sox are not installed "
            "(apt-get install espeak-ng sox) to synthesise the speech"
        )
    digest = hashlib.sha1(ESPEAK_TEXT.encode()).hexdigest()[:10]
    cache = Path(tempfile.gettempdir()) / f"realtime-relay-bench-speech-{digest}.wav"
    if not cache.exists():
        raw = cache.with_suffix(".raw.wav")
        subprocess.run([espeak, "-s", "165", "-w", str(raw), ESPEAK_TEXT], check=True, timeout=60)
        tmp = cache.with_suffix(".tmp.wav")
        subprocess.run(
            [sox, str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(tmp)],
            check=True,
            timeout=60,
        )
        tmp.replace(cache)
        raw.unlink(missing_ok=True)
    return _read_wav_mono48(cache), f"espeak-ng ({cache})"


def load_speech() -> tuple[np.ndarray, str]:
    """48 kHz mono int16 speech, and where it came from."""
    if SHARED_SPEECH.is_file():
        try:
            return _read_wav_mono48(SHARED_SPEECH), str(SHARED_SPEECH)
        except (OSError, ValueError, wave.Error):
            pass
    return _espeak_speech()


def _noise(samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amplitude = 32768 * 10 ** (NOISE_FLOOR_DBFS / 20)
    return rng.normal(0.0, amplitude, samples)


def _to_frames(signal: np.ndarray) -> np.ndarray:
    """Float signal -> int16, padded to whole 20 ms frames."""
    pad = -signal.size % FRAME
    signal = np.concatenate([signal, np.zeros(pad)])
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def _scaled(speech: np.ndarray, peak: float) -> np.ndarray:
    """Speech as float, normalised to ``peak`` of full scale."""
    x = speech.astype(np.float64)
    top = float(np.max(np.abs(x))) or 1.0
    return x * (peak * 32767 / top)


def _turns(x: np.ndarray, talk_s: float, pause_s: float, seed: int) -> np.ndarray:
    """Turns of ``talk_s`` of ``x``, each followed by ``pause_s`` of quiet, over the
    noise floor."""
    turn, pause = int(talk_s * RATE), int(pause_s * RATE)
    parts: list[np.ndarray] = []
    for start in range(0, x.size - turn // 2, turn):
        parts.append(x[start : start + turn])
        parts.append(np.zeros(pause))
    loop = np.concatenate(parts)
    return _to_frames(loop + _noise(loop.size, seed))


def caller_signal(speech: np.ndarray, seed: int = 1) -> np.ndarray:
    """The callers' uplink loop: turns of speech (~3 s) and listening (~3 s)."""
    return _turns(_scaled(speech, SPEECH_PEAK), 3.0, 3.0, seed)


def agent_signal(speech: np.ndarray, seed: int = 2) -> np.ndarray:
    """The light upstream's downlink loop: the same speech as agent turns (4 s talk,
    1.5 s pause), continuous like OpenAI's stream."""
    reversed_ = _scaled(speech, 0.5)[::-1]  # reversed: a different-sounding voice
    return _turns(reversed_, 4.0, 1.5, seed)


def probe_signal(periods: int = 8, seed: int = 3) -> np.ndarray:
    """Tone bursts over the noise floor, one per 500 ms period."""
    loop = np.tile(burst_period(), periods)
    return _to_frames(loop + _noise(loop.size, seed))


# -- Opus ------------------------------------------------------------------------------


def encode_opus(pcm: np.ndarray, bit_rate: int = 32000) -> list[bytes]:
    """Browser-like Opus: libopus, mono 48 kHz, ``voip``, one packet per 20 ms."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = bit_rate
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = RATE
    codec.time_base = TIME_BASE
    codec.options = {"application": "voip"}
    packets: list[bytes] = []
    frames = pcm.reshape(-1, FRAME)
    # Encode the loop twice and keep the second pass, so that the encoder's start-up
    # (and its look-ahead) is not in the loop: it then wraps around seamlessly.
    for rep in range(2):
        for i, chunk in enumerate(frames):
            frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = (rep * len(frames) + i) * FRAME
            frame.time_base = TIME_BASE
            for packet in codec.encode(frame):
                packets.append(bytes(packet))
    for packet in codec.encode(None):
        packets.append(bytes(packet))
    n = len(frames)
    return packets[n : 2 * n] if len(packets) >= 2 * n else packets[-n:]


def decode_opus(packets: list[bytes], repeats: int = 2) -> np.ndarray:
    """Decode a packet loop (``repeats`` times, returning the last pass) to mono int16."""
    codec = av.CodecContext.create("opus", "r")
    codec.sample_rate = RATE
    codec.layout = "mono"
    out: list[np.ndarray] = []
    for _ in range(repeats):
        out = []
        for payload in packets:
            for frame in codec.decode(av.Packet(payload)):
                pcm = frame.to_ndarray().reshape(-1)
                if pcm.dtype != np.int16:
                    pcm = np.clip(pcm * 32768.0, -32768, 32767).astype(np.int16)
                if len(frame.layout.channels) == 2:
                    pcm = pcm[0::2]
                out.append(pcm)
    return np.concatenate(out) if out else np.zeros(0, np.int16)


@dataclass
class EncodedLoop:
    """A pre-encoded loop and, for a probe loop, the onset offset (in seconds, within
    the packet's decoded 20 ms) of each packet that starts a tone burst."""

    packets: list[bytes]
    onsets: dict[int, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.packets) * FRAME_S


def encoded_probe_loop() -> EncodedLoop:
    packets = encode_opus(probe_signal())
    decoded = decode_opus(packets)
    onsets: dict[int, float] = {}
    # The loop wraps: look at it twice so an onset near the start is seen after quiet.
    doubled = np.concatenate([decoded, decoded])
    for index in find_onsets(doubled):
        if index >= decoded.size:
            index -= decoded.size
            if (index // FRAME) in onsets:
                continue
        onsets[index // FRAME] = (index % FRAME) / RATE
    return EncodedLoop(packets, onsets)


# -- tracks and counters ------------------------------------------------------------------


class PacketSource(MediaStreamTrack):
    """Paced pre-encoded Opus: one ``av.Packet`` per 20 ms from a loop, starting at
    ``offset``; records when each probe onset left (monotonic clock)."""

    kind = "audio"

    def __init__(self, loop: EncodedLoop, offset: int = 0, record_onsets: bool = False) -> None:
        super().__init__()
        self._packets = loop.packets
        self._onsets = loop.onsets if record_onsets else {}
        self._index = offset % len(loop.packets)
        self._pts = 0
        self._pacing = Pacing()
        self.sent = 0
        self.onsets: list[float] = []
        #: Worst lateness (s) of a packet release behind its schedule.
        self.max_late = 0.0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        late = await self._pacing.wait(self.sent * FRAME_S)
        self.max_late = max(self.max_late, late)
        if self.readyState != "live":
            raise MediaStreamError
        i = self._index
        packet = av.Packet(self._packets[i])
        packet.pts = self._pts
        packet.time_base = TIME_BASE
        self._pts += FRAME
        self._index = (i + 1) % len(self._packets)
        self.sent += 1
        offset = self._onsets.get(i)
        if offset is not None:
            self.onsets.append(time.monotonic() + offset)
        return packet


class PacketCounter:
    """A pass-through buffer's packet sink: counts in-order RTP packets (no decode)."""

    __slots__ = ("packets",)

    def __init__(self) -> None:
        self.packets = 0

    def __call__(self, payload: bytes, timestamp: int) -> None:
        self.packets += 1

    def count(self) -> None:
        self.packets += 1
