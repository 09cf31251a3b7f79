"""What a response will do, decided when it is created (a :class:`ResponsePlan`).

The agent's reply is derived from the last input: ``"You spoke for 2.3 seconds."``,
``"You said: <text>"``, ``"The tool returned: <output>"``... A response's
``instructions`` containing a line ``Say: <text>`` make it say exactly ``<text>`` (a
hook for tests that need a given reply length). A user message asking ``what did I say
first?`` (or ``before``) is answered from the conversation's items: ``"Earlier you said:
<the first (or the previous) user message>"``, so a test can tell what a session knows.

Tool calls are deterministic: a function is called when ``tool_choice`` requires it
(``required`` or naming it), or, with ``auto``, when the last user message's words name
it: its name (``get_weather``, ``get weather``), a word of its name of four letters or
more (``weather``), or its whole description. The arguments are ``{}`` plus, for each
string parameter the user's words name as ``<parameter> <value>`` or
``<parameter>: <value>``, that value. The response then ends (``status: completed``)
and the emulator waits for a ``function_call_output`` and a ``response.create``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import ids
from .conversation import Conversation, Entry, validate_client_item
from .hearing import answer
from .responses import INPUT_AUDIO_MS_PER_TOKEN, ResponsePlan, text_tokens
from .schema import invalid_value
from .session_config import SessionConfig, parse_tool_choice
from .session_schema import BETA_RESPONSE, GA_RESPONSE

MAX_REPLY_CHARS = 400
_SAY = re.compile(r"^\s*say:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_RECALL = re.compile(r"\bwhat did i (?:just )?say (first|before)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Asked:
    """A ``response.create``'s own output settings, whatever the dialect calls them."""

    modalities: Any
    voice: Any
    output_format: Any
    max_output_tokens: Any

    @classmethod
    def of(cls, params: dict[str, Any], ga: bool) -> _Asked:
        if not ga:
            return cls(
                params.get("modalities"),
                params.get("voice"),
                params.get("output_audio_format"),
                params.get("max_response_output_tokens"),
            )
        output = (params.get("audio") or {}).get("output") or {}
        voice = output.get("voice")
        return cls(
            params.get("output_modalities"),
            voice.get("id") if isinstance(voice, dict) else voice,
            output.get("format"),
            params.get("max_output_tokens"),
        )


def _is_user_audio(entry: Entry) -> bool:
    item = entry.item
    parts = item.get("content") or []
    return item.get("role") == "user" and any(p.get("type") == "input_audio" for p in parts)


def _input_tokens(instructions: str, entries: list[Entry]) -> tuple[int, int]:
    """Estimated (text, audio) input tokens of a response."""
    text, audio = text_tokens(instructions), 0
    for entry in entries:
        if _is_user_audio(entry):
            audio += entry.audio_ms // INPUT_AUDIO_MS_PER_TOKEN
        else:
            text += text_tokens(json.dumps(entry.item.get("content") or ""))
    return text, audio


def plan_response(
    config: SessionConfig, params: dict[str, Any], entries: list[Entry]
) -> ResponsePlan:
    """The plan of a response to ``entries`` (the conversation, or the response's own
    ``input``), with ``params`` from ``response.create`` (``{}`` for automatic ones)."""
    asked = _Asked.of(params, config.dialect == "ga")
    modalities = asked.modalities
    max_tokens = asked.max_output_tokens
    text_in, audio_in = _input_tokens(
        str(params.get("instructions") or config.instructions), entries
    )
    metadata = params.get("metadata")
    return ResponsePlan(
        response_id=ids.response_id(),
        audio=("audio" in modalities) if isinstance(modalities, list) else config.audio_output,
        text=reply_text(str(params.get("instructions") or ""), entries),
        voice=str(asked.voice or config.voice),
        speed=config.speed,
        output_format=config.output_format if asked.output_format is None else asked.output_format,
        temperature=config.temperature,
        in_conversation=params.get("conversation", "auto") != "none",
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else config.max_output_tokens,
        input_text_tokens=text_in,
        input_audio_tokens=audio_in,
        metadata=metadata if isinstance(metadata, dict) else None,
        function=forced_function(
            params.get("tools", config.data.get("tools")) or [],
            params.get("tool_choice", config.data.get("tool_choice", "auto")),
            entries,
        ),
    )


def check_response_request(
    config: SessionConfig, conversation: Conversation, params: Any
) -> tuple[dict[str, Any], list[Entry] | None]:
    """A ``response.create``'s ``response`` as OpenAI validates it, and the response's
    own ``input`` items (``None``: it answers the conversation)."""
    spec = GA_RESPONSE if config.dialect == "ga" else BETA_RESPONSE
    checked: dict[str, Any] = spec.check(params or {}, "response")
    conversation_mode = checked.get("conversation", "auto")
    if conversation_mode not in ("auto", "none"):
        raise invalid_value("response.conversation", conversation_mode, ["auto", "none"])
    modalities = checked.get("output_modalities", checked.get("modalities"))
    if config.dialect == "ga" and isinstance(modalities, list) and len(set(modalities)) > 1:
        raise invalid_value("response.output_modalities", modalities, ["audio", "text"])
    if "input" not in checked:
        return checked, None
    entries = []
    for index, value in enumerate(checked["input"]):
        if value.get("type") == "item_reference":
            entries.append(conversation.require(value.get("id"), f"response.input[{index}].id"))
        else:
            item, audio = validate_client_item(value, config.dialect)
            entries.append(Entry(item=item, audio=audio))
    return checked, entries


