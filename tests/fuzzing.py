"""Generators (Hypothesis strategies) and checks shared by the fuzz tests
(``test_fuzz_http.py``, ``test_fuzz_events.py``) and ``python -m bench.fuzz``.

HTTP requests are built as raw bytes and sent over a plain blocking socket, so that
anything aiohttp's parser accepts can be sent (its client refuses undecodable header
bytes) and so that the generators can run in a thread while the relay serves on the
event loop. Routes come from ``app.router.routes()``: a new route is fuzzed as soon as
it is registered.

Invariants (:func:`check_answer`): never a 5xx, every 4xx that reached the app is
OpenAI's error envelope, every JSON body is strict JSON (RFC 8259: no ``NaN``), no
configured secret in an answer. :class:`LogWatch` collects records with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import socket
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from relay.config import Settings
from relay.ops.metrics.vocabulary import CLIENT_EVENT_TYPES as KNOWN_CLIENT_EVENTS

T = TypeVar("T")
#: A request body and the content type that goes with it.
Body = tuple[bytes, bytes]

#: Known defects the generators steer around until they are fixed, each reproduced by a
#: strict xfail test (see the test modules). Set to True once fixed, so the fuzzers
#: cover them again.
#:
#: ``NaN``, ``Infinity`` and ``1e400`` are accepted in JSON request bodies and in
#: data-channel events, and come back out as ``NaN``/``Infinity``: not JSON.
NON_FINITE_NUMBERS_FIXED = True
#: Errors aiohttp's ``FileResponse`` makes itself (a missing file under ``/web/``, an
#: unsatisfiable ``Range``, a failed ``If-Unmodified-Since``) are empty-bodied 404, 416
#: and 412 answers, not OpenAI's error envelope.
FILE_RESPONSE_ERRORS_FIXED = True
#: A lone surrogate (a JSON escape such as ``"\\ud800"``) in a session's ``model`` makes
#: the call's snapshot unencodable: the operator routes answer 500 for every call.
SURROGATE_MODEL_FIXED = True
#: A control byte in a multipart part's header (``name="a\x01"``) makes aiohttp's
#: multipart reader raise ``InvalidHeader``, which ``_read_multipart_offer`` does not
#: catch: a 500 with a traceback for ``POST /v1/realtime/calls``.
MULTIPART_HEADER_ERRORS_FIXED = True
#: Where the relay answers with files (static folder, pages, recording downloads).
FILE_ROUTES = (b"/web/", b"/monitor/", b"/api/recordings/")

#: Settings that keep a relay taking calls on a loaded machine: admission by loop lag and
#: load is tested on its own (tests/test_admission.py), not left to chance here.
ALWAYS_ADMIT: dict[str, Any] = {
    "max_loop_lag_ms": 60_000.0,
    **({"max_loop_load": 0.0} if "max_loop_load" in {f.name for f in fields(Settings)} else {}),
}

# -- HTTP requests ---------------------------------------------------------------------

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
#: Methods aiohttp's parser knows but no route has; and a few it does not know.
ODD_METHODS = ("TRACE", "PROPFIND", "PURGE", "MKCOL", "FOO", "get")
#: Request headers the request builder writes itself.
RESERVED_HEADERS = {"host", "connection", "content-length", "transfer-encoding"}
BOUNDARY = "fuzzB0undary7MA4YWxk"
ORIGIN = "https://app.fuzz.example"
INTERNAL_HEADER = "X-Relay-Internal"
#: Longer than the relay's 2048-character path limit, shorter than aiohttp's 8190-byte
#: request line.
LONG_PATH_CHARS = (300, 2047, 2049, 4000, 7000)

PATH_ATOMS = (
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    "%2e",
    "..%2f",
    "%2f..",
    "%2F",
    "%5c..",
    "..;",
    ";x=1",
    "%00",
    "%ff%fe",
    "%ED%A0%80",
    "%C0%AE%C0%AE",
    "%25",
    "~",
    "*",
    "",
    "internal",
    "client_secrets",
    "v1",
    "realtime",
    "calls",
    "hangup",
    "api",
    "recordings",
    "events",
    "listen",
    "monitor",
    "web",
    "metrics",
    "index.html",
    "monitor.js",
    "audio.wav",
    "events.jsonl",
    "metadata.json",
    "openapi.json",
)
QUERY_NAMES = ("model", "track", "format", "limit", "x", "model[]", "")
QUERY_VALUES = ("caller", "agent", "both", "pcm16", "twilio", "-1", "0", "1e9", "gpt-realtime")


@dataclass(frozen=True, order=True)
class Route:
    """One route of the app: its method and path template (``{name}`` placeholders)."""

    method: str
    template: str


def routes_of(app: web.Application) -> list[Route]:
    """Every route of ``app`` (a static folder as ``<prefix>/{filename}``; the ``HEAD``
    that aiohttp adds beside each ``GET`` left to the generated methods), the
    OpenAI-compatible ones first: Hypothesis draws early elements a little more often."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        template = resource.canonical
        if isinstance(resource, web.StaticResource):
            template = template.rstrip("/") + "/{filename}"
        found.add(Route(route.method, template))
    found -= {Route("HEAD", r.template) for r in found if r.method == "GET"}
    return sorted(found, key=lambda r: (not r.template.startswith("/v1/"), r.method != "POST", r))


