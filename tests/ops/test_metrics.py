"""RelayMetrics, MetricsObserver (set-up, calls, events, media stats) and the loop-lag
probe."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from relay_fixtures import BASE_SETTINGS

from relay.embedded import build_app
from relay.http.errors import ClientLimits, bound_slow_clients
from relay.http.ops_routes import OPS
from relay.ops.metrics import LoopLagProbe, MetricsObserver, RelayMetrics
from relay.ops.metrics.families import FAMILIES
from relay.ops.metrics.looplag import IdleClock
from relay.taps import CallEnd, LinkStats, MediaStats, SetupResult, TapBus, TappedEvent

from .fakes import FakeCall, FakeDirectory, tapped


def value(metrics: RelayMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value("realtime_relay_" + name, labels)
    return 0.0 if found is None else found


def observed() -> tuple[RelayMetrics, FakeDirectory]:
    metrics = RelayMetrics(process=False)
    directory = FakeDirectory()
    directory.add_observer(MetricsObserver(metrics))
    return metrics, directory


def test_each_app_has_its_own_registry() -> None:
    """Two RelayMetrics in one process do not collide and do not share values."""
    a, b = RelayMetrics(), RelayMetrics()
    a.calls_active.inc()
    assert value(a, "calls_active") == 1
    assert value(b, "calls_active") == 0


def test_every_family_is_a_typed_attribute() -> None:
    """RelayMetrics declares one attribute per family of the table, of its type."""
    metrics = RelayMetrics(process=False)
    declared = RelayMetrics.__annotations__
    assert set(declared) == {family.attribute for family in FAMILIES}
    for family in FAMILIES:
        # Counter, Gauge, Histogram; SampledCounter for a count read at scrape time.
        assert declared[family.attribute].lower().endswith(family.kind)
        assert type(getattr(metrics, family.attribute)).__name__.lower().endswith(family.kind)


def test_every_name_is_prefixed_with_a_unit_and_known_series_start_at_zero() -> None:
    """Names carry the prefix; counters end in _total; known label sets exist at 0."""
    metrics = RelayMetrics(process=False)
    text = metrics.render()[0].decode()
    families = [m for m in metrics.registry.collect()]
    assert families and all(f.name.startswith("realtime_relay_") for f in families)
    assert 'realtime_relay_calls_total{outcome="hangup"} 0.0' in text
    assert 'realtime_relay_audio_frames_dropped_total{direction="in",leg="caller"} 0.0' in text
    assert 'realtime_relay_audio_frames_total{direction="out",leg="upstream"} 0.0' in text
    assert 'realtime_relay_audio_processing_seconds_count{speaker="agent"} 0.0' in text
    assert "call_id" not in text
    assert 'leg="agent"' not in text  # agent is a speaker, not a network leg


def test_observer_errors_are_counted_by_observer_name() -> None:
    """observer_errors_total exists from start-up for every observer of the relay, and
    the tap bus's on_error counts a failing observer under its own name."""
    metrics = RelayMetrics(process=False)
    text = metrics.render()[0].decode()
    for name in ("metrics", "recording", "monitor", "webhooks"):
        assert f'realtime_relay_observer_errors_total{{observer="{name}"}} 0.0' in text

    class Broken(MetricsObserver):
        def event(self, call_id: str, event: TappedEvent) -> None:
            raise RuntimeError("a bug")

    bus = TapBus(on_error=metrics.observer_error)
    bus.add(Broken(metrics))
    call = FakeCall()
    taps = bus.for_call(call.id)
    taps.call_started(call.info())
    taps.event(tapped("client", {"type": "response.create"}, time.time()))
    taps.event(tapped("client", {"type": "response.create"}, time.time()))  # detached
    assert value(metrics, "observer_errors_total", observer="metrics") == 1
    taps.call_ended(call.info(), CallEnd("hangup", time.time(), ()))
    assert value(metrics, "calls_active") == 0  # still told the call ended


def test_observer_counts_calls_by_outcome_and_duration() -> None:
    """A call counts as active from start to end, then once under its outcome; an
    unknown outcome is folded into 'other'."""
    metrics, directory = observed()
    first, second = directory.start(FakeCall()), directory.start(FakeCall())
    assert value(metrics, "calls_active") == 2
    directory.end(first, "hangup")
    directory.end(second, "some_new_outcome")
    directory.observers[0].call_ended(second.info(), CallEnd("hangup", time.time(), ()))
    assert value(metrics, "calls_active") == 0  # a second end is ignored
    assert value(metrics, "calls_total", outcome="hangup") == 1
    assert value(metrics, "calls_total", outcome="other") == 1
    assert value(metrics, "call_duration_seconds_count") == 2


