"""Every metric family of the relay, in one table: type, name, help and labels.

Names carry the ``realtime_relay_`` prefix (added by :class:`~.registry.RelayMetrics`)
and their unit; counters are exported with ``_total``. The help texts say exactly what
each family counts; the README ("Metrics") lists the same families, which
``tests/ops/test_readme_metrics.py`` checks both ways."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["counter", "gauge", "histogram"]

_SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 2700, 3600, 7200)
_FRAME_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.02, 0.05)
_JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
_RTT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_WEBHOOK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_LEG_DIRECTION = ("leg", "direction")


@dataclass(frozen=True)
class Family:
    """One metric family. ``name`` is without the prefix (and, for counters, without
    ``_total``); ``buckets`` only for histograms."""

    kind: Kind
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: Read at scrape time from a count kept elsewhere (a counter without labels; see
    #: :class:`~.registry.SampledCounter`), instead of being incremented here.
    sampled: bool = False

    @property
    def attribute(self) -> str:
        """Its attribute on :class:`~.registry.RelayMetrics`: the exported name."""
        return self.name + "_total" if self.kind == "counter" else self.name


FAMILIES: Final = (
    # -- calls --
    Family("gauge", "calls_active", "Calls in progress in this process."),
    Family("gauge", "calls_capacity", "Largest number of concurrent calls allowed (0: unlimited)."),
    Family(
        "counter",
        "calls",
        "Calls ended, by outcome (offers that did not become calls: setup_failed).",
        ("outcome",),
    ),
    Family(
        "counter",
        "calls_by_transport",
        "Calls ended, by what carried the caller's leg: udp or tcp (WebRTC to the relay, "
        "tcp is ICE-TCP), turn-udp, turn-tcp or turn-tls (WebRTC through a TURN server "
        "the browser reached over UDP, TCP or TLS; turn: not told), websocket, none "
        "(ICE never selected a path).",
        ("transport",),
    ),
    Family(
        "histogram",
        "call_setup_seconds",
        "Successful call set-up: stage=total is offer received to answer sent, "
        "stage=upstream the part spent minting the key and connecting to OpenAI.",
        ("stage",),
        _SETUP_BUCKETS,
    ),
    Family(
        "counter",
        "call_setup_failures",
        "Offers that did not become calls, by reason.",
        ("reason",),
    ),
    Family(
        "histogram",
        "call_duration_seconds",
        "Ended calls, from set-up done to the end.",
        buckets=_DURATION_BUCKETS,
    ),
    Family(
        "histogram",
        "agent_response_latency_seconds",
        "Caller speech stopped (OpenAI's VAD event, as received) to the first voiced "
        "agent audio the relay received after it.",
        buckets=_LATENCY_BUCKETS,
    ),
    # -- audio --
    Family(
        "counter",
        "audio_frames",
        "20 ms audio frames (Opus packets) per network leg (caller: browser-relay, "
        "upstream: relay-OpenAI) and direction (in: received by the relay on that leg, "
        "out: sent by it).",
        _LEG_DIRECTION,
    ),
    Family(
        "counter",
        "audio_frames_dropped",
        "20 ms audio frames the relay dropped, per leg: direction=in, received but "
        "unusable (late or duplicate); direction=out, not sent because the leg's send "
        "queue was full.",
        _LEG_DIRECTION,
    ),
    Family(
        "histogram",
        "audio_processing_seconds",
        "Relay time spent on one 20 ms frame of a speaker's audio, from its packet's "
        "arrival to its hand-off to the other leg (caller: decode, noise suppression, "
        "resampling, encode, or with suppression off decode and forward; agent: forward).",
        ("speaker",),
        _FRAME_BUCKETS,
    ),
    # -- network --
    Family(
        "histogram",
        "rtp_jitter_seconds",
        "RTP interarrival jitter from getStats, per leg: direction=in as the relay "
        "measures what it receives, out as the peer reports what the relay sends.",
        _LEG_DIRECTION,
        _JITTER_BUCKETS,
    ),
    Family(
        "counter",
        "rtp_packets_received",
        "RTP packets received, per leg: direction=in by the relay, out by the peer "
        "(from its RTCP receiver reports).",
        _LEG_DIRECTION,
    ),
    Family(
        "counter",
        "rtp_packets_lost",
        "RTP packets lost on the way, per leg: direction=in towards the relay, out "
        "towards the peer (from its RTCP receiver reports).",
        _LEG_DIRECTION,
    ),
    Family(
        "histogram",
        "rtt_seconds",
        "Round-trip time per leg, from the RTCP receiver reports of its peer.",
        ("leg",),
        _RTT_BUCKETS,
    ),
    # -- events --
    Family(
        "counter",
        "datachannel_events",
        "Data-channel events relayed, by type (unknown types: other) and direction "
        "(client: browser to OpenAI; server: OpenAI to browser).",
        ("type", "direction"),
    ),
    Family(
        "counter",
        "upstream_errors",
        "Errors from OpenAI, by code: error events, and set-ups that failed with OpenAI.",
        ("code",),
    ),
    # -- recording and webhooks --
    Family("gauge", "recordings_active", "Calls being recorded."),
    Family(
        "counter",
        "recording_bytes",
        "Bytes written to recordings (audio, events, transcripts, metadata).",
    ),
    Family(
        "counter",
        "recording_failures",
        "Recording failures: io (a write failed, the call's recording stopped) or "
        "queue_full (an item was dropped because the writer fell behind).",
        ("reason",),
    ),
    Family("counter", "webhook_deliveries", "Webhooks delivered (2xx), by event.", ("event",)),
    Family(
        "counter",
        "webhook_attempts",
        "Webhook POST attempts, including retries, by event.",
        ("event",),
    ),
    Family(
        "counter",
        "webhook_failures",
        "Webhooks given up, by event and reason.",
        ("event", "reason"),
    ),
    Family(
        "histogram",
        "webhook_delivery_seconds",
        "Duration of one webhook POST attempt.",
        buckets=_WEBHOOK_BUCKETS,
    ),
    # -- the process and its observers --
    Family(
        "histogram",
        "event_loop_lag_seconds",
        "How late a periodic event-loop timer fired (every call's media shares it).",
        buckets=_LAG_BUCKETS,
    ),
    Family(
        "gauge",
        "event_loop_load_ratio",
        "Fraction of the time the event-loop thread was running or waiting for a CPU "
        "(median of the probe's slots over the last 2 s): what admission control compares "
        "with RELAY_MAX_LOOP_LOAD.",
    ),
    Family(
        "gauge",
        "monitor_subscribers",
        "Open monitor WebSockets, by kind (events, listen).",
        ("kind",),
    ),
    Family(
        "counter",
        "monitor_dropped",
        "Messages dropped because a monitor subscriber was too slow, by kind.",
        ("kind",),
    ),
    Family(
        "counter",
        "slow_clients_refused",
        "HTTP requests cut off because their body did not arrive in time (the client "
        "sent too slowly); answered 408 and closed.",
        sampled=True,
    ),
    # -- the fleet's call directory --
    Family(
        "gauge",
        "directory_up",
        "1 while the fleet's call directory (Redis) answers, 0 since one of its operations "
        "failed (until one succeeds again); 1 without a directory (RELAY_REDIS_URL unset).",
    ),
    Family(
        "counter",
        "directory_errors",
        "Call-directory operations that failed (Redis unreachable or too slow), by "
        "operation: what needed it was refused (503 directory_unavailable) or retried.",
        ("op",),
    ),
    Family(
        "counter",
        "observer_errors",
        "Call observers that raised: each is logged and detached from that call, which "
        "goes on without it.",
        ("observer",),
    ),
)
