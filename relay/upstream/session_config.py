"""Session configs: defaults, merging, and the GA -> beta translation."""

from __future__ import annotations

import copy
from typing import Any

from ..errors import InvalidRequest


def complete_session(session: dict[str, Any] | None, default_model: str) -> dict[str, Any]:
    """A GA ``realtime`` session config with ``type`` and ``model`` filled in."""
    if session is None:
        session = {}
    if not isinstance(session, dict):
        raise InvalidRequest("'session' must be an object.", code="invalid_type", param="session")
    result = copy.deepcopy(session)
    result.setdefault("type", "realtime")
    if result["type"] == "realtime":
        result.setdefault("model", default_model)
    return result


def merge_sessions(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, recursively for objects."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sessions(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def to_beta_session(session: dict[str, Any]) -> dict[str, Any]:
    """The beta dialect's flat session for a GA session config."""
    audio = session.get("audio") or {}
    audio_in = audio.get("input") or {}
    audio_out = audio.get("output") or {}
    beta: dict[str, Any] = {"model": session.get("model")}
    copies = {
        "instructions": session.get("instructions"),
        "voice": audio_out.get("voice"),
        "speed": audio_out.get("speed"),
        "input_audio_transcription": audio_in.get("transcription"),
        "turn_detection": audio_in.get("turn_detection"),
        "input_audio_noise_reduction": audio_in.get("noise_reduction"),
        "tools": session.get("tools"),
        "tool_choice": session.get("tool_choice"),
        "max_response_output_tokens": session.get("max_output_tokens"),
        "tracing": session.get("tracing"),
    }
    beta.update({k: v for k, v in copies.items() if v is not None})
    if "turn_detection" in audio_in and audio_in["turn_detection"] is None:
        beta["turn_detection"] = None
    modalities = session.get("output_modalities")
    if modalities:
        beta["modalities"] = ["text"] if modalities == ["text"] else ["text", "audio"]
    return beta