def test_observer_counts_ended_calls_by_transport() -> None:
    """Each ended call counts once under what carried its caller leg; a name the
    vocabulary does not know is folded into 'other'; every known one exists at zero."""
    metrics, directory = observed()
    assert value(metrics, "calls_by_transport_total", transport="turn-tls") == 0
    for transport in ("udp", "turn-tcp", "websocket", "turn-tcp", "carrier-pigeon"):
        directory.end(directory.start(FakeCall(transport=transport)), "hangup")
    assert value(metrics, "calls_by_transport_total", transport="udp") == 1
    assert value(metrics, "calls_by_transport_total", transport="turn-tcp") == 2
    assert value(metrics, "calls_by_transport_total", transport="websocket") == 1
    assert value(metrics, "calls_by_transport_total", transport="other") == 1
    assert value(metrics, "calls_by_transport_total", transport="tcp") == 0
    assert value(metrics, "calls_total", outcome="hangup") == 5


def test_event_types_are_bounded_and_errors_counted_by_code() -> None:
    """Known OpenAI types keep their name, others become 'other'; error codes too."""
    metrics, directory = observed()
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


def test_setup_results_fold_relay_error_codes_into_reasons() -> None:
    """Successes time both stages; failures count by reason and as a setup_failed
    outcome; those with OpenAI also count as an upstream error."""
    metrics = RelayMetrics(process=False)
    observer = MetricsObserver(metrics)
    observer.setup_finished(SetupResult("rtc_1", 0.8, 0.5))
    observer.setup_finished(SetupResult("rtc_2", 0.1, None, failure="relay_overloaded"))
    observer.setup_finished(
        SetupResult("rtc_3", 5.0, None, failure="upstream_timeout", upstream_failed=True)
    )
    observer.setup_finished(SetupResult("rtc_4", 0.1, None, failure="capacity"))
    assert value(metrics, "call_setup_seconds_count", stage="total") == 1
    assert value(metrics, "call_setup_seconds_sum", stage="upstream") == 0.5
    assert value(metrics, "call_setup_failures_total", reason="capacity") == 2
    assert value(metrics, "call_setup_failures_total", reason="timeout") == 1
    assert value(metrics, "calls_total", outcome="setup_failed") == 3
    assert value(metrics, "upstream_errors_total", code="timeout") == 1


def media(call_id: str, frames: int, dropped: int, **more: object) -> MediaStats:
    """Cumulative counters: ``frames`` on every (leg, direction), ``dropped`` likewise."""
    keys = [(leg, d) for leg in ("caller", "upstream") for d in ("in", "out")]
    return MediaStats(
        call_id,
        frames={key: frames for key in keys},  # type: ignore[misc]
        dropped={key: dropped for key in keys},  # type: ignore[misc]
        **more,  # type: ignore[arg-type]
    )


def test_media_stats_add_only_what_grew_since_the_last_report() -> None:
    """Counters in MediaStats are cumulative per call: two reports of 100 then 150
    frames add 150, not 250; two calls add up; a call's last values are forgotten when
    it ends, and a report after the end counts nothing."""
    metrics, directory = observed()
    first, second = directory.start(FakeCall()), directory.start(FakeCall())
    directory.media_stats(media(first.id, 100, 1))
    directory.media_stats(media(first.id, 150, 3))
    directory.media_stats(media(second.id, 10, 0))
    for leg in ("caller", "upstream"):
        for direction in ("in", "out"):
            labels = {"leg": leg, "direction": direction}
            assert value(metrics, "audio_frames_total", **labels) == 160
            assert value(metrics, "audio_frames_dropped_total", **labels) == 3
    directory.end(first)
    directory.observers[0].media_stats(media(first.id, 200, 5))  # after the end: ignored
    assert value(metrics, "audio_frames_total", leg="caller", direction="in") == 160


