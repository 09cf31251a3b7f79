"""Live monitoring: per-call event streams and listen-in audio for operators.

The :class:`MonitorHub` (:mod:`.hub`) observes every call and feeds its subscribers
(:mod:`.subscriptions`), one drop-oldest queue each; ``relay.http.ops_routes`` drains a
subscription into a WebSocket. Listen-in formats (``format``, ``track``):

- ``pcm16``: binary messages of 24 kHz mono PCM16 little-endian, one 20 ms frame each;
  ``both`` is the two speakers mixed to mono (summed and clipped).
- ``twilio``: Twilio Media Streams' JSON dialect (:mod:`.twilio`), mu-law 8 kHz mono,
  20 ms (160 bytes) per ``media`` message; the caller is track ``inbound`` and the agent
  ``outbound``; ``both`` sends each on its own track.

Encoding (resampling, mu-law, base64, JSON) runs in the subscriber's own sender task,
not on the call's path.
"""

from .hub import MIX_HOLD_FRAMES, MonitorHub, MonitorLimits, SnapshotOf, ended_call
from .subscriptions import (
    LISTEN_FORMATS,
    LISTEN_TRACKS,
    AudioItem,
    EventSubscription,
    ListenFormat,
    ListenSubscription,
    ListenTrack,
    Subscription,
)
from .twilio import TWILIO_TRACK, Downsampler24kTo8k, TwilioStream, mulaw_decode, mulaw_encode

__all__ = [
    "LISTEN_FORMATS",
    "LISTEN_TRACKS",
    "MIX_HOLD_FRAMES",
    "TWILIO_TRACK",
    "AudioItem",
    "Downsampler24kTo8k",
    "EventSubscription",
    "ListenFormat",
    "ListenSubscription",
    "ListenTrack",
    "MonitorHub",
    "MonitorLimits",
    "SnapshotOf",
    "Subscription",
    "TwilioStream",
    "ended_call",
    "mulaw_decode",
    "mulaw_encode",
]
