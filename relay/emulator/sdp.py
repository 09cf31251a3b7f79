"""Offer validation and the answer tweaks that make aiortc's answer look like OpenAI's.

OpenAI rejects offers without an audio m-line (a data channel alone) with
``invalid_offer``; so does the emulator, and also anything aiortc could not apply.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiortc.sdp import SessionDescription

from .errors import invalid_offer

#: OpenAI answers advertise this (protocol notes §2.4); aiortc's own default is 256 KiB.
OPENAI_MAX_MESSAGE_SIZE = 1073741823


@dataclass(frozen=True)
class OfferInfo:
    sdp: str
    has_audio: bool
    has_data_channel: bool
    opus_payload_type: int | None


def check_offer(text: str) -> OfferInfo:
    """Parse an offer as aiortc will; raise ``invalid_offer`` (400) if it is unusable."""
    if not text.strip() or not text.lstrip().startswith("v=0"):
        raise invalid_offer()
    # Browsers and aiortc use CRLF; hand-written offers often do not. aiortc's parser
    # splits on either, but a missing final newline drops the last attribute.
    sdp = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not sdp.endswith("\r\n"):
        sdp += "\r\n"
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises ValueError, KeyError, IndexError...
        raise invalid_offer() from exc
    audio = [m for m in parsed.media if m.kind == "audio" and m.port != 0]
    if not audio:
        raise invalid_offer()
    for media in parsed.media:
        ice = media.ice
        if ice is None or ice.usernameFragment is None or ice.password is None:
            raise invalid_offer()
        if media.dtls is None or not media.dtls.fingerprints:
            raise invalid_offer()
    opus = next(
        (c.payloadType for c in audio[0].rtp.codecs if c.mimeType.lower() == "audio/opus"),
        None,
    )
    return OfferInfo(
        sdp=sdp,
        has_audio=True,
        has_data_channel=any(m.kind == "application" for m in parsed.media),
        opus_payload_type=opus,
    )


def _candidate_address(line: str) -> str | None:
    parts = line.split()
    return parts[4] if len(parts) > 4 else None


def tweak_answer(sdp: str, opus_payload_type: int | None, announce: tuple[str, ...] = ()) -> str:
    """Make aiortc's answer look like OpenAI's:

    * ``a=ice-lite`` at session level: OpenAI's media servers are ICE-lite, which makes
      the client the controlling agent with regular nomination;
    * ``a=fmtp:<pt> minptime=10;useinbandfec=1`` on Opus, as OpenAI answers (aiortc
      sends no fmtp);
    * OpenAI's ``a=max-message-size``;
    * when ``announce`` is set, only host candidates on those addresses.
    """
    lines = sdp.replace("\r\n", "\n").rstrip("\n").split("\n")
    out: list[str] = []
    allowed = {str(ipaddress.ip_address(a)) for a in announce} if announce else None
    in_media = False
    for line in lines:
        if line.startswith("m="):
            in_media = True
        if line.startswith("a=candidate:") and allowed is not None:
            address = _candidate_address(line)
            if address not in allowed:
                continue
        if line.startswith("a=max-message-size:"):
            line = f"a=max-message-size:{OPENAI_MAX_MESSAGE_SIZE}"
        if line == "a=ice-lite":
            continue
        out.append(line)
        if not in_media and line.startswith("t="):
            out.append("a=ice-lite")
        if (
            opus_payload_type is not None
            and line.startswith(f"a=rtpmap:{opus_payload_type} ")
            and line.lower().endswith("opus/48000/2")
        ):
            fmtp = f"a=fmtp:{opus_payload_type} minptime=10;useinbandfec=1"
            if fmtp not in lines and not any(
                x.startswith(f"a=fmtp:{opus_payload_type} ") for x in lines
            ):
                out.append(fmtp)
    return "\r\n".join(out) + "\r\n"
