"""A call's media figures as one typed :class:`~relay.taps.MediaStats` value: its own
frame counters and processing times, and both legs' getStats reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from .media.opus import OPUS_CLOCK
from .taps import Leg, LinkStats, MediaStats

if TYPE_CHECKING:
    from .call import Call


def media_stats(
    call: Call, caller_report: Mapping[str, Any], upstream_report: Mapping[str, Any]
) -> MediaStats:
    counters = call.audio_counters()
    frames = {
        ("caller", "in"): counters["caller_frames_in"],
        ("caller", "out"): counters["caller_frames_out"],
        ("upstream", "in"): counters["upstream_frames_in"],
        ("upstream", "out"): counters["upstream_frames_out"],
    }
    dropped = {
        ("caller", "in"): counters["caller_dropped_in"],
        ("caller", "out"): counters["caller_dropped_out"],
        ("upstream", "in"): counters["upstream_dropped_in"],
        ("upstream", "out"): counters["upstream_dropped_out"],
    }
    caller_times = call.caller_audio.times.take()
    links: list[LinkStats] = []
    rtt: dict[Leg, float] = {}
    for leg, report in (("caller", caller_report), ("upstream", upstream_report)):
        _read_report(leg, report, links, rtt)  # type: ignore[arg-type]
    return MediaStats(
        call_id=call.id,
        frames=frames,  # type: ignore[arg-type]
        dropped=dropped,  # type: ignore[arg-type]
        processing_secs={"caller": caller_times, "agent": call.agent_audio.times.take()},
        response_latency_secs=call.agent_audio.response_latencies.take(),
        links=links,
        rtt_secs=rtt,
    )


def _read_report(
    leg: Leg, report: Mapping[str, Any], links: list[LinkStats], rtt: dict[Leg, float]
) -> None:
    for stats in report.values():
        kind = getattr(stats, "type", None)
        if kind == "inbound-rtp":
            links.append(_link(leg, "in", stats))
        elif kind == "remote-inbound-rtp":
            links.append(_link(leg, "out", stats))
            value = getattr(stats, "roundTripTime", None)
            if isinstance(value, int | float) and value >= 0:
                rtt[leg] = float(value)


def _link(leg: Leg, direction: Literal["in", "out"], stats: Any) -> LinkStats:
    jitter = getattr(stats, "jitter", None)
    return LinkStats(
        leg=leg,
        direction=direction,
        ssrc=str(getattr(stats, "ssrc", "")),
        packets_received=int(getattr(stats, "packetsReceived", 0) or 0),
        packets_lost=max(0, int(getattr(stats, "packetsLost", 0) or 0)),
        jitter_secs=jitter / OPUS_CLOCK
        if isinstance(jitter, int | float) and jitter >= 0
        else None,
    )
