"""Prometheus metrics of the relay, on a registry of their own.

Every metric lives on a dedicated :class:`~prometheus_client.CollectorRegistry` owned by
one :class:`RelayMetrics` (one per app), so tests and several apps in one process never
collide on the global registry. Names carry the ``realtime_relay_`` prefix and their unit;
labels are low-cardinality only (never a call id): values outside a known list are
folded into ``other`` so a misbehaving peer cannot create new series.

The README ("Metrics") documents every metric; ``tests/ops/test_deploy.py`` checks that
the dashboard and alert rules only use what this module exports.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from relay.taps import CallView, Direction, Leg

log = logging.getLogger(__name__)

PREFIX: Final = "realtime_relay_"
OTHER: Final = "other"

LEGS: Final[tuple[Leg, ...]] = ("caller", "agent")
#: Audio and RTP direction as seen from the relay: ``in`` is received on that leg,
#: ``out`` is sent on it.
AUDIO_DIRECTIONS: Final = ("in", "out")
EVENT_DIRECTIONS: Final[tuple[Direction, ...]] = ("client", "server")

#: How a call ended (the outcomes relay.call uses); anything else counts as ``other``.
OUTCOMES: Final = (
    "hangup",  # POST /v1/realtime/calls/{id}/hangup
    "caller_closed",  # the browser closed its peer connection
    "caller_failed",  # the browser's leg failed (ICE, DTLS)
    "caller_media_timeout",  # no caller audio for media_timeout_secs (a closed tab)
    "upstream_closed",
    "upstream_failed",
    "upstream_session_ended",  # OpenAI closed the data channel (e.g. max duration)
    "max_duration",
    "shutdown",
    "setup_failed",
    "error",
)

#: Why an offer did not become a call (``RelayMetrics.call_setup_failed``).
SETUP_FAILURE_REASONS: Final = (
    "bad_request",
    "unauthorized",
    "capacity",
    "upstream",
    "ice",
    "timeout",
    "internal",
)
#: The relay's error codes (relay.errors) as setup failure reasons.
_SETUP_REASON_OF_CODE: Final = {
    "invalid_offer": "bad_request",
    "payload_too_large": "bad_request",
    "invalid_value": "bad_request",
    "invalid_api_key": "unauthorized",
    "missing_api_key": "unauthorized",
    "relay_overloaded": "capacity",
    "upstream_error": "upstream",
    "upstream_auth_failed": "upstream",
    "upstream_timeout": "timeout",
}

#: Stages of ``realtime_relay_call_setup_seconds``: ``total`` is offer received to
#: answer sent; ``upstream`` is the part spent minting the key and negotiating with OpenAI.
SETUP_STAGES: Final = ("total", "upstream")

CLIENT_EVENT_TYPES: Final = frozenset(
    {
        "session.update",
        "session.close",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)

SERVER_EVENT_TYPES: Final = frozenset(
    {
        "error",
        "session.created",
        "session.updated",
        "transcription_session.created",
        "transcription_session.updated",
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.text.delta",
        "response.text.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.audio.delta",
        "response.audio.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "rate_limits.updated",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    }
)

#: Error codes seen from OpenAI (``error`` events and HTTP errors) plus the relay's own
#: names for transport failures; ``none`` is an error without a code.
UPSTREAM_ERROR_CODES: Final = frozenset(
    {
        "none",
        "invalid_api_key",
        "invalid_event",
        "invalid_json",
        "invalid_value",
        "unknown_parameter",
        "missing_required_parameter",
        "integer_below_min_value",
        "string_above_max_length",
        "input_audio_buffer_commit_empty",
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "cannot_update_voice",
        "session_expired",
        "invalid_model",
        "missing_model",
        "model_not_found",
        "beta_api_shape_disabled",
        "audio_unintelligible",
        "rate_limit_exceeded",
        "insufficient_quota",
        "server_error",
        "timeout",
        "connection_error",
    }
)

WEBHOOK_EVENTS: Final = ("call.started", "call.ended", "transcript.completed", "error")
#: Why a webhook was given up: every attempt failed, the receiver refused it with a
#: non-retryable status, or the queue was full.
WEBHOOK_FAILURE_REASONS: Final = ("exhausted", "rejected", "dropped")
MONITOR_KINDS: Final = ("events", "listen")
RECORDING_FAILURE_REASONS: Final = ("io", "queue_full")

#: RTP clock rate of Opus, the only audio codec on either leg: getStats jitter is in
#: ticks of this clock.
OPUS_CLOCK_RATE: Final = 48000

_SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 2700, 3600, 7200)
_FRAME_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.02, 0.05)
_JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
_RTT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_WEBHOOK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def fold(value: object, known: Iterable[str]) -> str:
    """``value`` if it is one of ``known``, else ``other``: keeps label sets bounded."""
    return value if isinstance(value, str) and value in known else OTHER


def event_type_label(event: Mapping[str, Any]) -> str:
    """The ``type`` label of a data-channel event, folded to a known OpenAI type."""
    kind = event.get("type")
    if kind in CLIENT_EVENT_TYPES or kind in SERVER_EVENT_TYPES:
        return str(kind)
    return OTHER


def error_code_label(code: object) -> str:
    """The ``code`` label of an upstream error, folded to a known code."""
    if code is None:
        return "none"
    return fold(code, UPSTREAM_ERROR_CODES)


@dataclass(frozen=True)
class LegMetrics:
    """Label-bound metric children of one leg, for the per-frame path.

    Binding labels once avoids the label lookup (a dict and a lock) on every frame."""

    frames_in: Counter
    frames_out: Counter
    dropped_in: Counter
    dropped_out: Counter
    processing_seconds: Histogram


class RelayMetrics:
    """Every metric of one relay app, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process:
            # Process RSS/CPU/FDs and GC figures: the capacity inputs next to our own.
            process_collector.ProcessCollector(registry=self.registry)
            platform_collector.PlatformCollector(registry=self.registry)
            gc_collector.GCCollector(registry=self.registry)
        self._define_calls()
        self._define_media()
        self._define_events()
        self._define_operator()
        self._initialise_series()
        self._legs = {leg: self._bind_leg(leg) for leg in LEGS}

    # -- definitions ---------------------------------------------------------------

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(PREFIX + name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, labels, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
    ) -> Histogram:
        return Histogram(PREFIX + name, doc, labels, registry=self.registry, buckets=buckets)

    def _define_calls(self) -> None:
        self.calls_active = self._gauge("calls_active", "Calls in progress in this process.")
        self.calls_capacity = self._gauge(
            "calls_capacity", "Largest number of concurrent calls allowed (0: unlimited)."
        )
        self.calls_total = self._counter("calls", "Calls ended, by outcome.", ("outcome",))
        self.call_setup_seconds = self._histogram(
            "call_setup_seconds",
            "Successful call setup time: stage=total is offer to answer, "
            "stage=upstream the part spent with OpenAI.",
            _SETUP_BUCKETS,
            ("stage",),
        )
        self.call_setup_failures_total = self._counter(
            "call_setup_failures", "Offers that did not become calls, by reason.", ("reason",)
        )
        self.call_duration_seconds = self._histogram(
            "call_duration_seconds", "Duration of ended calls.", _DURATION_BUCKETS
        )
        self.agent_response_latency_seconds = self._histogram(
            "agent_response_latency_seconds",
            "Caller speech stopped (VAD event) to the first agent audio frame after it.",
            _LATENCY_BUCKETS,
        )

    def _define_media(self) -> None:
        leg_dir = ("leg", "direction")
        self.audio_frames_total = self._counter(
            "audio_frames", "20 ms audio frames handled, per leg and direction.", leg_dir
        )
        self.audio_frames_dropped_total = self._counter(
            "audio_frames_dropped", "20 ms audio frames dropped, per leg and direction.", leg_dir
        )
        self.frame_processing_seconds = self._histogram(
            "frame_processing_seconds",
            "Relay processing time of one audio frame, per leg.",
            _FRAME_BUCKETS,
            ("leg",),
        )
        self.rtp_jitter_seconds = self._histogram(
            "rtp_jitter_seconds",
            "RTP interarrival jitter sampled from getStats (in: measured by the relay; "
            "out: reported by the peer).",
            _JITTER_BUCKETS,
            leg_dir,
        )
        self.rtp_packets_received_total = self._counter(
            "rtp_packets_received",
            "RTP packets received (in: by the relay; out: by the peer).",
            leg_dir,
        )
        self.rtp_packets_lost_total = self._counter(
            "rtp_packets_lost",
            "RTP packets lost (in: towards the relay; out: towards the peer).",
            leg_dir,
        )
        self.rtt_seconds = self._histogram(
            "rtt_seconds",
            "Round-trip time from RTCP receiver reports, per leg.",
            _RTT_BUCKETS,
            ("leg",),
        )
        self.event_loop_lag_seconds = self._histogram(
            "event_loop_lag_seconds", "Lateness of a periodic event-loop timer.", _LAG_BUCKETS
        )

    def _define_events(self) -> None:
        self.datachannel_events_total = self._counter(
            "datachannel_events",
            "Data-channel events relayed, by type (unknown types: other) and direction "
            "(client: browser to OpenAI; server: OpenAI to browser).",
            ("type", "direction"),
        )
        self.upstream_errors_total = self._counter(
            "upstream_errors", "Errors from OpenAI (error events and HTTP), by code.", ("code",)
        )

    def _define_operator(self) -> None:
        self.recording_bytes_total = self._counter(
            "recording_bytes", "Bytes written to recordings (audio, events, transcripts)."
        )
        self.recording_failures_total = self._counter(
            "recording_failures",
            "Recording failures: io (a write failed, the call's recording stopped) or "
            "queue_full (an item was dropped because the writer fell behind).",
            ("reason",),
        )
        self.recordings_active = self._gauge("recordings_active", "Calls being recorded.")
        self.webhook_deliveries_total = self._counter(
            "webhook_deliveries", "Webhooks delivered (2xx), by event.", ("event",)
        )
        self.webhook_attempts_total = self._counter(
            "webhook_attempts", "Webhook POST attempts, including retries, by event.", ("event",)
        )
        self.webhook_failures_total = self._counter(
            "webhook_failures", "Webhooks given up, by event and reason.", ("event", "reason")
        )
        self.webhook_delivery_seconds = self._histogram(
            "webhook_delivery_seconds", "Duration of one webhook POST attempt.", _WEBHOOK_BUCKETS
        )
        self.monitor_subscribers = self._gauge(
            "monitor_subscribers", "Live monitor subscribers, by kind.", ("kind",)
        )
        self.monitor_dropped_total = self._counter(
            "monitor_dropped",
            "Messages dropped because a monitor subscriber was too slow, by kind.",
            ("kind",),
        )

    def _initialise_series(self) -> None:
        """Create every known label combination at zero.

        Series that exist from the start make ``rate()`` and absent-free alerts work
        before the first event, and let tests see every name the dashboard uses."""
        for outcome in (*OUTCOMES, OTHER):
            self.calls_total.labels(outcome)
        for stage in SETUP_STAGES:
            self.call_setup_seconds.labels(stage)
        for reason in (*SETUP_FAILURE_REASONS, OTHER):
            self.call_setup_failures_total.labels(reason)
        for leg in LEGS:
            self.frame_processing_seconds.labels(leg)
            self.rtt_seconds.labels(leg)
            for direction in AUDIO_DIRECTIONS:
                for metric in (
                    self.audio_frames_total,
                    self.audio_frames_dropped_total,
                    self.rtp_jitter_seconds,
                    self.rtp_packets_received_total,
                    self.rtp_packets_lost_total,
                ):
                    metric.labels(leg, direction)
        for kind in CLIENT_EVENT_TYPES:
            self.datachannel_events_total.labels(kind, "client")
        for kind in SERVER_EVENT_TYPES:
            self.datachannel_events_total.labels(kind, "server")
        for direction in EVENT_DIRECTIONS:
            self.datachannel_events_total.labels(OTHER, direction)
        for code in (*UPSTREAM_ERROR_CODES, OTHER):
            self.upstream_errors_total.labels(code)
        for reason in RECORDING_FAILURE_REASONS:
            self.recording_failures_total.labels(reason)
        for event in WEBHOOK_EVENTS:
            self.webhook_deliveries_total.labels(event)
            self.webhook_attempts_total.labels(event)
            for reason in WEBHOOK_FAILURE_REASONS:
                self.webhook_failures_total.labels(event, reason)
        for kind in MONITOR_KINDS:
            self.monitor_subscribers.labels(kind)
            self.monitor_dropped_total.labels(kind)

    def _bind_leg(self, leg: Leg) -> LegMetrics:
        return LegMetrics(
            frames_in=self.audio_frames_total.labels(leg, "in"),
            frames_out=self.audio_frames_total.labels(leg, "out"),
            dropped_in=self.audio_frames_dropped_total.labels(leg, "in"),
            dropped_out=self.audio_frames_dropped_total.labels(leg, "out"),
            processing_seconds=self.frame_processing_seconds.labels(leg),
        )

    # -- helpers the call uses ---------------------------------------------------------

    def leg(self, leg: Leg) -> LegMetrics:
        """Pre-bound per-frame counters of ``leg`` (bind once per call, use per frame)."""
        return self._legs[leg]

    def call_setup_succeeded(self, total_secs: float, upstream_secs: float) -> None:
        """Record a call answered ``total_secs`` after its offer arrived."""
        self.call_setup_seconds.labels("total").observe(total_secs)
        self.call_setup_seconds.labels("upstream").observe(upstream_secs)

    def call_setup_failed(self, reason: str | None) -> None:
        """Record an offer that did not become a call (also counted as an outcome).

        ``reason`` is one of :data:`SETUP_FAILURE_REASONS` or a relay error code
        (``RelayError.code``), which is mapped to one."""
        if reason not in SETUP_FAILURE_REASONS:
            reason = _SETUP_REASON_OF_CODE.get(str(reason), OTHER)
        self.call_setup_failures_total.labels(reason).inc()
        self.calls_total.labels("setup_failed").inc()

    def upstream_error(self, code: object) -> None:
        """Record an OpenAI error that did not arrive as an ``error`` event (HTTP, network)."""
        self.upstream_errors_total.labels(error_code_label(code)).inc()

    def stats_sampler(self, leg: Leg) -> StatsSampler:
        """A getStats sampler for one leg of one call (it keeps that call's counters)."""
        return StatsSampler(self, leg)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (text format 0.0.4, which every
        Prometheus version understands)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class StatsSampler:
    """Turns one leg's aiortc ``getStats()`` reports into metrics.

    Packet counters in getStats are cumulative per SSRC, so the sampler remembers the
    last value it saw of each and adds only the difference to the Prometheus counters.
    Call :meth:`observe` every few seconds per leg (RTCP reports come every ~1 s)."""

    def __init__(self, metrics: RelayMetrics, leg: Leg) -> None:
        self._metrics = metrics
        self._leg: Leg = leg
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}

    def observe(self, report: Mapping[str, Any]) -> None:
        """Record jitter, loss and RTT from an ``RTCStatsReport`` (a mapping of stats)."""
        for stats in report.values():
            kind = getattr(stats, "type", None)
            if kind == "inbound-rtp":
                self._received(stats, "in")
            elif kind == "remote-inbound-rtp":
                self._received(stats, "out")
                rtt = getattr(stats, "roundTripTime", None)
                if isinstance(rtt, int | float) and rtt >= 0:
                    self._metrics.rtt_seconds.labels(self._leg).observe(float(rtt))

    def _received(self, stats: Any, direction: str) -> None:
        jitter = getattr(stats, "jitter", None)
        if isinstance(jitter, int | float) and jitter >= 0:
            self._metrics.rtp_jitter_seconds.labels(self._leg, direction).observe(
                jitter / OPUS_CLOCK_RATE
            )
        received = int(getattr(stats, "packetsReceived", 0) or 0)
        lost = max(0, int(getattr(stats, "packetsLost", 0) or 0))
        key = (direction, str(getattr(stats, "ssrc", "")))
        last_received, last_lost = self._seen.get(key, (0, 0))
        self._seen[key] = (received, lost)
        # A counter that went backwards (SSRC reset, late duplicate report) adds nothing.
        if received > last_received:
            self._metrics.rtp_packets_received_total.labels(self._leg, direction).inc(
                received - last_received
            )
        if lost > last_lost:
            self._metrics.rtp_packets_lost_total.labels(self._leg, direction).inc(lost - last_lost)


