"""Checks on SDP offers before any peer connection is made for them."""

from __future__ import annotations

import re

from .errors import InvalidOffer, PayloadTooLarge

_MEDIA_LINE = re.compile(r"^m=(\w+) \d+ \S+", re.MULTILINE)


def validate_offer(sdp: str, *, max_bytes: int) -> str:
    """Return a normalised offer (CRLF line ends), or raise a 4xx error that says why."""
    if len(sdp.encode("utf-8", "replace")) > max_bytes:
        raise PayloadTooLarge(f"SDP offer is larger than {max_bytes} bytes.")
    text = sdp.strip()
    if not text.startswith("v=0"):
        raise InvalidOffer("Invalid SDP offer: it must start with 'v=0'.", param="sdp")
    if "\x00" in text:
        raise InvalidOffer("Invalid SDP offer: it contains NUL bytes.", param="sdp")
    kinds = _MEDIA_LINE.findall(text)
    if "audio" not in kinds:
        raise InvalidOffer(
            "Invalid SDP offer: it has no audio m-line. Add a microphone track "
            "(or a recvonly audio transceiver) before creating the offer.",
            param="sdp",
        )
    lines = [line.rstrip("\r") for line in text.split("\n")]
    return "\r\n".join(lines) + "\r\n"


def offer_sends_audio(sdp: str) -> bool:
    """Whether the offerer sends audio (an audio m-section that is sendrecv or sendonly)."""
    sections = re.split(r"\r?\n(?=m=)", sdp)
    for section in sections:
        if not section.startswith("m=audio"):
            continue
        if re.search(r"^a=(recvonly|inactive)\s*$", section, re.MULTILINE) is None:
            return True
    return False
