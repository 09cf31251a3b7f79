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


def tone_48k(samples: int, start: int = 0) -> np.ndarray:
    t = np.arange(start, start + samples)
    return (np.sin(t * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)


def browser_packets(count: int) -> list[bytes]:
    """20 ms Opus packets of a 440 Hz tone, as a browser would send them."""
    import fractions

    from av import AudioFrame, CodecContext

    encoder = CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "s16"
    encoder.time_base = fractions.Fraction(1, 48000)
    packets = []
    for i in range(count):
        frame = AudioFrame.from_ndarray(
            tone_48k(960, i * 960).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, i * 960
        packets.append(b"".join(bytes(p) for p in encoder.encode(frame)))
    return packets


def test_24k_encoder_emits_a_packet_per_frame_at_once() -> None:
    from relay.media.opus import Opus24kEncoder, OpusDecoder

    encoder, decoder = Opus24kEncoder(), OpusDecoder()
    tone = (np.sin(np.arange(480) * 2 * np.pi * 440 / 24000) * 8000).astype(np.int16)
    payloads = [encoder.encode(tone) for _ in range(5)]
    assert all(payloads)  # no frame held back for re-chunking
    decoded = [decoder.decode(p) for p in payloads]
    assert all(d.size == 960 for d in decoded)  # 20 ms each, decoded at 48 kHz
    assert np.abs(decoded[-1]).max() > 3000


async def test_caller_audio_keeps_loss_as_a_gap_in_the_uplink_timestamps() -> None:
    """Packets in -> canonical 24 kHz frames to the taps and Opus packets upstream; a
    lost packet is a 20 ms gap in the uplink's RTP timestamps, not squeezed out."""
    from relay.media.denoise import NoDenoiser
    from relay.media.tracks import UplinkTrack
    from relay.media.uplink import CallerAudio

    uplink = UplinkTrack(max_frames=100)
    tapped: list[np.ndarray] = []
    caller = CallerAudio(NoDenoiser(), uplink, lambda pcm, t: tapped.append(pcm))
    packets = browser_packets(10)
    base = 123_456
    for i, payload in enumerate(packets):
        if i != 4:  # packet 4 is lost
            caller.on_packet(payload, base + i * 960)
    assert caller.frames_in == 9 and caller.loss_gaps == 1
    assert len(tapped) == 9 and all(f.shape == (480,) for f in tapped)
    sent = [await uplink.recv() for _ in range(9)]
    steps = [b.pts - a.pts for a, b in zip(sent, sent[1:], strict=False)]
    assert steps == [960, 960, 960, 1920, 960, 960, 960, 960]
    assert np.abs(tapped[-1]).max() > 3000  # the tone survives decode and resampling
    # Nothing to change with noise suppression off: the browser's packets go as they are.
    assert [bytes(p) for p in sent] == [p for i, p in enumerate(packets) if i != 4]
    uplink.stop()


async def test_with_noise_suppression_the_uplink_is_reencoded_at_24k() -> None:
    from relay.media.denoise import WebRtcDenoiser
    from relay.media.opus import OpusDecoder
    from relay.media.tracks import UplinkTrack
    from relay.media.uplink import CallerAudio

    uplink = UplinkTrack(max_frames=100)
    caller = CallerAudio(WebRtcDenoiser(), uplink, lambda pcm, t: None)
    packets = browser_packets(20)
    for i, payload in enumerate(packets):
        caller.on_packet(payload, i * 960)
    sent = [await uplink.recv() for _ in range(20)]
    assert [bytes(p) for p in sent] != packets
    assert [p.pts for p in sent] == [i * 960 for i in range(20)]
    decoder = OpusDecoder()
    decoded = np.concatenate([decoder.decode(bytes(p)) for p in sent])
    assert np.abs(decoded).max() > 1000  # still the tone
    uplink.stop()


def test_webrtc_denoiser_fast_path_matches_the_public_api() -> None:
    """The reused FFI request gives exactly what livekit's public call gives, and it
    really suppresses steady noise."""
    from relay.media.denoise import WebRtcDenoiser

    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(48000) * 1500).astype(np.int16)
    fast, public = WebRtcDenoiser(), WebRtcDenoiser(reuse_request=False)
    assert fast._request is not None
    out_fast = np.concatenate([fast.process(noise[i : i + 960]) for i in range(0, 48000, 960)])
    out_public = np.concatenate([public.process(noise[i : i + 960]) for i in range(0, 48000, 960)])
    assert np.array_equal(out_fast, out_public)
    level = lambda x: float(np.sqrt(np.mean(x[24000:].astype(np.float64) ** 2)))  # noqa: E731
    assert level(out_fast) < level(noise) / 2
