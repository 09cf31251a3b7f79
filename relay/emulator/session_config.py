"""Session configuration in both dialects: defaults, updates, and the few values the
emulator acts on (schemas: :mod:`relay.emulator.session_schema`).

A session is kept as a dict in its dialect's own wire shape (GA: nested ``audio``;
beta: flat), because that is what ``session.created`` / ``session.updated`` echo and
what ``session.update`` patches. :class:`SessionConfig` reads the effective values
(VAD parameters, voice, modalities, transcription model) from either shape.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ApiError
from .schema import Json, invalid_value
from .session_schema import (
    BETA_SESSION_REQUEST,
    BETA_SESSION_UPDATE,
    GA_SESSION,
    LOGPROBS,
)

Dialect = Literal["ga", "beta"]

#: OpenAI fills in its own instructions, visible in ``session.created``.
DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. "
    "Act like a human, but remember that you aren't a human. Keep your answers short."
)

# --- defaults ---

SERVER_VAD_DEFAULTS: dict[str, Json] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    # The docs say 500, but live default sessions report 200 (protocol notes §4).
    "silence_duration_ms": 200,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Json] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
PCM_FORMAT: dict[str, Json] = {"type": "audio/pcm", "rate": 24000}


def _turn_detection_defaults(kind: str, dialect: Dialect) -> dict[str, Json]:
    if kind == "semantic_vad":
        return dict(SEMANTIC_VAD_DEFAULTS)
    defaults = dict(SERVER_VAD_DEFAULTS)
    if dialect == "ga":
        defaults["idle_timeout_ms"] = None
    return defaults


def ga_defaults(kind: str, model: str) -> dict[str, Json]:
    audio_input: dict[str, Json] = {
        "format": dict(PCM_FORMAT),
        "transcription": None,
        "noise_reduction": None,
        "turn_detection": _turn_detection_defaults("server_vad", "ga"),
    }
    if kind == "transcription":
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "audio": {"input": audio_input},
            "include": None,
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "audio": {
            "input": audio_input,
            "output": {"format": dict(PCM_FORMAT), "voice": "alloy", "speed": 1.0},
        },
        "include": None,
    }


def beta_defaults(model: str) -> dict[str, Json]:
    return {
        "object": "realtime.session",
        "model": model,
        "modalities": ["audio", "text"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": _turn_detection_defaults("server_vad", "beta"),
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tracing": None,
        "include": None,
    }


#: Objects merged key by key by ``session.update``; everything else is replaced whole.
_DEEP = {("audio",), ("audio", "input"), ("audio", "output")}


def _merge(
    base: dict[str, Json], patch: dict[str, Json], dialect: Dialect, where: tuple[str, ...] = ()
) -> None:
    for key, value in patch.items():
        path = (*where, key)
        current = base.get(key)
        if path in _DEEP and isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value, dialect, path)
        elif key == "turn_detection" and isinstance(value, dict):
            kind = value.get("type") or (current or {}).get("type") or "server_vad"
            filled = _turn_detection_defaults(kind, dialect)
            if isinstance(current, dict) and current.get("type") == kind:
                filled.update(current)
            filled.update(value)
            filled["type"] = kind
            base[key] = filled
        elif key == "format" and isinstance(value, dict) and value.get("type") == "audio/pcm":
            base[key] = {"type": "audio/pcm", "rate": value.get("rate", 24000)}
        else:
            base[key] = copy.deepcopy(value)


def _check_modalities(modalities: Json, path: str) -> None:
    if isinstance(modalities, list) and len(set(modalities)) > 1:
        raise ApiError(
            f"Invalid '{path}': it is not possible to request both 'text' and 'audio' at "
            "the same time. Supported values are: ['text'] and ['audio'].",
            "invalid_value",
            path,
        )


def validate_ga_session(value: Json, path: str = "session") -> dict[str, Json]:
    """Validate a GA session object (client secret, multipart ``session`` part,
    ``session.update``); raises :class:`ApiError` with OpenAI's code and param."""
    checked: dict[str, Json] = GA_SESSION.check(value, path)
    if "output_modalities" in checked:
        _check_modalities(checked["output_modalities"], f"{path}.output_modalities")
    return checked


def validate_beta_session(
    value: Json, path: str = "session", *, request: bool = False
) -> dict[str, Json]:  # noqa: E501
    spec = BETA_SESSION_REQUEST if request else BETA_SESSION_UPDATE
    checked: dict[str, Json] = spec.check(value, path)
    return checked


def _as_float(value: Json, default: float) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


@dataclass(frozen=True)
class TurnDetection:
    """The effective VAD parameters of a session."""

    kind: str
    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    create_response: bool
    interrupt_response: bool
    idle_timeout_ms: int | None


#: semantic_vad has no threshold/padding/silence knobs: the emulator approximates its
#: eagerness with the silence it waits for (low waits longest).
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 300}


