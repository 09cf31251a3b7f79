"""Adversarial run 2/8, bad input: undecodable headers, deep JSON, mutated SDP offers,
long paths, big forwarded bodies and candidate floods get a 4xx in OpenAI's error
envelope and one log line, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from relay_fixtures import RelayFactory, RelayUnderTest
from support import RealtimeClient
from test_hostile_security import ADMIN, RELAY_KEY, SECURED, get, raw_request, running_shards

from relay.errors import InvalidOffer, RelayError
from relay.sdp import MAX_CANDIDATES_PER_SECTION, validate_offer
from relay.shards import INTERNAL_HEADER

MAX_SDP = 64 * 1024


def assert_envelope(body: bytes, status: int) -> dict[str, object]:
    assert 400 <= status < 500, (status, body[:300])
    error = json.loads(body)["error"]
    assert {"message", "type", "param", "code"} <= set(error) and error["message"], error
    return error  # type: ignore[no-any-return]


def assert_quiet(caplog: pytest.LogCaptureFixture, most: int = 1) -> None:
    """At most ``most`` log lines at WARNING or above, none with a traceback."""
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) <= most, [r.getMessage()[:200] for r in loud]
    assert not any(r.exc_info for r in caplog.records), [r.getMessage()[:200] for r in loud]


def port_of(relay: RelayUnderTest) -> int:
    return int(relay.server.port or 0)


async def offer_sdp() -> str:
    client = RealtimeClient()
    try:
        return await client.offer()
    finally:
        await client.close()


# -- undecodable headers ---------------------------------------------------------------

BAD_BEARER = b"Authorization: Bearer \xff\xfe\xc3(ek_" + b"0" * 30


@pytest.mark.parametrize(
    "request_line",
    [
        b"POST /v1/realtime/client_secrets",
        b"POST /v1/realtime/calls",
        b"POST /v1/realtime/calls/rtc_" + b"0" * 32 + b"/hangup",
        b"GET /api/calls",
        b"POST /api/realtime/session",
    ],
)
async def test_undecodable_authorization_is_a_401(
    start_relay: RelayFactory, caplog: pytest.LogCaptureFixture, request_line: bytes
) -> None:
    relay = await start_relay(**SECURED)
    answer = await raw_request(port_of(relay), get(request_line, BAD_BEARER))
    assert answer.status in (401, 404), answer
    assert_envelope(answer.body, answer.status)
    assert_quiet(caplog)


async def test_undecodable_shard_and_auth_headers_when_sharded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad_internal = INTERNAL_HEADER.encode() + b": \xff\xfe\x80"
    async with running_shards() as shards:
        for shard in shards:
            answer = await raw_request(shard.port, get("/healthz", bad_internal))
            assert answer.status == 200, answer
            for line in (b"GET /api/calls", b"POST /v1/realtime/calls/rtc_s1_" + b"a" * 32):
                answer = await raw_request(shard.port, get(line, bad_internal, BAD_BEARER))
                assert_envelope(answer.body, answer.status)
            answer = await raw_request(
                shard.port,
                get(b"POST /v1/realtime/calls/rtc_s1_" + b"a" * 32 + b"/hangup", BAD_BEARER),
            )
            assert_envelope(answer.body, answer.status)
    assert not any(r.exc_info for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_undecodable_user_agent_does_not_break_the_call_list(
    start_relay: RelayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await start_relay(**SECURED)
    client = RealtimeClient()
    try:
        offer = (await client.offer()).encode()
        head = get(
            b"POST /v1/realtime/calls",
            b"Authorization: Bearer " + RELAY_KEY.encode(),
            b"User-Agent: Mozilla \xff\xfe\xc3(",
            b"Content-Type: application/sdp",
            b"Content-Length: %d" % len(offer),
        )
        answer = await raw_request(port_of(relay), head + offer)
        assert answer.status == 201, answer
        listed = await relay.http.get(
            relay.url("/api/calls"), headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert listed.status == 200, await listed.text()
        (call,) = (await listed.json())["data"]
        assert call["user_agent"].startswith("Mozilla ")
    finally:
        await client.close()
    assert not any(r.exc_info for r in caplog.records)


# -- deep JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [200, 5_000, 100_000])
async def test_deeply_nested_json_is_a_400(
    start_relay: RelayFactory, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    relay = await start_relay(**SECURED)
    nested = "[" * depth + "]" * depth
    auth = {"Authorization": f"Bearer {RELAY_KEY}"}
    response = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"),
        data='{"session": {"type": "realtime", "tools": ' + nested + "}}",
        headers={**auth, "Content-Type": "application/json"},
    )
    error = assert_envelope(await response.read(), response.status)
    assert error["code"] == "invalid_json"
    # The same as a call's multipart session part.
    form = aiohttp.FormData()
    form.add_field("sdp", await offer_sdp(), content_type="application/sdp")
    form.add_field("session", '{"tools": ' + nested + "}", content_type="application/json")
    response = await relay.http.post(relay.calls_url, data=form, headers=auth)
    assert_envelope(await response.read(), response.status)
    assert len(relay.registry) == 0
    assert_quiet(caplog, most=2)


# -- SDP offers ---------------------------------------------------------------------------


def _mutate(lines: list[str], rnd: random.Random) -> list[str]:
    lines = list(lines)
    index = rnd.randrange(1, len(lines))
    operation = rnd.randrange(5)
    if operation == 0:
        del lines[index]
    elif operation == 1:
        lines.insert(index, lines[rnd.randrange(len(lines))])
    elif operation == 2:
        tokens = lines[index].split(" ")
        tokens[rnd.randrange(len(tokens))] = rnd.choice(["", "x", "-1", "0", "1e99", ":", "é"])
        lines[index] = " ".join(tokens)
    elif operation == 3:
        lines[index] = lines[index][: rnd.randrange(len(lines[index]) + 1)]
    else:
        lines[index] = lines[index].replace(":", "", 1)
    return lines


async def _answer(sdp: str) -> None:
    """What the relay does with an offer that passed validation."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    finally:
        await pc.close()


