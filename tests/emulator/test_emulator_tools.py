"""Deterministic tool calls of the emulator: a tool is called when the user's words name
it (or ``tool_choice`` requires it), its arguments stream as deltas, and the emulator
waits for the ``function_call_output``. Valid GA ``response.create`` fields are accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from emulator_helpers import Emulator, index_of

from relay.emulator.conversation import Entry
from relay.emulator.planning import forced_function

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Look up the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {"type": "function", "name": "current_time", "parameters": {"type": "object"}}


def said(text: str) -> list[Entry]:
    content = [{"type": "input_text", "text": text}]
    return [Entry(item={"type": "message", "role": "user", "content": content})]


@pytest.mark.parametrize(
    ("text", "choice", "expected"),
    [
        ("What is the weather in city Paris?", "auto", ("get_weather", {"city": "Paris"})),
        ("please get_weather", "auto", ("get_weather", {})),
        ("Look up the weather in a city", "auto", ("get_weather", {})),
        ("what time is it? current time please", "auto", ("current_time", {})),
        ("hello there", "auto", None),
        ("What is the weather?", "none", None),
        ("hello there", "required", ("get_weather", {})),
        ("hello", {"type": "function", "name": "current_time"}, ("current_time", {})),
    ],
)
def test_tool_choice_is_deterministic(text: str, choice: Any, expected: Any) -> None:
    found = forced_function([WEATHER, TIME], choice, said(text))
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0], json.loads(found[1])) == expected


def test_no_second_call_after_a_function_output() -> None:
    entries = said("weather please") + [
        Entry(item={"type": "function_call_output", "call_id": "c", "output": "sunny"})
    ]
    assert forced_function([WEATHER], "auto", entries) is None


async def test_words_call_a_tool_then_the_output_is_spoken(emulator: Emulator) -> None:
    session = {"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER]}
    async with emulator.call(session=session) as client:
        await client.wait_for("session.created")
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "weather in city Oslo"}],
                },
            }
        )
        client.send(
            {
                "type": "response.create",
                "response": {"reasoning": {"effort": "low"}, "parallel_tool_calls": False},
            }
        )
        done = await client.wait_for("response.done")
        assert done["response"]["status"] == "completed"
        call = done["response"]["output"][0]
        assert call["type"] == "function_call" and call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == {"city": "Oslo"}
        deltas = [
            e["delta"]
            for e in client.events
            if e["type"] == "response.function_call_arguments.delta"
        ]
        assert "".join(deltas) == call["arguments"]
        # it waits: no other response until the output and a response.create
        assert client.types().count("response.created") == 1
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": "cold",
                },
            }
        )
        client.send({"type": "response.create"})
        after = index_of(client.types(), "response.done") + 1
        final = await client.wait_for("response.done", after=after)
        assert final["response"]["output"][0]["content"][0]["text"] == "The tool returned: cold"
        assert "error" not in client.types()