class SessionConfig:
    """One session's configuration in its dialect's wire shape, plus accessors."""

    def __init__(self, dialect: Dialect, data: dict[str, Json]) -> None:
        self.dialect = dialect
        self.data = data

    # -- construction --

    @classmethod
    def ga(cls, request: dict[str, Json] | None, model: str) -> SessionConfig:
        """A GA session from a validated request (``None``: all defaults)."""
        request = request or {"type": "realtime"}
        kind = str(request.get("type", "realtime"))
        data = ga_defaults(kind, str(request.get("model") or model))
        _merge(data, {k: v for k, v in request.items() if k != "type"}, "ga")
        return cls("ga", data)

    @classmethod
    def beta(cls, request: dict[str, Json] | None, model: str) -> SessionConfig:
        request = dict(request or {})
        request.pop("client_secret", None)
        data = beta_defaults(str(request.get("model") or model))
        _merge(data, request, "beta")
        return cls("beta", data)

    def copy(self) -> SessionConfig:
        return SessionConfig(self.dialect, copy.deepcopy(self.data))

    # -- session.update --

    def validate_update(self, session: Json, *, audio_produced: bool) -> dict[str, Json]:
        """Validate a ``session.update`` payload against this session; the update is
        all-or-nothing, so every check happens before anything changes."""
        if self.dialect == "ga":
            if not isinstance(session, dict) or "type" not in session:
                raise ApiError(
                    "Missing required parameter: 'session.type'.",
                    "missing_required_parameter",
                    "session.type",
                )
            patch = validate_ga_session(session)
            if patch["type"] != self.kind:
                raise invalid_value("session.type", patch["type"], [self.kind])
        else:
            patch = validate_beta_session(session)
        model = patch.get("model")
        if model is not None and model != self.model:
            raise ApiError("Cannot update a session's model.", "invalid_value", "session.model")
        voice = self._patched_voice(patch)
        if audio_produced and voice is not None and voice != self.voice:
            raise ApiError(
                "Cannot update a conversation's voice if assistant audio is present.",
                "cannot_update_voice",
                "session.audio.output.voice" if self.dialect == "ga" else "session.voice",
            )
        return patch

    def apply_update(self, patch: dict[str, Json]) -> None:
        _merge(self.data, {k: v for k, v in patch.items() if k != "type"}, self.dialect)

    def _patched_voice(self, patch: dict[str, Json]) -> str | None:
        if self.dialect == "beta":
            voice = patch.get("voice")
        else:
            voice = ((patch.get("audio") or {}).get("output") or {}).get("voice")
        if isinstance(voice, dict):
            return str(voice.get("id"))
        return voice if isinstance(voice, str) else None

    # -- effective values --

    @property
    def kind(self) -> str:
        """``realtime`` or ``transcription`` (GA); beta sessions are always realtime."""
        return str(self.data.get("type", "realtime"))

    @property
    def model(self) -> str:
        return str(self.data.get("model", ""))

    @property
    def instructions(self) -> str:
        return str(self.data.get("instructions") or "")

    def _input(self) -> dict[str, Json]:
        if self.dialect == "beta":
            return {
                "turn_detection": self.data.get("turn_detection"),
                "transcription": self.data.get("input_audio_transcription"),
                "noise_reduction": self.data.get("input_audio_noise_reduction"),
            }
        audio_input: dict[str, Json] = self.data.get("audio", {}).get("input", {})
        return audio_input

    @property
    def turn_detection(self) -> TurnDetection | None:
        raw = self._input().get("turn_detection")
        if not isinstance(raw, dict):
            return None
        kind = str(raw.get("type", "server_vad"))
        if kind == "semantic_vad":
            eagerness = str(raw.get("eagerness") or "auto")
            return TurnDetection(
                kind=kind,
                threshold=0.5,
                prefix_padding_ms=300,
                silence_duration_ms=SEMANTIC_SILENCE_MS.get(eagerness, 600),
                create_response=bool(raw.get("create_response", True)),
                interrupt_response=bool(raw.get("interrupt_response", True)),
                idle_timeout_ms=None,
            )
        idle = raw.get("idle_timeout_ms")
        return TurnDetection(
            kind=kind,
            threshold=_as_float(raw.get("threshold"), 0.5),
            prefix_padding_ms=int(raw.get("prefix_padding_ms", 300)),
            silence_duration_ms=int(raw.get("silence_duration_ms", 200)),
            create_response=bool(raw.get("create_response", True)),
            interrupt_response=bool(raw.get("interrupt_response", True)),
            idle_timeout_ms=int(idle) if isinstance(idle, int) else None,
        )

    @property
    def transcription_model(self) -> str | None:
        raw = self._input().get("transcription")
        if isinstance(raw, dict):
            return str(raw.get("model") or "whisper-1")
        return None

    @property
    def include_logprobs(self) -> bool:
        include = self.data.get("include")
        return isinstance(include, list) and LOGPROBS in include

    @property
    def voice(self) -> str:
        if self.dialect == "beta":
            return str(self.data.get("voice", "alloy"))
        voice = self.data.get("audio", {}).get("output", {}).get("voice", "alloy")
        return str(voice.get("id")) if isinstance(voice, dict) else str(voice)

    @property
    def speed(self) -> float:
        if self.dialect == "beta":
            return _as_float(self.data.get("speed"), 1.0)
        return _as_float(self.data.get("audio", {}).get("output", {}).get("speed"), 1.0)

    @property
    def output_format(self) -> Json:
        if self.dialect == "beta":
            return self.data.get("output_audio_format", "pcm16")
        return self.data.get("audio", {}).get("output", {}).get("format", dict(PCM_FORMAT))

    @property
    def audio_output(self) -> bool:
        key = "modalities" if self.dialect == "beta" else "output_modalities"
        return "audio" in (self.data.get(key) or ["audio"])

    @property
    def max_output_tokens(self) -> int | None:
        key = "max_response_output_tokens" if self.dialect == "beta" else "max_output_tokens"
        value = self.data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def temperature(self) -> float:
        return _as_float(self.data.get("temperature"), 0.8)

    def public(self, **extra: Json) -> dict[str, Json]:
        """The session object as sent to clients, with ``extra`` (id, expires_at...)."""
        out = copy.deepcopy(self.data)
        out.update(extra)
        return out


def parse_tool_choice(value: Any) -> str | None:
    """The function a response must call (``tool_choice`` names one), or ``None``."""
    if isinstance(value, dict) and value.get("type") == "function":
        return str(value.get("name"))
    return None