async def test_mutated_offers_are_refused_or_answerable() -> None:
    """Every offer the relay's check lets through is one aiortc can answer; the rest get
    an ``invalid_offer`` (400) that says why."""
    lines = (await offer_sdp()).strip().split("\r\n")
    rnd = random.Random(2_8)
    refused = 0
    for _ in range(400):
        mutated = _mutate(lines, rnd)
        if rnd.random() < 0.5:
            mutated = _mutate(mutated, rnd)
        try:
            sdp = validate_offer("\r\n".join(mutated) + "\r\n", max_bytes=MAX_SDP)
        except RelayError as exc:
            assert exc.status in (400, 413) and exc.message
            refused += 1
            continue
        await asyncio.wait_for(_answer(sdp), 10)
    assert 20 < refused < 300


def _without(sdp: str, prefix: str) -> str:
    return "".join(
        line + "\r\n" for line in sdp.split("\r\n") if line and not line.startswith(prefix)
    )


async def test_offers_aiortc_cannot_answer_get_a_400(relay: RelayUnderTest) -> None:
    sdp = await offer_sdp()
    broken = [
        _without(sdp, "a=setup:"),
        _without(sdp, "a=fingerprint:"),
        _without(sdp, "a=ice-ufrag:"),
        _without(sdp, "a=mid:"),
        _without(sdp, "m=application"),
        sdp.replace("a=rtpmap:96 opus/48000/2", "a=rtpmap"),
        sdp.replace("a=setup:actpass", "a=setupactpass"),
        sdp.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 7"),
    ]
    for offer in broken:
        response = await relay.http.post(
            relay.calls_url, data=offer, headers={"Content-Type": "application/sdp"}
        )
        error = assert_envelope(await response.read(), response.status)
        assert error["code"] == "invalid_offer" and error["param"] == "sdp"
    assert len(relay.registry) == 0


