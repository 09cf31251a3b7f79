"""Request schemas of the Realtime API (both dialects), as OpenAI validates them.

Sources: openai-python ``types/realtime`` (GA) and ``types/beta/realtime`` (beta), and
the OpenAPI spec's ``RealtimeSessionCreateRequestGA``; see protocol notes §1 and §3.
"""

from __future__ import annotations

from .schema import (
    AnyObject,
    Bool,
    Enum,
    Int,
    ListOf,
    Nullable,
    Num,
    Obj,
    OneOf,
    Str,
    Tagged,
)

#: Voices of both dialects; GA added two, the beta had three more of its own.
_SHARED_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse")
GA_VOICES = (*_SHARED_VOICES, "marin", "cedar")
BETA_VOICES = (*_SHARED_VOICES, "fable", "onyx", "nova")
BETA_MODELS = (
    "gpt-4o-realtime-preview",
    "gpt-4o-realtime-preview-2024-10-01",
    "gpt-4o-realtime-preview-2024-12-17",
    "gpt-4o-realtime-preview-2025-06-03",
    "gpt-4o-mini-realtime-preview",
    "gpt-4o-mini-realtime-preview-2024-12-17",
    "gpt-realtime",
    "gpt-realtime-2025-08-28",
)
TRANSCRIPTION_MODELS = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize",
    "gpt-realtime-whisper",
    "gpt-transcribe",
    "gpt-live-transcribe",
)
LOGPROBS = "item.input_audio_transcription.logprobs"

# --- GA schema (openai-python types/realtime, OpenAPI RealtimeSessionCreateRequestGA) ---

_FORMAT = Tagged(
    {
        # Only 24 kHz is accepted; 16 kHz gets integer_below_min_value (observed).
        "audio/pcm": Obj({"type": Enum("audio/pcm"), "rate": Int(24000, 24000)}),
        "audio/pcmu": Obj({"type": Enum("audio/pcmu")}),
        "audio/pcma": Obj({"type": Enum("audio/pcma")}),
    }
)
_TRANSCRIPTION = Obj(
    {
        "model": Enum(*TRANSCRIPTION_MODELS),
        "language": Nullable(Str()),
        "prompt": Nullable(Str()),
        "delay": Enum("minimal", "low", "medium", "high", "xhigh"),
        "keywords": ListOf(Str()),
        "languages": ListOf(Str()),
    }
)
_NOISE_REDUCTION = Obj({"type": Enum("near_field", "far_field"), "strength": Num(0, 1)})
_SERVER_VAD_FIELDS = {
    "type": Enum("server_vad"),
    "threshold": Num(0, 1),
    "prefix_padding_ms": Int(0, 10_000),
    "silence_duration_ms": Int(0, 10_000),
    "create_response": Bool(),
    "interrupt_response": Bool(),
}
_SEMANTIC_VAD_FIELDS = {
    "type": Enum("semantic_vad"),
    "eagerness": Enum("low", "medium", "high", "auto"),
    "create_response": Bool(),
    "interrupt_response": Bool(),
}
_GA_TURN_DETECTION = Nullable(
    Tagged(
        {
            "server_vad": Obj(
                {**_SERVER_VAD_FIELDS, "idle_timeout_ms": Nullable(Int(5000, 30_000))}
            ),
            "semantic_vad": Obj(_SEMANTIC_VAD_FIELDS),
        }
    )
)
_GA_INPUT = Obj(
    {
        "format": _FORMAT,
        "transcription": Nullable(_TRANSCRIPTION),
        "noise_reduction": Nullable(_NOISE_REDUCTION),
        "turn_detection": _GA_TURN_DETECTION,
    }
)
_GA_OUTPUT = Obj(
    {
        "format": _FORMAT,
        "voice": OneOf(Enum(*GA_VOICES), Obj({"id": Str(min_length=1)}, ["id"])),
        "speed": Num(0.25, 1.5),
    }
)
_FUNCTION_TOOL = Obj(
    {
        "type": Enum("function"),
        "name": Str(max_length=64, min_length=1),
        "description": Str(max_length=1024),
        "parameters": AnyObject(),
    },
    ["name"],
)
# MCP tools have many optional knobs; the emulator never calls them, so only the
# fields that identify one are checked.
_MCP_TOOL = Obj(
    {"type": Enum("mcp"), "server_label": Str(min_length=1)}, ["server_label"], allow_extra=True
)
_GA_TOOLS = ListOf(Tagged({"function": _FUNCTION_TOOL, "mcp": _MCP_TOOL}, default="function"))
_GA_TOOL_CHOICE = OneOf(
    Enum("auto", "none", "required"),
    Tagged(
        {
            "function": Obj({"type": Enum("function"), "name": Str()}, ["name"]),
            "mcp": Obj(
                {"type": Enum("mcp"), "server_label": Str(), "name": Nullable(Str())},
                ["server_label"],
            ),
        }
    ),
)
_TRACING = Nullable(
    OneOf(
        Enum("auto"),
        Obj({"workflow_name": Str(), "group_id": Str(), "metadata": AnyObject()}),
    )
)
_TRUNCATION = OneOf(
    Enum("auto", "disabled"),
    Obj(
        {
            "type": Enum("retention_ratio"),
            "retention_ratio": Num(0, 1),
            "token_limits": Obj({"post_instructions": Nullable(Int(0))}),
        },
        ["type", "retention_ratio"],
    ),
)
_PROMPT = Nullable(
    Obj({"id": Str(min_length=1), "version": Nullable(Str()), "variables": AnyObject()}, ["id"])
)
_MAX_OUTPUT_TOKENS = OneOf(Int(1, 4096), Enum("inf"))
_INCLUDE = Nullable(ListOf(Enum(LOGPROBS)))

