"""Fixtures shared by every test. Everything runs on 127.0.0.1 only."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import espeak  # noqa: E402

pytest_plugins = ["relay_fixtures"]

# Relay and emulator processes the tests start inherit this: speech recognition and the
# espeak voice of the emulator cost CPU the other tests need (the speech tests turn them
# on in their own EmulatorSettings).
os.environ.setdefault("RELAY_EMULATOR_RECOGNITION", "0")
os.environ.setdefault("RELAY_EMULATOR_REAL_VOICE", "0")
# Admission by event-loop load is tested on its own (tests/test_admission.py); the relay
# processes other tests start share 2 cores with Chromium and each other.
os.environ.setdefault("RELAY_MAX_LOOP_LOAD", "0")

SPEECH_TEXT = "Hello there. I would like to know what the weather will be like tomorrow."


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """The tests' own network: every peer connection gathers on 127.0.0.1 only (aioice
    skips loopback by default). This is the test network, not a relay workaround: the
    relay and the emulator get their addresses from their own settings, per peer
    connection, and nothing of the relay's is installed process-wide."""
    stock = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    yield
    aioice.ice.get_host_addresses = stock


@pytest.fixture(scope="session")
def speech_48k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """About 4 s of real synthesised English speech, 48 kHz mono int16."""
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    return espeak(SPEECH_TEXT, path)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory, speech_48k: np.ndarray) -> Path:
    """The same speech as a 48 kHz WAV file (for Chromium's fake microphone)."""
    import wave

    path = tmp_path_factory.mktemp("wav") / "speech48k.wav"
    silence = np.zeros(48000, dtype=np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(np.concatenate([speech_48k, silence]).tobytes())
    return path
