"""Checks on SDP offers before any peer connection is made for them.

An offer aiortc could not answer gets a 400 that says why (rather than an error deep
in aiortc), and the ICE candidates the relay will check are few and plausible: a caller
cannot make it send connectivity checks to hundreds of ports, or to multicast and
broadcast addresses."""

from __future__ import annotations

import ipaddress
import logging
import re

from aioice import Candidate
from aiortc.sdp import MediaDescription, SessionDescription

from .errors import InvalidOffer, PayloadTooLarge

logger = logging.getLogger(__name__)

MAX_MEDIA_SECTIONS = 8
MAX_CANDIDATES_PER_SECTION = 32
_CANDIDATE = "a=candidate:"
_TRANSPORTS = ("udp", "tcp")
#: mDNS names, as browsers give for host candidates instead of private addresses.
_MDNS_NAME = re.compile(r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.local")
_KINDS = ("audio", "video", "application")


def validate_offer(sdp: str, *, max_bytes: int) -> str:
    """Return the offer as the relay will use it (CRLF line ends, implausible candidates
    left out), or raise a 4xx error that says why it cannot be used."""
    if len(sdp.encode("utf-8", "surrogatepass")) > max_bytes:
        raise PayloadTooLarge(f"SDP offer is larger than {max_bytes} bytes.")
    text = sdp.strip()
    if not text.startswith("v=0"):
        raise _invalid("it must start with 'v=0'")
    if "\x00" in text:
        raise _invalid("it contains NUL bytes")
    # Lines as aiortc splits them (str.splitlines), so that what is checked here is
    # what aiortc reads.
    lines = _plausible_candidates(text.splitlines())
    offer = "\r\n".join(lines) + "\r\n"
    _check_answerable(offer)
    return offer


def _invalid(reason: str) -> InvalidOffer:
    return InvalidOffer(f"Invalid SDP offer: {reason}.", param="sdp")


def _plausible_candidates(lines: list[str]) -> list[str]:
    """``lines`` without implausible candidates; too many in one section is an error."""
    kept: list[str] = []
    section, listed, dropped = 0, 0, 0
    for line in lines:
        if line.startswith("m="):
            section, listed = section + 1, 0
            if section > MAX_MEDIA_SECTIONS:
                raise _invalid(f"it has more than {MAX_MEDIA_SECTIONS} media sections")
        elif line.startswith(_CANDIDATE):
            listed += 1
            if listed > MAX_CANDIDATES_PER_SECTION:
                raise _invalid(
                    f"media section {section} lists more than {MAX_CANDIDATES_PER_SECTION} "
                    "ICE candidates"
                )
            if not _plausible(line[len(_CANDIDATE) :]):
                dropped += 1
                continue
        kept.append(line)
    if dropped:
        logger.info("offer: left out %d implausible ICE candidate(s)", dropped)
    return kept


def _plausible(value: str) -> bool:
    """A candidate the relay could reach: UDP or TCP, a real port, a unicast address
    (or a browser's mDNS name)."""
    try:
        candidate = Candidate.from_sdp(value)
    except (ValueError, IndexError):
        return False
    if candidate.transport.lower() not in _TRANSPORTS or not 0 < candidate.port < 65536:
        return False
    if candidate.component not in (1, 2):
        return False
    try:
        address = ipaddress.ip_address(candidate.host)
    except ValueError:
        return _MDNS_NAME.fullmatch(candidate.host) is not None
    if address.is_multicast or address.is_unspecified:
        return False
    return not (address.version == 4 and address.is_reserved)  # 240/4, broadcast


def _check_answerable(offer: str) -> None:
    """Raise :class:`InvalidOffer` unless aiortc can parse ``offer`` and answer it."""
    try:
        parsed = SessionDescription.parse(offer)
    except Exception as exc:  # aiortc's parser raises ValueError, KeyError, AttributeError...
        raise _invalid(f"it could not be parsed ({type(exc).__name__})") from None
    if not any(media.kind == "audio" for media in parsed.media):
        raise _invalid(
            "it has no audio m-line. Add a microphone track (or a recvonly audio "
            "transceiver) before creating the offer"
        )
    mids: set[str] = set()
    for number, media in enumerate(parsed.media, start=1):
        problem = _media_problem(media)
        mid = media.rtp.muxId
        if problem is None and mid in mids:
            problem = f"repeats a=mid:{mid}"
        if problem is not None:
            raise _invalid(f"media section {number} ({media.kind}) {problem}")
        mids.add(mid)
    for group in parsed.group:
        unknown = [str(mid) for mid in group.items if str(mid) not in mids]
        if unknown:
            raise _invalid(f"a=group:{group.semantic} names unknown mid {unknown[0]}")


def _media_problem(media: MediaDescription) -> str | None:
    """Why aiortc could not answer this media section, if it could not."""
    if media.kind not in _KINDS:
        return "is of an unknown kind"
    if not media.rtp.muxId:
        return "has no a=mid"
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
        return "lacks a=ice-ufrag or a=ice-pwd"
    if media.dtls is None:
        return "lacks a=setup"
    if not media.dtls.fingerprints:
        return "lacks a=fingerprint"
    if media.kind == "application":
        return None
    if not media.rtcp_mux:
        return "lacks a=rtcp-mux"
    if media.direction is None:
        return "has no direction (a=sendrecv, a=sendonly, a=recvonly or a=inactive)"
    return None


def offer_sends_audio(sdp: str) -> bool:
    """Whether the offerer sends audio (an audio m-section that is sendrecv or sendonly)."""
    sections = re.split(r"\r?\n(?=m=)", sdp)
    for section in sections:
        if not section.startswith("m=audio"):
            continue
        if re.search(r"^a=(recvonly|inactive)\s*$", section, re.MULTILINE) is None:
            return True
    return False