_GA_REALTIME = Obj(
    {
        "type": Enum("realtime"),
        "model": Str(min_length=1),
        "instructions": Str(),
        "output_modalities": ListOf(Enum("text", "audio"), max_items=2),
        "audio": Obj({"input": _GA_INPUT, "output": _GA_OUTPUT}),
        "include": _INCLUDE,
        "tracing": _TRACING,
        "tools": _GA_TOOLS,
        "tool_choice": _GA_TOOL_CHOICE,
        "max_output_tokens": _MAX_OUTPUT_TOKENS,
        "truncation": _TRUNCATION,
        "prompt": _PROMPT,
        "reasoning": Nullable(Obj({"effort": Enum("minimal", "low", "medium", "high", "xhigh")})),
        "parallel_tool_calls": Bool(),
    }
)
_GA_TRANSCRIPTION = Obj(
    {
        "type": Enum("transcription"),
        "audio": Obj({"input": _GA_INPUT}),
        "include": _INCLUDE,
    }
)
GA_SESSION = Tagged({"realtime": _GA_REALTIME, "transcription": _GA_TRANSCRIPTION})

GA_CLIENT_SECRET_REQUEST = Obj(
    {
        "expires_after": Obj({"anchor": Enum("created_at"), "seconds": Int(10, 7200)}, ["seconds"]),
        "session": AnyObject(),  # checked with GA_SESSION for a precise param path
    }
)

# --- Beta schema (flat; openai-python types/beta/realtime/session_create_params.py) ---

_BETA_AUDIO_FORMAT = Enum("pcm16", "g711_ulaw", "g711_alaw")
_BETA_FIELDS = {
    "model": Enum(*BETA_MODELS),
    "modalities": ListOf(Enum("text", "audio"), max_items=2),
    "instructions": Str(),
    "voice": Enum(*BETA_VOICES),
    "input_audio_format": _BETA_AUDIO_FORMAT,
    "output_audio_format": _BETA_AUDIO_FORMAT,
    "input_audio_transcription": Nullable(
        Obj(
            {
                "model": Enum(*TRANSCRIPTION_MODELS),
                "language": Nullable(Str()),
                "prompt": Nullable(Str()),
            }
        )
    ),
    "input_audio_noise_reduction": Nullable(Obj({"type": Enum("near_field", "far_field")})),
    "turn_detection": Nullable(
        Tagged(
            {
                "server_vad": Obj(_SERVER_VAD_FIELDS),
                "semantic_vad": Obj(_SEMANTIC_VAD_FIELDS),
            },
            default="server_vad",
        )
    ),
    "tools": ListOf(_FUNCTION_TOOL),
    # The beta echoes tool_choice as a plain string ("auto", "none", "required" or a
    # function's name); openai-python's beta Session type says the same.
    "tool_choice": Str(min_length=1),
    "temperature": Num(0.6, 1.2),
    "max_response_output_tokens": _MAX_OUTPUT_TOKENS,
    "speed": Num(0.25, 1.5),
    "tracing": _TRACING,
    "include": _INCLUDE,
}
BETA_SESSION_UPDATE = Obj(_BETA_FIELDS)
BETA_SESSION_REQUEST = Obj(
    {
        **_BETA_FIELDS,
        "client_secret": Obj(
            {
                "expires_after": Obj(
                    {"anchor": Enum("created_at"), "seconds": Int(10, 7200)}, ["anchor"]
                )
            }
        ),
    }
)


# --- response.create parameters ---

GA_RESPONSE = Obj(
    {
        "output_modalities": ListOf(Enum("text", "audio"), max_items=2),
        "instructions": Str(),
        "audio": Obj({"output": Obj({"format": _FORMAT, "voice": _GA_OUTPUT.fields["voice"]})}),
        "tools": _GA_TOOLS,
        "tool_choice": _GA_TOOL_CHOICE,
        "max_output_tokens": _MAX_OUTPUT_TOKENS,
        "conversation": Str(min_length=1),
        "metadata": Nullable(AnyObject()),
        "input": ListOf(AnyObject()),
        "prompt": _PROMPT,
        "reasoning": _GA_REALTIME.fields["reasoning"],
        "parallel_tool_calls": Bool(),
        "tracing": _TRACING,
        "truncation": _TRUNCATION,
    }
)
BETA_RESPONSE = Obj(
    {
        "modalities": ListOf(Enum("text", "audio"), max_items=2),
        "instructions": Str(),
        "voice": Enum(*BETA_VOICES),
        "output_audio_format": _BETA_AUDIO_FORMAT,
        "tools": ListOf(_FUNCTION_TOOL),
        "tool_choice": Str(min_length=1),
        "temperature": Num(0.6, 1.2),
        "max_response_output_tokens": _MAX_OUTPUT_TOKENS,
        "conversation": Str(min_length=1),
        "metadata": Nullable(AnyObject()),
        "input": ListOf(AnyObject()),
    }
)