class MetricsObserver:
    """The CallObserver that turns call lifecycle and events into metrics.

    Per-frame counters are not here: the call increments its :class:`LegMetrics`
    directly (the observer only sees canonical audio, not drops or processing time)."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics
        self._started: dict[str, float] = {}
        self._event_children: dict[tuple[str, str], Counter] = {}

    def wants_agent_audio(self, call_id: str) -> bool:
        # The call times agent responses on forwarded packets itself; decoding the
        # agent's Opus just for metrics would cost CPU on every call.
        return False

    def call_started(self, call: CallView) -> None:
        if call.id in self._started:
            return
        self._started[call.id] = time.monotonic()
        self._metrics.calls_active.inc()

    def audio(self, call: CallView, leg: Leg, pcm: np.ndarray, wallclock: float) -> None:
        return  # frame counts come from the call's own counters (see relay.call)

    def event(
        self, call: CallView, direction: Direction, event: dict[str, Any], wallclock: float
    ) -> None:
        kind = event_type_label(event)
        key = (kind, direction)
        child = self._event_children.get(key)
        if child is None:
            child = self._event_children[key] = self._metrics.datachannel_events_total.labels(
                kind, direction
            )
        child.inc()
        if direction == "server" and kind == "error":
            error = event.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            self._metrics.upstream_errors_total.labels(error_code_label(code)).inc()

    def call_ended(self, call: CallView, outcome: str) -> None:
        started = self._started.pop(call.id, None)
        if started is None:
            return  # never started, or already ended: count each call once
        self._metrics.calls_active.dec()
        self._metrics.calls_total.labels(fold(outcome, OUTCOMES)).inc()
        self._metrics.call_duration_seconds.observe(time.monotonic() - started)


class LoopLagProbe:
    """Measures event-loop lag: how late a periodic timer fires.

    One owner starts it once and awaits :meth:`close` (idempotent)."""

    def __init__(self, metrics: RelayMetrics, interval_secs: float = 0.5) -> None:
        self._metrics = metrics
        self._interval = interval_secs
        self._task: asyncio.Task[None] | None = None
        self._recent: collections.deque[tuple[float, float]] = collections.deque()

    def sustained_lag_secs(self, window_secs: float = 2.0) -> float:
        """The median lag of the last ``window_secs``: admission control reads it. A
        saturated loop lags on every probe; a burst of call set-ups only on a few, and
        must not turn away the burst's own calls."""
        now = time.monotonic()
        lags = sorted(lag for t, lag in self._recent if now - t <= window_secs)
        return lags[len(lags) // 2] if lags else 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="loop-lag-probe")

    async def run(self) -> None:
        """Sleep ``interval`` repeatedly and observe how much later than asked we woke."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - expected)
            self._metrics.event_loop_lag_seconds.observe(lag)
            self._recent.append((time.monotonic(), lag))
            while len(self._recent) > 64:
                self._recent.popleft()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