def _with_candidates(sdp: str, candidates: list[str]) -> str:
    """``sdp`` with its first media section's candidates replaced by ``candidates``."""
    out: list[str] = []
    section = 0
    for line in sdp.strip().split("\r\n"):
        if line.startswith("m="):
            section += 1
            if section == 2:
                out.extend(candidates)
        if line.startswith("a=candidate:"):
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def candidate(address: str, port: int, transport: str = "udp", foundation: int = 1) -> str:
    return f"a=candidate:{foundation} 1 {transport} 2130706431 {address} {port} typ host"


async def test_implausible_candidates_are_dropped() -> None:
    sdp = await offer_sdp()
    implausible = [
        candidate("127.0.0.1", 0),
        candidate("224.0.0.251", 5353),
        candidate("239.1.2.3", 4000),
        candidate("255.255.255.255", 4000),
        candidate("0.0.0.0", 4000),
        candidate("::", 4000),
        candidate("ff02::1", 4000),
        candidate("127.0.0.1", 70000),
        candidate("127.0.0.1", 4000, transport="sctp"),
        candidate("example.com", 4000),
    ]
    kept = [candidate("127.0.0.1", 40000), candidate("abcd.local", 40001, foundation=2)]
    checked = validate_offer(_with_candidates(sdp, implausible + kept), max_bytes=MAX_SDP)
    listed = [line for line in checked.split("\r\n") if line.startswith("a=candidate:")]
    assert listed == kept


async def test_candidate_floods_are_refused(relay: RelayUnderTest) -> None:
    sdp = await offer_sdp()
    flood = [
        candidate("127.0.0.1", 20000 + i, foundation=i)
        for i in range(MAX_CANDIDATES_PER_SECTION + 1)
    ]
    with pytest.raises(InvalidOffer, match="candidates"):
        validate_offer(_with_candidates(sdp, flood), max_bytes=MAX_SDP)
    response = await relay.http.post(
        relay.calls_url,
        data=_with_candidates(sdp, flood * 7),
        headers={"Content-Type": "application/sdp"},
    )
    error = assert_envelope(await response.read(), response.status)
    assert error["code"] == "invalid_offer" and "candidates" in str(error["message"])
    assert len(relay.registry) == 0
    # The cap itself is fine.
    validate_offer(_with_candidates(sdp, flood[:-1]), max_bytes=MAX_SDP)


# -- paths and bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [300, 5_000])
async def test_long_paths_get_a_4xx(
    relay: RelayUnderTest, caplog: pytest.LogCaptureFixture, length: int
) -> None:
    encoded = "%41" * min(length, 2_000)
    for path in (f"/web/{'a' * length}", f"/web/x/{encoded}", f"/{'b' * length}"):
        answer = await raw_request(port_of(relay), get(path))
        assert_envelope(answer.body, answer.status)
    assert_quiet(caplog, most=0)


async def test_requests_the_parser_refuses_log_one_line(
    relay: RelayUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """Beyond aiohttp's parser limits (8190-byte lines) aiohttp answers a plain 400
    itself; it logs one line, not a traceback."""
    for request in (get("/web/" + "%41" * 5_000), get("/healthz", b"X-Big: " + b"h" * 9_000)):
        caplog.clear()
        answer = await raw_request(port_of(relay), request)
        assert answer.status == 400
        assert_quiet(caplog)


async def test_big_forwarded_bodies_get_the_envelope(caplog: pytest.LogCaptureFixture) -> None:
    async with running_shards() as shards, aiohttp.ClientSession() as http:
        for size in (129 * 1024, 1024 * 1024):
            response = await http.post(
                shards[0].url(f"/v1/realtime/calls/rtc_s1_{'c' * 32}/hangup"),
                data=b"x" * size,
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            error = assert_envelope(await response.read(), response.status)
            assert response.status == 413 and error["code"] == "payload_too_large"
    assert not any(r.exc_info for r in caplog.records)
