"""RelayMetrics, MetricsObserver, StatsSampler and the loop-lag probe."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest
from aiortc.stats import RTCInboundRtpStreamStats, RTCRemoteInboundRtpStreamStats, RTCStatsReport

from relay.ops.metrics import LoopLagProbe, MetricsObserver, RelayMetrics

from .fakes import FakeCall, FakeDirectory


def value(metrics: RelayMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value("realtime_relay_" + name, labels)
    return 0.0 if found is None else found


def test_each_app_has_its_own_registry() -> None:
    """Two RelayMetrics in one process do not collide and do not share values."""
    a, b = RelayMetrics(), RelayMetrics()
    a.calls_active.inc()
    assert value(a, "calls_active") == 1
    assert value(b, "calls_active") == 0


def test_every_name_is_prefixed_with_a_unit_and_known_series_start_at_zero() -> None:
    """Names carry the prefix; counters end in _total; known label sets exist at 0."""
    metrics = RelayMetrics(process=False)
    text = metrics.render()[0].decode()
    families = [m for m in metrics.registry.collect()]
    assert families and all(f.name.startswith("realtime_relay_") for f in families)
    assert 'realtime_relay_calls_total{outcome="hangup"} 0.0' in text
    assert 'realtime_relay_audio_frames_dropped_total{direction="in",leg="caller"} 0.0' in text
    assert "call_id" not in text


def test_observer_counts_calls_by_outcome_and_duration() -> None:
    """A call counts as active from start to end, then once under its outcome; an
    unknown outcome is folded into 'other'."""
    metrics = RelayMetrics(process=False)
    directory = FakeDirectory()
    directory.add_observer(MetricsObserver(metrics))
    first, second = directory.start(FakeCall()), directory.start(FakeCall())
    assert value(metrics, "calls_active") == 2
    directory.end(first, "hangup")
    directory.end(second, "some_new_outcome")
    directory.observers[0].call_ended(second, "hangup")  # a second end is ignored
    assert value(metrics, "calls_active") == 0
    assert value(metrics, "calls_total", outcome="hangup") == 1
    assert value(metrics, "calls_total", outcome="other") == 1
    assert value(metrics, "call_duration_seconds_count") == 2


def test_event_types_are_bounded_and_errors_counted_by_code() -> None:
    """Known OpenAI types keep their name, others become 'other'; error codes too."""
    metrics = RelayMetrics(process=False)
    directory = FakeDirectory()
    directory.add_observer(MetricsObserver(metrics))
    call = directory.start(FakeCall())
    now = time.time()
    directory.event(call, "client", {"type": "response.create"}, now)
    directory.event(call, "client", {"type": "made.up.by.a.browser"}, now)
    directory.event(call, "server", {"type": "error", "error": {"code": "invalid_value"}}, now)
    directory.event(call, "server", {"type": "error", "error": {"code": "brand_new"}}, now)
    assert value(metrics, "datachannel_events_total", type="response.create", direction="client")
    assert value(metrics, "datachannel_events_total", type="other", direction="client") == 1
    assert value(metrics, "datachannel_events_total", type="error", direction="server") == 2
    assert value(metrics, "upstream_errors_total", code="invalid_value") == 1
    assert value(metrics, "upstream_errors_total", code="other") == 1


def test_stats_sampler_converts_units_and_counts_only_new_packets() -> None:
    """Jitter in 48 kHz RTP ticks becomes seconds, RTT comes from remote-inbound-rtp,
    and cumulative packet counters only add what changed since the last sample."""
    metrics = RelayMetrics(process=False)
    sampler = metrics.stats_sampler("caller")

    def report(received: int, lost: int, remote_received: int, remote_lost: int) -> RTCStatsReport:
        now = datetime.datetime.now()
        stats = RTCStatsReport()
        stats.add(
            RTCInboundRtpStreamStats(
                timestamp=now, type="inbound-rtp", id="in", ssrc=1, kind="audio",
                transportId="t", packetsReceived=received, packetsLost=lost, jitter=480,
            )
        )  # fmt: skip
        stats.add(
            RTCRemoteInboundRtpStreamStats(
                timestamp=now, type="remote-inbound-rtp", id="rin", ssrc=2, kind="audio",
                transportId="t", packetsReceived=remote_received, packetsLost=remote_lost,
                jitter=96, roundTripTime=0.05, fractionLost=0,
            )
        )  # fmt: skip
        return stats

    sampler.observe(report(100, 2, 90, 10))
    sampler.observe(report(150, 2, 140, 12))
    assert value(metrics, "rtp_packets_received_total", leg="caller", direction="in") == 150
    assert value(metrics, "rtp_packets_lost_total", leg="caller", direction="in") == 2
    assert value(metrics, "rtp_packets_received_total", leg="caller", direction="out") == 140
    assert value(metrics, "rtp_packets_lost_total", leg="caller", direction="out") == 12
    assert value(metrics, "rtp_jitter_seconds_sum", leg="caller", direction="in") == 0.02
    assert value(metrics, "rtp_jitter_seconds_sum", leg="caller", direction="out") == 0.004
    assert value(metrics, "rtt_seconds_count", leg="caller") == 2
    assert value(metrics, "rtt_seconds_sum", leg="caller") == pytest.approx(0.1)


def test_setup_helpers_fold_relay_error_codes_into_reasons() -> None:
    metrics = RelayMetrics(process=False)
    metrics.call_setup_succeeded(0.8, 0.5)
    metrics.call_setup_failed("relay_overloaded")
    metrics.call_setup_failed("upstream_timeout")
    metrics.call_setup_failed("capacity")
    assert value(metrics, "call_setup_seconds_count", stage="total") == 1
    assert value(metrics, "call_setup_seconds_sum", stage="upstream") == 0.5
    assert value(metrics, "call_setup_failures_total", reason="capacity") == 2
    assert value(metrics, "call_setup_failures_total", reason="timeout") == 1
    assert value(metrics, "calls_total", outcome="setup_failed") == 3


def test_leg_metrics_are_bound_children() -> None:
    metrics = RelayMetrics(process=False)
    leg = metrics.leg("agent")
    leg.frames_in.inc()
    leg.dropped_out.inc(2)
    leg.processing_seconds.observe(0.0001)
    assert value(metrics, "audio_frames_total", leg="agent", direction="in") == 1
    assert value(metrics, "audio_frames_dropped_total", leg="agent", direction="out") == 2
    assert value(metrics, "frame_processing_seconds_count", leg="agent") == 1


async def test_loop_lag_probe_sees_a_blocked_loop_and_closes_idempotently() -> None:
    """Blocking the loop for 150 ms shows up as lag; close() cancels and awaits."""
    metrics = RelayMetrics(process=False)
    probe = LoopLagProbe(metrics, interval_secs=0.02)
    probe.start()
    await asyncio.sleep(0.05)
    time.sleep(0.15)  # noqa: ASYNC251 - blocking the loop is what this test measures
    await asyncio.sleep(0.05)
    await probe.close()
    await probe.close()
    assert value(metrics, "event_loop_lag_seconds_count") >= 2
    bucket = value(metrics, "event_loop_lag_seconds_bucket", le="0.1")
    assert value(metrics, "event_loop_lag_seconds_count") > bucket  # one sample above 0.1 s
