"""The label values of the relay's metrics: every list a label may take, and the
functions that fold anything else into ``other`` so a peer cannot create new series.

The words are those of :mod:`relay.taps`: a ``leg`` is a network hop (``caller`` is
browser <-> relay, ``upstream`` is relay <-> OpenAI), a ``speaker`` is whose audio it is
(``caller`` or ``agent``), and media ``direction`` on a leg is ``in`` (received by the
relay) or ``out`` (sent by it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from relay.taps import Direction

PREFIX: Final = "realtime_relay_"
OTHER: Final = "other"

MediaDirection = Literal["in", "out"]
MEDIA_DIRECTIONS: Final[tuple[MediaDirection, ...]] = ("in", "out")
EVENT_DIRECTIONS: Final[tuple[Direction, ...]] = ("client", "server")

#: How a call ended (the outcomes relay.call uses); anything else counts as ``other``.
OUTCOMES: Final = (
    "hangup",  # POST /v1/realtime/calls/{id}/hangup
    "caller_closed",  # the browser closed its peer connection
    "caller_failed",  # the browser's leg failed (ICE, DTLS)
    "caller_media_timeout",  # no caller audio for media_timeout_secs (a closed tab)
    "caller_dropped",  # the browser's WebSocket died without a close (grace 0)
    "caller_lost",  # the caller's connection failed and it did not resume within the grace
    "upstream_closed",
    "upstream_failed",
    "upstream_session_ended",  # OpenAI closed the data channel (e.g. max duration)
    "max_duration",
    "shutdown",
    "setup_failed",
    "error",
)

#: What carried a call's caller leg (``CallInfo.transport``; see
#: relay.caller.webrtc.transport_of): WebRTC straight to the relay over ``udp`` or
#: ``tcp`` (ICE-TCP), through a TURN server the browser reaches over UDP, TCP or TLS
#: (``turn``: relayed, the browser did not tell how), the ``websocket`` leg, or ``none``
#: (ICE never selected a path).
TRANSPORTS: Final = ("udp", "tcp", "turn-udp", "turn-tcp", "turn-tls", "turn", "websocket", "none")

#: Why an offer did not become a call (``SetupResult.failure``, folded).
SETUP_FAILURE_REASONS: Final = (
    "bad_request",
    "unauthorized",
    "capacity",
    "upstream",
    "ice",
    "timeout",
    "internal",
)
#: The relay's error codes (relay.errors) as setup failure reasons.
_SETUP_REASON_OF_CODE: Final = {
    "invalid_offer": "bad_request",
    "payload_too_large": "bad_request",
    "invalid_value": "bad_request",
    "invalid_api_key": "unauthorized",
    "missing_api_key": "unauthorized",
    "relay_overloaded": "capacity",
    "upstream_error": "upstream",
    "upstream_auth_failed": "upstream",
    "upstream_timeout": "timeout",
}

#: Stages of ``realtime_relay_call_setup_seconds``: ``total`` is offer received to
#: answer sent; ``upstream`` is the part spent minting the key and negotiating with OpenAI.
SETUP_STAGES: Final = ("total", "upstream")

CLIENT_EVENT_TYPES: Final = frozenset(
    {
        "session.update",
        "session.close",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)

SERVER_EVENT_TYPES: Final = frozenset(
    {
        "error",
        "session.created",
        "session.updated",
        "transcription_session.created",
        "transcription_session.updated",
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.text.delta",
        "response.text.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.audio.delta",
        "response.audio.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "rate_limits.updated",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    }
)

#: Error codes seen from OpenAI (``error`` events and HTTP errors) plus the relay's own
#: names for transport failures; ``none`` is an error without a code.
UPSTREAM_ERROR_CODES: Final = frozenset(
    {
        "none",
        "invalid_api_key",
        "invalid_event",
        "invalid_json",
        "invalid_value",
        "unknown_parameter",
        "missing_required_parameter",
        "integer_below_min_value",
        "string_above_max_length",
        "input_audio_buffer_commit_empty",
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "cannot_update_voice",
        "session_expired",
        "invalid_model",
        "missing_model",
        "model_not_found",
        "beta_api_shape_disabled",
        "audio_unintelligible",
        "rate_limit_exceeded",
        "insufficient_quota",
        "server_error",
        "timeout",
        "connection_error",
    }
)
#: The relay's own error codes for a failed set-up with OpenAI (relay.errors), as codes
#: of ``realtime_relay_upstream_errors_total``.
_UPSTREAM_CODE_OF_RELAY_CODE: Final = {
    "upstream_timeout": "timeout",  # no answer in time
    "upstream_auth_failed": "invalid_api_key",  # OpenAI refused the relay's key
    "upstream_error": "connection_error",  # unreachable, HTTP 5xx, or its answer unusable
}

WEBHOOK_EVENTS: Final = ("call.started", "call.ended", "transcript.completed", "error")
#: Why a webhook was given up: every attempt failed, the receiver refused it with a
#: non-retryable status, or the queue was full.
WEBHOOK_FAILURE_REASONS: Final = ("exhausted", "rejected", "dropped")
MONITOR_KINDS: Final = ("events", "listen")
RECORDING_FAILURE_REASONS: Final = ("io", "queue_full")
#: The ``name`` of each of the relay's call observers (``realtime_relay_observer_errors_total``).
OBSERVER_NAMES: Final = ("metrics", "recording", "monitor", "webhooks")
#: The call directory's operations (:class:`relay.cluster.directory.CallDirectory`).
DIRECTORY_OPS: Final = (
    "put_secret",
    "get_secret",
    "register_call",
    "owner",
    "heartbeat",
    "leave",
    "nodes",
    "ping",
)


def fold(value: object, known: Iterable[str]) -> str:
    """``value`` if it is one of ``known``, else ``other``: keeps label sets bounded."""
    return value if isinstance(value, str) and value in known else OTHER


def event_type_label(kind: object) -> str:
    """The ``type`` label of a data-channel event type, folded to a known OpenAI type."""
    if kind in CLIENT_EVENT_TYPES or kind in SERVER_EVENT_TYPES:
        return str(kind)
    return OTHER


def error_code_label(code: object) -> str:
    """The ``code`` label of an upstream error (OpenAI's code or the relay's own), folded."""
    if code is None:
        return "none"
    if isinstance(code, str) and code in _UPSTREAM_CODE_OF_RELAY_CODE:
        return _UPSTREAM_CODE_OF_RELAY_CODE[code]
    return fold(code, UPSTREAM_ERROR_CODES)


def setup_failure_reason(failure: object) -> str:
    """The ``reason`` label of a failed set-up: one of :data:`SETUP_FAILURE_REASONS`
    as is, a relay error code (``RelayError.code``) mapped to one, else ``other``."""
    if isinstance(failure, str) and failure in SETUP_FAILURE_REASONS:
        return failure
    return _SETUP_REASON_OF_CODE.get(str(failure), OTHER)