def explicit_requests(route: Route) -> list[FuzzRequest]:
    """The requests each route gets whatever the generators draw: an ordinary one (its
    placeholders filled with ``x``) and, for a route that takes a body, one of each
    kind of hostile body with the content type that gets it parsed."""
    target = _fill(route.template, ["x"] * route.template.count("{")).encode()
    method = route.method.encode()
    if route.method not in ("POST", "PUT", "PATCH"):
        return [FuzzRequest(method, target, route=route.template)]
    return [
        FuzzRequest(method, target, ((b"Content-Type", ctype),), body, route=route.template)
        for body, ctype in EXPLICIT_BODIES
    ]


@dataclass(frozen=True)
class FuzzRequest:
    """A request as bytes on the wire (``Connection: close``; ``Content-Length`` or
    chunked, always right: a wrong length is a slow client, tested elsewhere)."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    chunked: bool = False
    connection: bytes = b"close"
    #: The route template the target was made from ("" for a random path).
    route: str = field(default="", compare=False)

    def wire(self) -> bytes:
        head = [self.method + b" " + self.target + b" HTTP/1.1", b"Host: 127.0.0.1"]
        head.append(b"Connection: " + self.connection)
        head += [name + b": " + value for name, value in self.headers]
        body = self.body
        if self.chunked:
            head.append(b"Transfer-Encoding: chunked")
            body = _chunked(self.body)
        elif body or self.method in (b"POST", b"PUT", b"PATCH"):
            head.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def __repr__(self) -> str:  # what a failure report shows: enough to replay it
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return (
            f"FuzzRequest(method={self.method!r}, target={self.target[:300]!r}, "
            f"headers={self.headers!r}, body={body!r} ({len(self.body)} bytes), "
            f"chunked={self.chunked}, connection={self.connection!r})"
        )


def _chunked(body: bytes) -> bytes:
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _quoted(text: str) -> str:
    return quote(text, safe="")


_CALL_IDS = st.builds(
    lambda shard, digits: f"rtc_s{shard}_{digits}" if shard is not None else f"rtc_{digits}",
    st.one_of(st.none(), st.integers(0, 12)),
    st.text("0123456789abcdef", min_size=0, max_size=40),
)
SEGMENTS = st.one_of(
    st.sampled_from(PATH_ATOMS),
    _CALL_IDS,
    st.text(max_size=30).map(_quoted),
    st.text(string.ascii_letters + string.digits + "-._~", max_size=40),
    st.integers(100, 400).map(lambda n: "a" * n),  # past the 255-byte segment limit
    st.builds(lambda s: "ek_" + s, st.text("0123456789abcdef", max_size=34)),
)


def _query() -> st.SearchStrategy[str]:
    pair = st.tuples(
        st.sampled_from(QUERY_NAMES) | st.text(max_size=10).map(_quoted),
        st.sampled_from(QUERY_VALUES) | SEGMENTS,
    )
    return st.lists(pair, max_size=4).map(
        lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else ""
    )


def _fill(template: str, values: Sequence[str]) -> str:
    parts = iter(values)
    return re.sub(r"\{[^}]+\}", lambda _m: next(parts), template)


def _route_target(template: str) -> st.SearchStrategy[str]:
    holes = len(re.findall(r"\{[^}]+\}", template))
    suffix = st.sampled_from(
        ("", "", "", "/", "//", "/..", "/%2e%2e/%2e%2e/internal/client_secrets/ek_0", "/x")
    )
    return st.builds(
        lambda values, tail, query: _fill(template, values) + tail + query,
        st.tuples(*([SEGMENTS] * holes)),
        suffix,
        _query(),
    )


TARGETS_ANYWHERE = st.one_of(
    st.lists(SEGMENTS, max_size=12).map(lambda s: "/" + "/".join(s)),
    st.builds(
        lambda n, prefix: (prefix + "/" + "a/" * n)[: max(1, n)],
        st.sampled_from(LONG_PATH_CHARS),
        st.sampled_from(("/v1/realtime/calls", "/api/calls", "/web", "/monitor", "")),
    ),
    st.builds(lambda n: "/" + "%41" * n, st.integers(600, 2600)),
    st.sampled_from(("*", "/v1/\xff".encode("latin-1").decode("latin-1"), "http://x/v1/calls")),
)

# Header values: visible ASCII, spaces and obs-text (bytes 0x80-0xff, undecodable as
# UTF-8): everything aiohttp's parser lets through to the app.
_VALUE_BYTES = sorted(set(range(0x21, 0x7F)) | set(range(0x80, 0x100)) | {0x20, 0x09})
HEADER_VALUES = st.one_of(
    st.lists(st.sampled_from(_VALUE_BYTES), max_size=60).map(bytes),
    st.text(string.printable.strip(), max_size=60).map(str.encode),
    st.integers(1000, 6000).map(lambda n: b"v" * n),
).map(lambda v: v.strip(b" \t") or b"x")
HEADER_NAMES = st.text(
    string.ascii_letters + string.digits + "-_!#$%&'*+.^`|~", min_size=1, max_size=24
)
CONTENT_TYPES = (
    b"application/json",
    b"application/json; charset=utf-8",
    b"application/sdp",
    b"text/plain",
    b"application/octet-stream",
    b"multipart/form-data; boundary=" + BOUNDARY.encode(),
    b"multipart/form-data",
    b"multipart/form-data; boundary=",
    b"application/x-www-form-urlencoded",
    b"application/json; charset=latin-1",
    b"*/*",
)


def _headers(tokens: Sequence[str]) -> st.SearchStrategy[tuple[tuple[bytes, bytes], ...]]:
    known = [t.encode() for t in tokens]
    token = st.one_of(
        st.sampled_from(known) if known else st.nothing(),
        st.sampled_from((b"ek_" + b"0" * 32, b"sk-fuzz", b"", b"ek_s1_" + b"ab" * 16)),
        HEADER_VALUES,
    )
    authorization = st.one_of(
        token.map(lambda t: b"Bearer " + t),
        token.map(lambda t: b"bearer   " + t + b"  "),
        st.sampled_from((b"Bearer", b"Basic dXNlcjpwYXNz", b"Bearer \xff\xfe\xc3(")),
        HEADER_VALUES,
    )
    protocols = st.one_of(
        token.map(lambda t: b"relay-monitor, bearer." + t),
        token.map(lambda t: b"bearer." + t),
        HEADER_VALUES,
    )
    named = st.one_of(
        authorization.map(lambda v: (b"Authorization", v)),
        st.sampled_from(CONTENT_TYPES).map(lambda v: (b"Content-Type", v)),
        HEADER_VALUES.map(lambda v: (b"Content-Type", v)),
        protocols.map(lambda v: (b"Sec-WebSocket-Protocol", v)),
        st.sampled_from((b"websocket", b"WebSocket", b"h2c")).map(lambda v: (b"Upgrade", v)),
        st.just((b"Sec-WebSocket-Version", b"13")),
        st.just((b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")),
        st.sampled_from((b"1", b"true", b"0", b"yes")).map(lambda v: (b"X-Relay-Record", v)),
        HEADER_VALUES.map(lambda v: (b"User-Agent", v)),
        st.sampled_from((ORIGIN.encode(), b"null", b"https://evil.example")).map(
            lambda v: (b"Origin", v)
        ),
        st.sampled_from((b"POST", b"GET", b"\xff")).map(
            lambda v: (b"Access-Control-Request-Method", v)
        ),
        token.map(lambda v: (INTERNAL_HEADER.encode(), v)),
        st.just((b"Expect", b"100-continue")),
        st.sampled_from((b"bytes=0-0", b"bytes=999999999-", b"bytes=5-1", b"bytes=-0", b"x")).map(
            lambda v: (b"Range", v)
        ),
        st.tuples(
            st.sampled_from(
                (b"If-Modified-Since", b"If-Unmodified-Since", b"If-None-Match", b"If-Range")
            ),
            st.sampled_from((b"Thu, 01 Jan 1970 00:00:00 GMT", b"*", b'"x"', b"garbage")),
        ),
        st.tuples(
            HEADER_NAMES.filter(lambda n: n.lower() not in RESERVED_HEADERS).map(str.encode),
            HEADER_VALUES,
        ),
    )
    return st.lists(named, max_size=8).map(tuple)


# -- bodies ------------------------------------------------------------------------------

#: Strings with lone surrogates: they reach the JSON text as "\\ud800"-style escapes.
_SURROGATE_TEXT = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
TEXT = st.one_of(st.text(max_size=40), _SURROGATE_TEXT)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=NON_FINITE_NUMBERS_FIXED, allow_infinity=NON_FINITE_NUMBERS_FIXED),
    TEXT,
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=16,
)
SESSION_KEYS = (
    "type",
    "model",
    "instructions",
    "audio",
    "tools",
    "tool_choice",
    "output_modalities",
    "max_output_tokens",
    "tracing",
    "include",
    "truncation",
    "prompt",
)
SESSIONS = st.dictionaries(st.sampled_from(SESSION_KEYS) | TEXT, JSON_VALUES, max_size=6)
EXPIRES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "anchor": st.sampled_from(("created_at", "now")) | JSON_VALUES,
            "seconds": st.integers(-10, 10_000) | JSON_VALUES,
        },
    ),
)


def has_lone_surrogate(value: object) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


#: Session configs to open calls with (see :data:`SURROGATE_MODEL_FIXED`).
CALL_SESSIONS = SESSIONS.filter(
    lambda s: SURROGATE_MODEL_FIXED or not has_lone_surrogate(s.get("model"))
)
API_OBJECTS = st.fixed_dictionaries(
    {},
    optional={"session": SESSIONS | JSON_VALUES, "expires_after": EXPIRES, "model": TEXT},
)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    # Lone surrogates only survive as escapes; raw ones are sent as their (invalid)
    # UTF-8 bytes when ``ascii_only`` is off.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


JSON_BODIES = st.builds(_dumps, st.one_of(API_OBJECTS, JSON_VALUES), st.booleans())


def _deep(depth: int, shape: str) -> bytes:
    if shape == "list":
        return b"[" * depth + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if shape == "session":
        return b'{"session": {"tools": ' + b"[" * depth + b"]" * depth + b"}}"
    return b'{"x":[' * depth + b"0" + b"]}" * depth


DEEP_BODIES = st.builds(
    _deep,
    st.sampled_from((62, 63, 64, 65, 66, 200, 999, 1000, 1001, 5000, 60_000)),
    st.sampled_from(("list", "object", "session", "mixed")),
)
#: Around the limits: SDP offers (64 KiB), aiohttp's client_max_size (128 KiB),
#: JSON bodies (256 KiB), and past all of them.
HUGE_SIZES = (65_535, 65_536, 65_537, 131_071, 131_073, 262_144, 262_145, 1 << 20, 2 << 20)
HUGE_BODIES = st.one_of(
    st.builds(
        lambda size, fill: fill * size,
        st.sampled_from(HUGE_SIZES),
        st.sampled_from((b"x", b"[", b"\x00", b"\xff")),
    ),
    st.builds(
        lambda size: b'{"session": {"instructions": "' + b"a" * size + b'"}}',
        st.sampled_from(HUGE_SIZES),
    ),
)
SDP_LINES = (
    "o=- 1 1 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP4 0.0.0.0",
    "a=mid:0",
    "a=mid:1",
    "a=sendrecv",
    "a=rtpmap:111 opus/48000/2",
    "a=setup:actpass",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=sctp-port:5000",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
    "a=candidate:2 1 udp 2130706431 224.0.0.1 5353 typ host",
    "a=candidate:3 1 tcp 1 example.com 99999 typ relay",
)
SDP_BODIES = st.builds(
    lambda lines, crlf: ("v=0" + crlf + crlf.join(lines) + crlf).encode("utf-8", "surrogatepass"),
    st.lists(st.sampled_from(SDP_LINES) | TEXT, max_size=30),
    st.sampled_from(("\r\n", "\n", "\r")),
)


_CONTROLS = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"


def part_header_ok(value: bytes) -> bool:
    """Whether a multipart part's header line is free of the bytes behind the known
    defect (see :data:`MULTIPART_HEADER_ERRORS_FIXED`)."""
    return MULTIPART_HEADER_ERRORS_FIXED or not any(b in _CONTROLS for b in value)


def _part_header(name: bytes, value: bytes) -> bytes:
    line = name + b": " + value
    return line if part_header_ok(line) else bytes(b for b in line if b not in _CONTROLS)


def _multipart(
    parts: list[tuple[str, bytes, list[tuple[bytes, bytes]], bytes]], closed: bool
) -> bytes:
    out = b""
    for name, ctype, extra, data in parts:
        disposition = b'form-data; name="' + name.encode("utf-8", "replace") + b'"'
        lines = [(b"Content-Disposition", disposition), *extra]
        if ctype:
            lines.append((b"Content-Type", ctype))
        out += b"--" + BOUNDARY.encode() + b"\r\n"
        out += b"".join(_part_header(n, v) + b"\r\n" for n, v in lines) + b"\r\n"
        out += data + b"\r\n"
    return out + (b"--" + BOUNDARY.encode() + b"--\r\n" if closed else b"")


_PART_HEADERS = st.tuples(
    st.sampled_from(
        (b"Content-Length", b"Content-Transfer-Encoding", b"Content-Encoding", b"X-Part")
    ),
    st.one_of(
        st.sampled_from((b"-1", b"99999999", b"base64", b"gzip", b"quoted-printable")),
        HEADER_VALUES,
        st.binary(max_size=12),
    ),
)
MULTIPART_BODIES = st.builds(
    _multipart,
    st.lists(
        st.tuples(
            st.sampled_from(("sdp", "session", "file", "", 'a"b')) | st.text(max_size=8),
            st.sampled_from((b"", b"application/sdp", b"application/json", b"\xff")),
            st.lists(_PART_HEADERS, max_size=2),
            st.one_of(SDP_BODIES, JSON_BODIES, DEEP_BODIES, st.binary(max_size=64)),
        ),
        max_size=4,
    ),
    st.booleans(),
)
_MULTIPART_TYPE = b"multipart/form-data; boundary=" + BOUNDARY.encode()


def _typed(bodies: st.SearchStrategy[bytes], ctype: bytes) -> st.SearchStrategy[Body]:
    return st.tuples(bodies, st.just(ctype))


#: Bodies, each with the content type that gets it parsed (sent most of the time).
BODIES: st.SearchStrategy[Body] = st.one_of(
    st.just((b"", b"")),
    _typed(JSON_BODIES, b"application/json"),
    _typed(DEEP_BODIES, b"application/json"),
    _typed(st.binary(max_size=2048), b"application/octet-stream"),
    _typed(SDP_BODIES, b"application/sdp"),
    _typed(MULTIPART_BODIES, _MULTIPART_TYPE),
    _typed(MULTIPART_BODIES, _MULTIPART_TYPE),
    _typed(HUGE_BODIES, b"application/sdp"),
)


#: One body of each hostile kind (see :func:`explicit_requests`).
EXPLICIT_BODIES: tuple[Body, ...] = (
    (b"{}", b"application/json"),
    (_dumps({"session": {"instructions": "\ud800", "tools": [[[]]]}}, True), b"application/json"),
    (_deep(100_000, "session"), b"application/json"),
    (b"\xff\xfe{", b"application/json"),
    (b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n", b"application/sdp"),
    (
        _multipart(
            [
                ("session", b"application/json", [(b"X-Part", b"a\x01b")], b'{"model": "x"}'),
                ('sdp"\x00', b"", [(b"Content-Length", b"-1")], b"v=0\r\n"),
            ],
            True,
        ),
        _MULTIPART_TYPE,
    ),
    (b"--" + BOUNDARY.encode() + b"\r\n\r\n", _MULTIPART_TYPE),
    (b"x" * (300 * 1024), b"application/json"),
)


def _with_type(
    headers: tuple[tuple[bytes, bytes], ...], ctype: bytes, send_it: bool
) -> tuple[tuple[bytes, bytes], ...]:
    if not ctype or not send_it or any(n.lower() == b"content-type" for n, _ in headers):
        return headers
    return ((b"Content-Type", ctype), *headers)


@functools.lru_cache(maxsize=8)
def _cached_requests(
    routes: tuple[Route, ...], tokens: tuple[str, ...]
) -> st.SearchStrategy[FuzzRequest]:
    """One strategy per relay set-up (rounds of a long run reuse it, and so Hypothesis'
    caches of it: a new one each round grows memory that is not the relay's)."""
    return http_requests(routes, tokens)


def http_requests(routes: Sequence[Route], tokens: Sequence[str]) -> st.SearchStrategy[FuzzRequest]:
    """Requests aimed at ``routes`` (mostly with the route's own method, target filled
    with hostile segments) or anywhere, with hostile headers and bodies. ``tokens``
    (keys the relay knows) are used often, so the code behind authentication is
    reached too."""

    def aimed(route: Route) -> st.SearchStrategy[tuple[str, str, str]]:
        # Half faithful (the route's method and path, only the placeholders hostile) so
        # that bodies reach the handlers' parsers; half with method and path bent too.
        holes = route.template.count("{")
        faithful = st.tuples(
            st.just(route.method),
            st.tuples(*([SEGMENTS] * holes)).map(lambda v: _fill(route.template, v)),
            st.just(route.template),
        )
        bent = st.tuples(
            st.sampled_from(METHODS) | st.just(route.method),
            _route_target(route.template),
            st.just(route.template),
        )
        return st.integers(0, 1).flatmap(lambda n: faithful if n else bent)

    anywhere = st.tuples(
        st.sampled_from(METHODS + ODD_METHODS), TARGETS_ANYWHERE | _query(), st.just("")
    )
    # Four in five aimed at a route, drawn as an index (about uniformly), routes that
    # take a body three times as often as the others; the rest anywhere.
    # Strategies are built once here, not in the flatmap for each draw.
    by_route = {route: aimed(route) for route in routes}
    slots = [r for r in routes for _ in range(3 if r.method in ("POST", "PUT") else 1)]
    line = st.integers(0, 5 * len(slots) - 1).flatmap(
        lambda n: by_route[slots[n % len(slots)]] if n < 4 * len(slots) else anywhere
    )
    requests = st.builds(
        lambda line, headers, body, typed, chunked, upgrade: FuzzRequest(
            method=line[0].encode(),
            target=(line[1] if line[1].startswith(("/", "*", "http")) else "/" + line[1]).encode(
                "latin-1", "replace"
            ),
            headers=_with_type(headers, body[1], typed),
            body=body[0],
            chunked=chunked,
            connection=b"Upgrade, close" if upgrade else b"close",
            route=line[2],
        ),
        line,
        _headers(tokens),
        BODIES,
        st.integers(0, 3).map(lambda n: n > 0),
        st.integers(0, 9).map(lambda n: n == 0),
        st.integers(0, 4).map(lambda n: n == 0),
    )
    return _short_repr(requests)


def _short_repr(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``strategy`` behind a repr of a line (Hypothesis warns when it builds a repr of
    tens of kB, which the test suite turns into an error)."""
    return st.deferred(lambda: strategy)


# -- answers and their checks --------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    version: str
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes

    @property
    def parser_refusal(self) -> bool:
        """aiohttp's own plain-text 400 for a request its parser refused (a method it
        does not know, a byte not allowed in a path or a header name): it answers
        before any route or middleware runs, as HTTP/1.0."""
        return self.status == 400 and self.version == "HTTP/1.0"


def send(port: int, request: FuzzRequest, timeout: float = 20.0) -> Answer | None:
    """Send ``request`` to 127.0.0.1:``port`` and read the answer (``None``: the
    connection closed without one)."""
    data = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # Answered (and closed) before the whole body was sent: read the answer anyway.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request.wire())
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    return parse_answer(bytes(data), head_only=request.method == b"HEAD")


def parse_answer(data: bytes, head_only: bool = False) -> Answer | None:
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        status_line, *lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return None
        if parts[1].startswith("1") and parts[1] != "101":
            data = rest  # 100 Continue: the real answer follows
            continue
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b"" if head_only else rest
        if "chunked" in headers.get("transfer-encoding", ""):
            body = _dechunked(body)
        elif headers.get("content-length", "").isdigit():
            body = body[: int(headers["content-length"])]
        return Answer(parts[0], int(parts[1]), headers, body, head)


def _dechunked(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes | str) -> Any:
    """JSON as RFC 8259 has it: ``NaN`` and ``Infinity`` are not numbers."""
    return json.loads(data, parse_constant=_no_constants)


def envelope_problem(body: bytes) -> str | None:
    """Why ``body`` is not OpenAI's error envelope, or ``None`` if it is."""
    try:
        payload = strict_json(body)
    except ValueError as exc:
        return f"not JSON ({exc}): {body[:200]!r}"
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or set(payload) != {"error"}:
        return f"not an error envelope: {body[:200]!r}"
    if not isinstance(error.get("message"), str) or not error["message"]:
        return f"error.message missing: {body[:200]!r}"
    if not isinstance(error.get("type"), str):
        return f"error.type missing: {body[:200]!r}"
    if "param" not in error or "code" not in error:
        return f"error.param or error.code missing: {body[:200]!r}"
    return None


def check_answer(
    request: FuzzRequest, answer: Answer | None, secrets: Sequence[str] = ()
) -> list[str]:
    """What is wrong with ``answer`` to ``request`` (empty: nothing)."""
    if answer is None:
        return ["the connection closed without an answer"]
    problems = []
    ctype = answer.headers.get("content-type", "")
    if answer.status >= 500 and not _documented_5xx(request, answer):
        problems.append(f"HTTP {answer.status}: {answer.body[:300]!r}")
    if (
        400 <= answer.status < 500
        and not answer.parser_refusal
        and request.method != b"HEAD"
        and not _known_file_response_error(request, answer)
    ):
        problem = envelope_problem(answer.body)
        if problem is not None:
            problems.append(f"HTTP {answer.status} without the error envelope: {problem}")
    elif ctype.startswith("application/json") and answer.body and request.method != b"HEAD":
        try:
            strict_json(answer.body)
        except ValueError as exc:
            problems.append(f"HTTP {answer.status} body is not JSON ({exc}): {answer.body[:200]!r}")
    for secret in secrets:
        if secret.encode() in answer.body or secret.encode() in answer.raw_head:
            problems.append(f"a configured secret ({secret[:4]}...) is in the answer")
    return problems


def _known_file_response_error(request: FuzzRequest, answer: Answer) -> bool:
    """See :data:`FILE_RESPONSE_ERRORS_FIXED`."""
    if FILE_RESPONSE_ERRORS_FIXED or answer.body or answer.status not in (404, 412, 416):
        return False
    path = request.target.split(b"?", 1)[0]
    return path == b"/" or path.startswith(FILE_ROUTES)


def _documented_5xx(request: FuzzRequest, answer: Answer) -> bool:
    """A full or draining relay answers 503 (``relay_overloaded`` with ``Retry-After``;
    ``/readyz`` says why): documented. The fuzzers' admin token may drain it."""
    if answer.status != 503:
        return False
    try:
        body = strict_json(answer.body) if answer.body else {}
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    if request.target.startswith(b"/readyz"):
        return body.get("status") in ("full", "draining", "overloaded")
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code == "relay_overloaded" and "retry-after" in answer.headers


class LogWatch(logging.Handler):
    """Collects, from any thread, the log records that carry a traceback; counts all.
    Use as a context manager (it attaches itself to the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0
        self.tracebacks: list[str] = []
        #: The first warnings and errors without a traceback (what a report shows).
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records += 1
            if record.exc_info:
                name = record.exc_info[0].__name__ if record.exc_info[0] else "?"
                self.tracebacks.append(f"{record.name}: {record.getMessage()[:300]} ({name})")
            elif record.levelno >= logging.WARNING and len(self.warnings) < 200:
                self.warnings.append(f"{record.name}: {record.getMessage()[:200]}")

    def __enter__(self) -> LogWatch:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


@dataclass
class FuzzStats:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    documented_5xx: int = 0
    parser_refusals: int = 0
    no_answer: int = 0
    problems: list[str] = field(default_factory=list)
    routes: Counter[str] = field(default_factory=Counter)

    def record(self, request: FuzzRequest, answer: Answer | None, problems: list[str]) -> None:
        self.cases += 1
        self.routes[request.route] += 1
        if answer is None:
            self.no_answer += 1
        else:
            self.statuses[answer.status] += 1
            # A 5xx the relay documents (full, draining, lagging) is not an error.
            flagged = any(p.startswith("HTTP 5") for p in problems)
            self.server_errors += flagged
            self.documented_5xx += answer.status >= 500 and not flagged
            self.parser_refusals += answer.parser_refusal
        if problems and len(self.problems) < 50:
            self.problems.append(f"{problems[0]} <- {request!r}"[:1200])


def fuzz_settings(examples: int, *, derandomize: bool = True, shrink: bool = True) -> settings:
    """Bounded, reproducible, silent unless something fails."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        phases=phases,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


def fuzz_http(
    ports: Sequence[int],
    routes: Sequence[Route],
    *,
    tokens: Sequence[str] = (),
    secrets: Sequence[str] = (),
    examples: int,
    watch: LogWatch,
    stats: FuzzStats,
    seed: int | None = None,
    fail_fast: bool = True,
) -> None:
    """Send ``examples`` generated requests to the relay(s) on ``ports`` (blocking:
    run it in a thread while the relay serves). With ``fail_fast`` the first problem
    fails (Hypothesis then shrinks it to a minimal request); otherwise problems are
    only counted in ``stats``."""

    @fuzz_settings(examples, derandomize=seed is None, shrink=fail_fast)
    @given(st.sampled_from(list(ports)), _cached_requests(tuple(routes), tuple(tokens)))
    def case(port: int, request: FuzzRequest) -> None:
        before = len(watch.tracebacks)
        answer = send(port, request)
        problems = check_answer(request, answer, secrets)
        problems += [f"traceback logged: {t}" for t in watch.tracebacks[before:]]
        stats.record(request, answer, problems)
        if problems and fail_fast:
            raise AssertionError("; ".join(problems) + f"\nrequest: {request!r}")

    for route in routes:
        for request in explicit_requests(route):
            case = example(port=ports[0], request=request)(case)
    if seed is not None:
        case = hypothesis_seed(seed)(case)
    case()


def healthz(port: int) -> int:
    answer = send(port, FuzzRequest(b"GET", b"/healthz"), timeout=10)
    return answer.status if answer is not None else 0


def draw(strategy: st.SearchStrategy[T], count: int, seed: int | None = None) -> list[T]:
    """``count`` values of ``strategy``, the same ones on every run (``seed`` picks
    another fixed set)."""
    drawn: list[T] = []

    @fuzz_settings(count, derandomize=seed is None, shrink=False)
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    if seed is not None:
        collect = hypothesis_seed(seed)(collect)
    collect()
    return drawn


# -- data-channel events ------------------------------------------------------------------

#: OpenAI's client event types as the relay knows them, but ``session.close``, which ends
#: the call the events are fuzzed on.
CLIENT_EVENT_TYPES = tuple(sorted(KNOWN_CLIENT_EVENTS - {"session.close"}))


@dataclass(frozen=True)
class FuzzEvent:
    """A data-channel message, and the ``error.code`` the relay must answer it with
    (``None``: it must be forwarded to OpenAI)."""

    message: str | bytes
    refused_with: str | None

    def __repr__(self) -> str:
        shown = self.message if len(self.message) <= 300 else self.message[:300]
        return f"FuzzEvent({shown!r} ({len(self.message)} chars), {self.refused_with!r})"


def _event_json(fields: dict[str, Any], ascii_only: bool) -> str:
    return json.dumps(fields, ensure_ascii=ascii_only)


def _sized(event: FuzzEvent, max_bytes: int) -> FuzzEvent:
    """The relay checks size first: anything over its limit is ``event_too_large``."""
    size = (
        len(event.message)
        if isinstance(event.message, bytes)
        else len(event.message.encode("utf-8", "surrogatepass"))
    )
    if isinstance(event.message, str) and size > max_bytes:
        return FuzzEvent(event.message, "event_too_large")
    return event


def _padded(text_event: str, size: int) -> str:
    """``text_event`` (a JSON object) padded with a field to exactly ``size`` bytes."""
    head = text_event[:-1] + (', "pad": "' if text_event != "{}" else '{"pad": "')
    room = size - len(head.encode()) - 2
    return head + "p" * max(0, room) + '"}'


def client_events(max_bytes: int) -> st.SearchStrategy[FuzzEvent]:
    """Events a browser might send, good and bad, for a relay whose event limit is
    ``max_bytes`` (keep it small: a few KiB crosses it cheaply)."""
    plain = st.text(max_size=40)  # no lone surrogates: those are their own kind below
    values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63)
        # Non-finite numbers are refused (invalid_json) before anything else is looked
        # at; test_non_finite_numbers_in_events_are_refused covers them.
        | st.floats(allow_nan=False, allow_infinity=False)
        | plain,
        lambda c: st.lists(c, max_size=4) | st.dictionaries(plain, c, max_size=4),
        max_leaves=12,
    )
    event_type = st.sampled_from(CLIENT_EVENT_TYPES) | st.text(max_size=30)
    fields = st.builds(
        lambda t, extra, event_id: {
            "type": t,
            **({"event_id": event_id} if event_id else {}),
            **{k: v for k, v in extra.items() if k != "type"},
        },
        event_type,
        st.dictionaries(plain, values, max_size=5),
        st.one_of(st.none(), st.text(string.ascii_letters + string.digits + "_", max_size=20)),
    )
    forwarded = st.builds(
        lambda f, ascii_only: FuzzEvent(_event_json(f, ascii_only), None), fields, st.booleans()
    )
    at_limit = st.builds(
        lambda f, under: FuzzEvent(_padded(_event_json(f, True), max_bytes - under), None),
        st.fixed_dictionaries({"type": st.sampled_from(CLIENT_EVENT_TYPES)}),
        st.sampled_from((0, 1)),
    )
    over_limit = st.one_of(
        st.builds(
            lambda f, over: FuzzEvent(
                _padded(_event_json(f, True), max_bytes + over), "event_too_large"
            ),
            st.fixed_dictionaries({"type": event_type}),
            st.sampled_from((1, 2, 100, max_bytes)),
        ),
        # Fewer characters than the limit, more UTF-8 bytes.
        st.just(
            FuzzEvent('{"type": "x", "t": "' + "é" * (max_bytes // 2 + 1) + '"}', "event_too_large")
        ),
    )
    not_an_event = st.one_of(
        values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
        st.dictionaries(plain.filter(lambda k: k != "type"), values, max_size=3).map(json.dumps),
        st.builds(
            lambda t: json.dumps({"type": t}), values.filter(lambda v: not isinstance(v, str))
        ),
    ).map(lambda m: FuzzEvent(m, "invalid_event"))
    lone = st.sampled_from(("\\ud800", "\\udfff", "\\udc00\\ud800", "x\\ud83d"))
    surrogates = st.builds(
        lambda escape, where: FuzzEvent(
            {
                "value": '{"type": "x", "text": "' + escape + '"}',
                "key": '{"type": "x", "' + escape + '": 1}',
                "type": '{"type": "' + escape + '"}',
                "nested": '{"type": "x", "a": [[{"b": "' + escape + '"}]]}',
            }[where],
            "invalid_event",
        ),
        lone,
        st.sampled_from(("value", "key", "type", "nested")),
    )
    paired = st.just(FuzzEvent('{"type": "x", "emoji": "\\ud83d\\ude00"}', None))
    deep = st.builds(
        lambda depth, opener: FuzzEvent(
            '{"type": "x", "d": ' + opener * (depth - 1) + "1" + _closers(opener, depth - 1) + "}",
            None if depth <= 64 else "invalid_event",
        ),
        st.sampled_from((63, 64, 65, 66, 500, 999, 1000, 1001, 2500)),
        st.sampled_from(("[", '{"a": ')),
    )
    invalid = st.one_of(
        forwarded.map(lambda e: e.message[: max(0, len(e.message) - 1)]),
        st.sampled_from(
            (
                "",
                " ",
                "{",
                "{'type': 'x'}",
                '{"type": "x",}',
                '{"type": "x"} {"type": "y"}',
                '{"type": "x" /* c */}',
                '{"type": "x", "t": "\x01"}',
                '{"type": "x", "t": "a\nb"}',
                '{"type": "x", "n": 1' + "0" * 5000 + "}",
                "undefined",
                "\ufeff{}",
            )
        ),
        st.text(max_size=60).filter(_not_json),
    ).map(lambda m: FuzzEvent(m, "invalid_json"))
    binary = st.binary(max_size=200).map(lambda b: FuzzEvent(b, "invalid_event"))
    duplicated = st.just(FuzzEvent('{"type": "a", "type": "response.cancel"}', None))
    kinds = (at_limit, over_limit, not_an_event, surrogates, paired, deep, invalid, binary)
    # About half forwarded, the rest spread over the kinds of refusal (and edge cases).
    return _short_repr(
        st.integers(0, 2 * len(kinds) - 1)
        .flatmap(lambda n: kinds[n] if n < len(kinds) else st.one_of(forwarded, duplicated))
        .map(lambda e: _sized(e, max_bytes))
    )


def _closers(opener: str, depth: int) -> str:
    return ("]" if opener == "[" else "}") * depth


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return True
    return False


def _relay_errors(events: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for event in events:
        if event.get("type") == "error" and str(event.get("event_id", "")).startswith(
            "event_relay"
        ):
            yield event


@dataclass
class EventsOutcome:
    sent: int = 0
    refused: int = 0
    mismatches: list[str] = field(default_factory=list)


async def send_events(
    client: Any, events: Sequence[FuzzEvent], *, timeout: float = 30.0, pace_every: int = 20
) -> EventsOutcome:
    """Send ``events`` on ``client``'s data channel (a ``support.RealtimeClient``), wait
    for the relay's ``error`` event for each refused one, and check each against what
    it must be (same order: the channel is ordered)."""
    outcome = EventsOutcome()
    start = sum(1 for _ in _relay_errors(client.events))
    for index, event in enumerate(events):
        client.channel.send(event.message)
        outcome.sent += 1
        outcome.refused += event.refused_with is not None
        if index % pace_every == pace_every - 1:
            await asyncio.sleep(0.02)  # let the loop breathe: the call's media shares it
    expected = [e for e in events if e.refused_with is not None]
    deadline = time.monotonic() + timeout
    while True:
        errors = list(_relay_errors(client.events))[start:]
        if len(errors) >= len(expected) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    if len(errors) != len(expected):
        outcome.mismatches.append(
            f"{len(expected)} events should have been refused; the relay refused {len(errors)}"
        )
    for event, error in zip(expected, errors, strict=False):
        problem = _error_event_problem(error, event)
        if problem:
            outcome.mismatches.append(problem)
    return outcome


def _error_event_problem(error: dict[str, Any], event: FuzzEvent) -> str | None:
    body = error.get("error")
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return f"not OpenAI's error event shape: {error!r}"
    if {"type", "code", "message", "param"} - set(body):
        return f"error event lacks a field: {error!r}"
    if body.get("code") != event.refused_with:
        return f"{event!r} got {body.get('code')!r}, not {event.refused_with!r}"
    return None
