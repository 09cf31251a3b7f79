"""The relay's metrics on a registry of their own.

Each :class:`RelayMetrics` (one per app) owns a dedicated
:class:`~prometheus_client.CollectorRegistry`, so tests and several apps in one process
never collide on the global registry. Its families are those of :data:`.FAMILIES`, one
attribute each; labels are low-cardinality only (never a call id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.taps import LEGS, SPEAKERS

from .families import FAMILIES, Family
from .vocabulary import (
    CLIENT_EVENT_TYPES,
    DIRECTORY_OPS,
    EVENT_DIRECTIONS,
    MEDIA_DIRECTIONS,
    MONITOR_KINDS,
    OBSERVER_NAMES,
    OTHER,
    OUTCOMES,
    PREFIX,
    RECORDING_FAILURE_REASONS,
    SERVER_EVENT_TYPES,
    SETUP_FAILURE_REASONS,
    SETUP_STAGES,
    TRANSPORTS,
    UPSTREAM_ERROR_CODES,
    WEBHOOK_EVENTS,
    WEBHOOK_FAILURE_REASONS,
)


class SampledCounter(Collector):
    """A counter kept elsewhere (e.g. by the HTTP layer), read at each scrape: 0 until
    :meth:`read_from` gives it its source. A source that fails reads as 0 (a scrape
    never fails for it)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._source: Callable[[], float] = lambda: 0.0
        registry.register(self)

    def read_from(self, source: Callable[[], float]) -> None:
        self._source = source

    def value(self) -> float:
        try:
            return float(self._source())
        except Exception:
            return 0.0

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self.value())


class RelayMetrics:
    """Every metric of one relay app, on its own registry: one attribute per family of
    :data:`.FAMILIES`, named as exported (without the prefix)."""

    calls_active: Gauge
    calls_capacity: Gauge
    calls_total: Counter
    calls_by_transport_total: Counter
    call_setup_seconds: Histogram
    call_setup_failures_total: Counter
    call_duration_seconds: Histogram
    agent_response_latency_seconds: Histogram
    audio_frames_total: Counter
    audio_frames_dropped_total: Counter
    audio_processing_seconds: Histogram
    rtp_jitter_seconds: Histogram
    rtp_packets_received_total: Counter
    rtp_packets_lost_total: Counter
    rtt_seconds: Histogram
    datachannel_events_total: Counter
    upstream_errors_total: Counter
    recordings_active: Gauge
    recording_bytes_total: Counter
    recording_failures_total: Counter
    webhook_deliveries_total: Counter
    webhook_attempts_total: Counter
    webhook_failures_total: Counter
    webhook_delivery_seconds: Histogram
    event_loop_lag_seconds: Histogram
    event_loop_load_ratio: Gauge
    monitor_subscribers: Gauge
    monitor_dropped_total: Counter
    slow_clients_refused_total: SampledCounter
    directory_up: Gauge
    directory_errors_total: Counter
    observer_errors_total: Counter

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process:
            # Process RSS/CPU/FDs and GC figures: the capacity inputs next to our own.
            process_collector.ProcessCollector(registry=self.registry)
            platform_collector.PlatformCollector(registry=self.registry)
            gc_collector.GCCollector(registry=self.registry)
        for family in FAMILIES:
            setattr(self, family.attribute, self._create(family))
        self._initialise_series()
        self.directory_up.set(1)

    def observer_error(self, name: str) -> None:
        """Count an observer that raised (the TapBus's ``on_error``). Observer names
        come from the relay's code, not from peers, so the label is the name as is."""
        self.observer_errors_total.labels(name).inc()

    def directory_answered(self, op: str, ok: bool) -> None:
        """A call-directory operation's outcome (``op``: one of :data:`DIRECTORY_OPS`)."""
        self.directory_up.set(1 if ok else 0)
        if not ok:
            self.directory_errors_total.labels(op).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (text format 0.0.4, which every
        Prometheus version understands)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4

    def _create(self, family: Family) -> MetricWrapperBase | SampledCounter:
        name, registry = PREFIX + family.name, self.registry
        if family.sampled:
            assert family.kind == "counter" and not family.labels, family.name
            return SampledCounter(name, family.help, registry)
        if family.kind == "counter":
            return Counter(name, family.help, family.labels, registry=registry)
        if family.kind == "gauge":
            return Gauge(name, family.help, family.labels, registry=registry)
        return Histogram(
            name, family.help, family.labels, registry=registry, buckets=family.buckets
        )

    def _initialise_series(self) -> None:
        """Create every known label combination at zero.

        Series that exist from the start make ``rate()`` and absent-free alerts work
        before the first event, and let tests see every name the dashboard uses."""
        one_label: tuple[tuple[MetricWrapperBase, tuple[str, ...]], ...] = (
            (self.calls_total, (*OUTCOMES, OTHER)),
            (self.calls_by_transport_total, (*TRANSPORTS, OTHER)),
            (self.call_setup_seconds, SETUP_STAGES),
            (self.call_setup_failures_total, (*SETUP_FAILURE_REASONS, OTHER)),
            (self.audio_processing_seconds, SPEAKERS),
            (self.rtt_seconds, LEGS),
            (self.upstream_errors_total, (*UPSTREAM_ERROR_CODES, OTHER)),
            (self.recording_failures_total, RECORDING_FAILURE_REASONS),
            (self.webhook_deliveries_total, WEBHOOK_EVENTS),
            (self.webhook_attempts_total, WEBHOOK_EVENTS),
            (self.monitor_subscribers, MONITOR_KINDS),
            (self.monitor_dropped_total, MONITOR_KINDS),
            (self.observer_errors_total, OBSERVER_NAMES),
            (self.directory_errors_total, DIRECTORY_OPS),
        )
        for metric, values in one_label:
            for value in values:
                metric.labels(value)
        by_leg_and_direction = (
            self.audio_frames_total,
            self.audio_frames_dropped_total,
            self.rtp_jitter_seconds,
            self.rtp_packets_received_total,
            self.rtp_packets_lost_total,
        )
        for metric in by_leg_and_direction:
            for leg in LEGS:
                for direction in MEDIA_DIRECTIONS:
                    metric.labels(leg, direction)
        self._initialise_pairs()

    def _initialise_pairs(self) -> None:
        for kind in CLIENT_EVENT_TYPES:
            self.datachannel_events_total.labels(kind, "client")
        for kind in SERVER_EVENT_TYPES:
            self.datachannel_events_total.labels(kind, "server")
        for direction in EVENT_DIRECTIONS:
            self.datachannel_events_total.labels(OTHER, direction)
        for event in WEBHOOK_EVENTS:
            for reason in WEBHOOK_FAILURE_REASONS:
                self.webhook_failures_total.labels(event, reason)