def test_media_stats_feed_processing_latency_jitter_loss_and_rtt() -> None:
    """Per-speaker processing times and response latencies are observed as given; RTP
    packet counters add deltas per SSRC (a counter that went back adds nothing), jitter
    and RTT are observed per leg."""
    metrics, directory = observed()
    call = directory.start(FakeCall())

    def links(received: int, lost: int, remote_received: int) -> list[LinkStats]:
        return [
            LinkStats("caller", "in", "1", received, lost, 0.01),
            LinkStats("caller", "out", "2", remote_received, 10, 0.002),
            LinkStats("upstream", "in", "3", received, 0, None),
        ]

    directory.media_stats(
        media(
            call.id, 1, 0,
            processing_secs={"caller": [0.001, 0.002], "agent": [0.0001]},
            response_latency_secs=[0.8],
            links=links(100, 2, 90),
            rtt_secs={"caller": 0.05, "upstream": 0.02},
        )
    )  # fmt: skip
    directory.media_stats(media(call.id, 2, 0, links=links(150, 2, 80), rtt_secs={"caller": 0.05}))
    assert value(metrics, "audio_processing_seconds_count", speaker="caller") == 2
    assert value(metrics, "audio_processing_seconds_count", speaker="agent") == 1
    assert value(metrics, "agent_response_latency_seconds_count") == 1
    assert value(metrics, "rtp_packets_received_total", leg="caller", direction="in") == 150
    assert value(metrics, "rtp_packets_lost_total", leg="caller", direction="in") == 2
    assert value(metrics, "rtp_packets_received_total", leg="caller", direction="out") == 90
    assert value(metrics, "rtp_packets_lost_total", leg="caller", direction="out") == 10
    assert value(metrics, "rtp_packets_received_total", leg="upstream", direction="in") == 150
    assert value(metrics, "rtp_jitter_seconds_sum", leg="caller", direction="in") == 0.02
    assert value(metrics, "rtp_jitter_seconds_sum", leg="caller", direction="out") == 0.004
    assert value(metrics, "rtp_jitter_seconds_count", leg="upstream", direction="in") == 0
    assert value(metrics, "rtt_seconds_count", leg="caller") == 2
    assert value(metrics, "rtt_seconds_sum", leg="caller") == pytest.approx(0.1)
    assert value(metrics, "rtt_seconds_count", leg="upstream") == 1


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


async def test_the_probe_measures_the_loop_threads_load() -> None:
    """A loop kept busy (a hog that blocks 50 ms of every ~55) reads as a load near 1,
    exported as event_loop_load_ratio; an idle one, near 0. Admission reads the median
    over the last 2 s, so one stall alone does not move it."""
    metrics = RelayMetrics(process=False)
    probe = LoopLagProbe(metrics, interval_secs=0.05)
    probe.start()
    await asyncio.sleep(1.0)
    idle = probe.sustained_load()
    time.sleep(0.3)  # noqa: ASYNC251 - one stall
    await asyncio.sleep(0.3)
    after_one_stall = probe.sustained_load()

    async def hog() -> None:
        while True:
            time.sleep(0.05)  # noqa: ASYNC251 - a loop that is always busy
            await asyncio.sleep(0.005)

    hogging = asyncio.ensure_future(hog())
    try:
        await asyncio.sleep(2.5)
        busy = probe.sustained_load()
    finally:
        hogging.cancel()
        await asyncio.gather(hogging, return_exceptions=True)
        await probe.close()
    assert idle < 0.5, idle
    assert after_one_stall < 0.5, after_one_stall
    assert busy > 0.8, busy
    assert value(metrics, "event_loop_load_ratio") == pytest.approx(busy, abs=0.2)


async def test_slow_clients_cut_off_are_counted_in_the_metrics() -> None:
    """A request body that does not arrive in time is answered 408, and counted in
    realtime_relay_slow_clients_refused_total (read from the HTTP layer at scrape time)."""
    app = build_app(BASE_SETTINGS)
    bound_slow_clients(app, ClientLimits(idle_secs=5.0, body_secs=0.5))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        metrics = app[OPS].metrics
        assert value(metrics, "slow_clients_refused_total") == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/realtime/calls HTTP/1.1\r\nHost: relay\r\n"
            b"Content-Type: application/sdp\r\nContent-Length: 5000\r\n\r\nv=0\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert value(metrics, "slow_clients_refused_total") == 1
        async with aiohttp.ClientSession() as http:
            text = await (await http.get(server.make_url("/metrics"))).text()
        assert "realtime_relay_slow_clients_refused_total 1.0" in text
    finally:
        await server.close()


async def test_two_probes_on_one_loop_each_unwind_their_own_clock() -> None:
    """Two apps in one process share the event loop: their idle clocks chain, and
    whichever closes first leaves the other one measuring."""
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    first, second = IdleClock(loop), IdleClock(loop)
    first.remove()
    await asyncio.sleep(0.2)
    assert second.idle_secs > 0.1 and first.idle_secs == 0.0
    second.remove()
    assert "select" not in vars(selector)
    third = IdleClock(loop)
    fourth = IdleClock(loop)
    fourth.remove()
    third.remove()
    assert "select" not in vars(selector)
