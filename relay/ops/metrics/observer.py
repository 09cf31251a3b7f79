"""The observer that turns what calls publish into metrics.

Everything a call measures reaches Prometheus through here: set-up results, the call's
lifetime and outcome, data-channel events, and every few seconds its
:class:`~relay.taps.MediaStats`. Frame and packet counters in ``MediaStats`` and
``LinkStats`` are cumulative per call (per SSRC for RTP), so the observer remembers the
last value it saw of each and adds only the difference; it forgets a call's values when
the call ends."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from relay.taps import (
    LEGS,
    SPEAKERS,
    CallEnd,
    CallInfo,
    LinkStats,
    MediaStats,
    Observer,
    SetupResult,
    TappedEvent,
)

from .registry import RelayMetrics
from .vocabulary import (
    MEDIA_DIRECTIONS,
    OUTCOMES,
    TRANSPORTS,
    error_code_label,
    event_type_label,
    fold,
    setup_failure_reason,
)

_Key = tuple[str, str]  # (leg, direction)


@dataclass
class _CallMedia:
    """The cumulative figures of one call last added to the counters."""

    started: float
    counters: dict[tuple[str, _Key], int] = field(default_factory=dict)
    rtp: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)

    def delta(self, name: str, key: _Key, value: int) -> int:
        """How much ``value`` grew since the last report (a counter never goes down)."""
        last = self.counters.get((name, key), 0)
        self.counters[(name, key)] = value
        return max(0, value - last)


class MetricsObserver(Observer):
    """Keeps :class:`RelayMetrics` up to date from the tap bus."""

    name = "metrics"

    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics
        self._calls: dict[str, _CallMedia] = {}
        self._event_children: dict[tuple[str, str], Counter] = {}
        # Label-bound children, so a report does no label lookups.
        pairs = [(leg, direction) for leg in LEGS for direction in MEDIA_DIRECTIONS]
        self._frames = {key: metrics.audio_frames_total.labels(*key) for key in pairs}
        self._dropped = {key: metrics.audio_frames_dropped_total.labels(*key) for key in pairs}
        self._processing: dict[str, Histogram] = {
            speaker: metrics.audio_processing_seconds.labels(speaker) for speaker in SPEAKERS
        }

    def setup_finished(self, result: SetupResult) -> None:
        metrics = self._metrics
        if result.failure is None:
            metrics.call_setup_seconds.labels("total").observe(result.total_secs)
            if result.upstream_secs is not None:
                metrics.call_setup_seconds.labels("upstream").observe(result.upstream_secs)
            return
        metrics.call_setup_failures_total.labels(setup_failure_reason(result.failure)).inc()
        metrics.calls_total.labels("setup_failed").inc()
        if result.upstream_failed:
            metrics.upstream_errors_total.labels(error_code_label(result.failure)).inc()

    def call_started(self, call: CallInfo) -> None:
        if call.call_id in self._calls:
            return
        self._calls[call.call_id] = _CallMedia(started=time.monotonic())
        self._metrics.calls_active.inc()

    def event(self, call_id: str, event: TappedEvent) -> None:
        kind = event_type_label(event.type)
        key = (kind, event.direction)
        child = self._event_children.get(key)
        if child is None:
            child = self._metrics.datachannel_events_total.labels(*key)
            self._event_children[key] = child
        child.inc()
        if event.direction == "server" and kind == "error":
            error = event.data.get("error")
            code = error.get("code") if isinstance(error, Mapping) else None
            self._metrics.upstream_errors_total.labels(error_code_label(code)).inc()

    def media_stats(self, stats: MediaStats) -> None:
        """Add what grew since the call's last report. Reports of a call this observer
        does not know (never started, or already ended) are ignored: counting one after
        the end would count the whole call twice."""
        call = self._calls.get(stats.call_id)
        if call is None:
            return
        for key, count in stats.frames.items():
            self._add(self._frames.get(key), call.delta("frames", key, count))
        for key, count in stats.dropped.items():
            self._add(self._dropped.get(key), call.delta("dropped", key, count))
        for speaker, samples in stats.processing_secs.items():
            histogram = self._processing.get(speaker)
            if histogram is not None:
                for secs in samples:
                    histogram.observe(secs)
        for latency in stats.response_latency_secs:
            self._metrics.agent_response_latency_seconds.observe(latency)
        for link in stats.links:
            self._link(call, link)
        for leg, rtt in stats.rtt_secs.items():
            if rtt >= 0:
                self._metrics.rtt_seconds.labels(fold(leg, LEGS)).observe(rtt)

    def call_ended(self, call: CallInfo, end: CallEnd) -> None:
        media = self._calls.pop(call.call_id, None)
        if media is None:
            return  # never started, or already ended: count each call once
        self._metrics.calls_active.dec()
        self._metrics.calls_total.labels(fold(end.outcome, OUTCOMES)).inc()
        self._metrics.calls_by_transport_total.labels(fold(call.transport, TRANSPORTS)).inc()
        self._metrics.call_duration_seconds.observe(time.monotonic() - media.started)

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _add(counter: Counter | None, delta: int) -> None:
        if counter is not None and delta > 0:
            counter.inc(delta)

    def _link(self, call: _CallMedia, link: LinkStats) -> None:
        """Jitter as sampled; packet counters as deltas per SSRC (a counter that went
        backwards, after an SSRC reset or a stale report, adds nothing)."""
        metrics, labels = self._metrics, (link.leg, link.direction)
        if link.jitter_secs is not None and link.jitter_secs >= 0:
            metrics.rtp_jitter_seconds.labels(*labels).observe(link.jitter_secs)
        key = (link.leg, link.direction, link.ssrc)
        last_received, last_lost = call.rtp.get(key, (0, 0))
        received, lost = link.packets_received, max(0, link.packets_lost)
        call.rtp[key] = (received, lost)
        self._add(metrics.rtp_packets_received_total.labels(*labels), received - last_received)
        self._add(metrics.rtp_packets_lost_total.labels(*labels), lost - last_lost)
