"""Media stages driven with synthetic frames: what comes out, and when."""

from __future__ import annotations

import numpy as np

from relay.media.uplink import To24kMono


def test_resampler_emits_each_frame_in_the_push_that_carries_it() -> None:
    """No standing delay: the 24 kHz frame for an input comes out of that same push."""
    resampler = To24kMono()
    step = np.zeros(960 * 3, dtype=np.int16)
    step[960 + 480 :] = 10000  # a step in the middle of the second input frame
    outputs = [resampler.push(step[i * 960 : (i + 1) * 960]) for i in range(3)]
    assert [len(o) for o in outputs] == [1, 1, 1]
    second = outputs[1][0]
    assert second.shape == (480,)
    onset = int(np.argmax(second > 5000))
    assert 230 < onset < 260  # at 240 samples (10 ms), within the resampler's few samples


def test_offer_sends_audio() -> None:
    from relay.sdp import offer_sends_audio

    head = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    data = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sendrecv\r\n"
    assert offer_sends_audio(head + "a=sendrecv\r\n" + data)
    assert offer_sends_audio(head + "a=sendonly\r\n")
    assert offer_sends_audio(head)  # sendrecv is the default
    assert not offer_sends_audio(head + "a=recvonly\r\n" + data)
    assert not offer_sends_audio(head + "a=inactive\r\n")


def test_voice_onset_tells_sound_from_silence() -> None:
    import fractions

    from av import AudioFrame, CodecContext

    from relay.media.voice_onset import VoiceOnsetDetector

    encoder = CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "s16"
    encoder.time_base = fractions.Fraction(1, 48000)

    def packet(samples: np.ndarray, pts: int) -> bytes:
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, pts
        return b"".join(bytes(p) for p in encoder.encode(frame))

    tone = (np.sin(np.arange(960) * 2 * np.pi * 300 / 48000) * 6000).astype(np.int16)
    silent = [packet(np.zeros(960, np.int16), i * 960) for i in range(5)]
    voiced = [packet(tone, (5 + i) * 960) for i in range(5)]
    detector = VoiceOnsetDetector()
    assert not any(detector.voiced(p) for p in silent if p)
    assert any(detector.voiced(p) for p in voiced if p)