def forced_function(
    tools: list[Any], tool_choice: Any, entries: list[Entry]
) -> tuple[str, str] | None:
    """The function a response calls (see the module's doc), unless the last input
    already is a function result; ``None``: it speaks."""
    functions = [
        t
        for t in tools
        if isinstance(t, dict) and t.get("type", "function") == "function" and t.get("name")
    ]
    if not functions or tool_choice == "none":
        return None
    if entries and entries[-1].item.get("type") == "function_call_output":
        return None
    said = _last_user_text(entries)
    named = parse_tool_choice(tool_choice)
    if named is None and isinstance(tool_choice, str) and tool_choice not in ("auto", "required"):
        named = tool_choice  # beta: a function name as a string
    if named is not None:
        tool = next((t for t in functions if t["name"] == named), functions[0])
    elif tool_choice == "required":
        tool = next((t for t in functions if _names_tool(said, t)), functions[0])
    else:
        found = next((t for t in functions if _names_tool(said, t)), None)
        if found is None:
            return None
        tool = found
    return str(tool["name"]), json.dumps(_arguments(tool, said))


_WORD = re.compile(r"[a-z0-9]+")


def _last_user_text(entries: list[Entry]) -> str:
    """The words of the last user message (its text, or its audio's transcript)."""
    for entry in reversed(entries):
        item = entry.item
        if item.get("type") != "message" or item.get("role") != "user":
            continue
        parts = item.get("content") or []
        texts = [
            str(p.get("text") or p.get("transcript") or "") for p in parts if isinstance(p, dict)
        ]
        return " ".join(texts)
    return ""


def _names_tool(said: str, tool: dict[str, Any]) -> bool:
    text = said.lower()
    if not text.strip():
        return False
    name = str(tool["name"]).lower()
    words = set(_WORD.findall(text))
    name_words = [w for w in _WORD.findall(name.replace("_", " ")) if len(w) >= 4]
    description = str(tool.get("description") or "").lower().strip()
    return (
        name in text
        or name.replace("_", " ") in text
        or any(w in words for w in name_words)
        or (bool(description) and description in text)
    )


def _arguments(tool: dict[str, Any], said: str) -> dict[str, str]:
    """String parameters the user named (``city Paris``, ``city: Paris``)."""
    parameters = tool.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict):
        return {}
    found = {}
    for name, schema in properties.items():
        if not isinstance(schema, dict) or schema.get("type", "string") != "string":
            continue
        match = re.search(rf"\b{re.escape(str(name))}\s*:?\s+([\w'-]+)", said, re.IGNORECASE)
        if match:
            found[str(name)] = match.group(1)
    return found


def _reply_to(entry: Entry) -> str | None:
    """The reply to one input item, or ``None`` if it is not one the agent answers."""
    item = entry.item
    if item.get("type") == "function_call_output":
        return f"The tool returned: {item.get('output', '')}"
    if item.get("type") != "message" or item.get("role") != "user":
        return None
    texts = [p.get("text", "") for p in item.get("content") or [] if p.get("type") == "input_text"]
    if texts:
        return f"You said: {' '.join(texts)}"
    if entry.extra.get("idle"):
        return "Are you still there?"
    heard = answer(entry.extra.get("heard") or "")
    if heard is not None:  # recognised words (EmulatorSettings.recognition)
        return heard
    speech_ms = int(entry.extra.get("speech_ms", entry.audio_ms))
    if speech_ms > 0:
        return f"You spoke for {speech_ms / 1000.0:.1f} seconds."
    return "Sorry, I did not hear anything."


def _user_words(entry: Entry) -> str:
    item = entry.item
    if item.get("type") != "message" or item.get("role") != "user":
        return ""
    parts = [p for p in item.get("content") or [] if isinstance(p, dict)]
    return " ".join(str(p.get("text") or p.get("transcript") or "") for p in parts).strip()


def _recall(asked: Entry, before: list[Entry]) -> str | None:
    """The answer to "what did I say first/before?" from the earlier user messages."""
    match = _RECALL.search(_user_words(asked))
    if match is None:
        return None
    earlier = [words for words in map(_user_words, before) if words]
    if not earlier:
        return "You have not said anything before."
    return f"Earlier you said: {earlier[0] if match.group(1).lower() == 'first' else earlier[-1]}"


def reply_text(instructions: str, entries: list[Entry]) -> str:
    """What the agent says: a ``Say:`` line of the instructions, else a reply to the
    last input it answers (a recall question: from the items before it), else a
    greeting."""
    said = _SAY.search(instructions)
    if said:
        return said.group(1).strip()[:MAX_REPLY_CHARS]
    for index in range(len(entries) - 1, -1, -1):
        reply = _reply_to(entries[index])
        if reply is not None:
            recalled = _recall(entries[index], entries[:index])
            return (recalled or reply)[:MAX_REPLY_CHARS]
    return "Hello! How can I help you today?"
