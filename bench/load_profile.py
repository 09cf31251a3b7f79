"""The cProfile windows of ``bench.load``: the relay's event-loop thread profiled for a
few seconds (by ``bench/load_relayproc.py``), summarised as its top functions and its
own time by area (SRTP, aiortc, noise suppression, ...)."""

from __future__ import annotations

import pstats
from pathlib import Path

from bench.table import Table

_TABLE = Table(
    "{:>6} {:>9} {:>9} {:>8} {:>9}  {}", "own %,own ms/s,calls/s,us/call,cum ms/s,function"
)
#: (own time, cumulative time, calls, (file, line, function)) of one function.
Entry = tuple[float, float, int, tuple[str, int, str]]


def _entries(path: Path) -> tuple[list[Entry], float]:
    """The profile's functions, most own time first, and their total own time
    (OSError etc. if the profile cannot be read)."""
    stats = pstats.Stats(str(path))
    entries: list[Entry] = []
    total = 0.0
    for func, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        entries.append((tt, ct, nc, func))
    entries.sort(reverse=True)
    return entries, total


def _row(entry: Entry, total: float, seconds: float) -> str:
    tt, ct, nc, (file, line, name) = entry
    return _TABLE.row(
        f"{100 * tt / total if total else 0:.1f}",
        f"{1000 * tt / seconds:.1f}",
        f"{nc / seconds:.0f}",
        f"{1e6 * tt / nc if nc else 0:.1f}",
        f"{1000 * ct / seconds:.1f}",
        f"{name} ({_short(file)}:{line})",
    )


def _by_area(entries: list[Entry], total: float) -> str:
    areas: dict[str, float] = {}
    for tt, _ct, _nc, (file, _line, name) in entries:
        area = _area(file, name)
        areas[area] = areas.get(area, 0.0) + tt
    return "  own time by area: " + ", ".join(
        f"{area} {100 * t / total:.0f} %"
        for area, t in sorted(areas.items(), key=lambda kv: -kv[1])
        if total and t / total >= 0.01
    )


def profile_top(path: Path, seconds: float, what: str, top: int = 15) -> list[str]:
    try:
        entries, total = _entries(path)
    except (OSError, TypeError, ValueError) as exc:
        return [f"(no profile: {exc})"]
    out = [
        f"cProfile of the relay's event-loop thread ({what}; thread CPU-time clock, so "
        f"idle epoll waits and time lost to other threads do not count; it measured "
        f"{1000 * total / seconds:.0f} ms of CPU per second; the profiler adds overhead: "
        f"use the ranking) {path}",
        _TABLE.header(),
    ]
    out.extend(_row(entry, total, seconds) for entry in entries[:top])
    out.append(_by_area(entries, total))
    return out

    return out


_AREAS = (
    ("livekit", "noise suppression (livekit APM via FFI)"),
    ("pylibsrtp", "SRTP"),
    ("aiortc/rtcrtpsender", "aiortc RTP send"),
    ("aiortc/rtcrtpreceiver", "aiortc RTP receive"),
    ("aiortc/rtp.py", "aiortc RTP packets"),
    ("aiortc/rtcdtlstransport", "aiortc DTLS/SRTP transport"),
    ("aiortc/rtcsctptransport", "aiortc SCTP (data channels)"),
    ("aiortc/rtcdatachannel", "aiortc SCTP (data channels)"),
    ("aiortc/sdp", "aiortc SDP"),
    ("aiortc/codecs", "aiortc codecs"),
    ("aiortc/contrib", "aiortc MediaRelay"),
    ("aiortc/", "aiortc, other"),
    ("aioice", "aioice (ICE, UDP)"),
    ("pyee", "pyee events"),
    ("OpenSSL", "pyOpenSSL (DTLS)"),
    ("cryptography", "cryptography"),
    ("aiohttp", "aiohttp"),
    ("relay/", "relay code"),
    ("bench/", "bench code"),
    ("numpy", "numpy"),
    ("asyncio", "asyncio"),
    ("logging", "logging"),
)


def _short(file: str) -> str:
    return file.split("site-packages/")[-1].replace(str(Path.cwd()) + "/", "")


def _area(file: str, name: str) -> str:
    for key, label in _AREAS:
        if key in file:
            return label
    if file == "~":
        if (
            name.startswith(("<av.", "<method 'resample'", "<method 'to_ndarray'"))
            or " av." in name
        ):
            return "PyAV"
        if "socket" in name or "epoll" in name:
            return "sockets/epoll"
        if "srtp" in name:
            return "SRTP"
        if "_openssl" in name or "SSL" in name:
            return "pyOpenSSL (DTLS)"
        if "numpy" in name or "ndarray" in name:
            return "numpy"
        return "builtins, other C"
    return "Python stdlib, other"
