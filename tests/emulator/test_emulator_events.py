"""The ``oai-events`` protocol on real calls: session.update, text turns, items,
errors (never fatal), and the session duration cap."""

from __future__ import annotations

import asyncio

from emulator_helpers import Emulator, in_order, index_of

TEXT_TURN_GA = [
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
    "rate_limits.updated",
]


async def test_session_created_first_then_update(emulator: Emulator) -> None:
    async with emulator.call() as client:
        created = await client.wait_for("session.created")
        assert client.events[0] is created
        session = created["session"]
        assert session["type"] == "realtime" and session["id"].startswith("sess_")
        assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200
        assert session["expires_at"] > 0

        client.send(
            {
                "type": "session.update",
                "event_id": "evt_ok",
                "session": {
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "audio": {
                        "input": {
                            "turn_detection": {"type": "server_vad", "threshold": 0.7},
                            "transcription": {"model": "whisper-1"},
                        }
                    },
                },
            }
        )
        updated = (await client.wait_for("session.updated"))["session"]
        assert "evt_ok" not in str(updated)
        assert updated["instructions"] == "Be brief."
        vad = updated["audio"]["input"]["turn_detection"]
        assert vad["threshold"] == 0.7 and vad["prefix_padding_ms"] == 300
        assert updated["audio"]["output"]["voice"] == "alloy"  # deep merge kept it

        # Invalid updates are rejected whole, with the client's event_id echoed.
        bad = [
            ({"instructions": "x"}, "missing_required_parameter", "session.type"),
            ({"type": "realtime", "voice": "ash"}, "unknown_parameter", "session.voice"),
            (
                {"type": "realtime", "instructions": "changed", "output_modalities": ["x"]},
                "invalid_value",
                "session.output_modalities[0]",
            ),
        ]
        for index, (session_patch, code, param) in enumerate(bad):
            client.send(
                {"type": "session.update", "event_id": f"bad{index}", "session": session_patch}
            )
            error = (await client.wait_for("error", after=len(client.events)))["error"]
            assert (error["code"], error["param"], error["event_id"]) == (
                code,
                param,
                f"bad{index}",
            )
        client.send({"type": "session.update", "session": {"type": "realtime"}})
        await client.wait_for("session.updated", after=index_of(client.types(), "error") + 1)
        last = [e for e in client.events if e["type"] == "session.updated"][-1]["session"]
        assert last["instructions"] == "Be brief."  # the invalid update changed nothing


async def test_text_turn_sequence_and_voice_lock(emulator: Emulator) -> None:
    async with emulator.call() as client:
        await client.wait_for("session.created")
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "id": "client-item-1",
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hi there"}],
                },
            }
        )
        client.send({"type": "response.create"})
        client.send({"type": "response.create", "event_id": "dup"})  # one is active
        done = await client.wait_for("response.done")
        await client.wait_for("rate_limits.updated")
        types = client.types()
        assert in_order(types, TEXT_TURN_GA), types
        added = client.events[index_of(types, "conversation.item.added")]
        assert added["item"]["id"] == "client-item-1" and added["previous_item_id"] is None
        error = (await client.wait_for("error"))["error"]
        assert error["code"] == "conversation_already_has_active_response"
        assert error["event_id"] == "dup"

        response = done["response"]
        assert response["status"] == "completed"
        assert response["usage"]["output_tokens"] > 0
        output = response["output"][0]
        assert output["content"][0]["type"] == "output_audio"
        assert output["content"][0]["transcript"] == "You said: Hi there"
        deltas = "".join(
            e["delta"]
            for e in client.events
            if e["type"] == "response.output_audio_transcript.delta"
        )
        assert deltas == "You said: Hi there"
        assert "obfuscation" in next(
            e for e in client.events if e["type"] == "response.output_audio_transcript.delta"
        )

        # The agent's audio plays out on the track, framed by output_audio_buffer events.
        started = await client.wait_for("output_audio_buffer.started")
        stopped = await client.wait_for("output_audio_buffer.stopped", timeout=10)
        assert started["response_id"] == stopped["response_id"] == response["id"]
        assert client.sink.loud_frames() > 20

        # Voice cannot change once assistant audio exists; the same voice is fine.
        client.send(
            {
                "type": "session.update",
                "event_id": "voice",
                "session": {"type": "realtime", "audio": {"output": {"voice": "coral"}}},
            }
        )
        error = (
            await client.wait_for(
                "error", after=index_of(client.types(), "output_audio_buffer.stopped")
            )
        )["error"]
        assert (error["code"], error["event_id"]) == ("cannot_update_voice", "voice")

        # Retrieve, truncate and delete the assistant item.
        item_id = output["id"]
        client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        retrieved = await client.wait_for("conversation.item.retrieved")
        assert retrieved["item"]["id"] == item_id
        client.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 300,
            }
        )
        truncated = await client.wait_for("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 300
        client.send({"type": "conversation.item.delete", "item_id": item_id})
        assert (await client.wait_for("conversation.item.deleted"))["item_id"] == item_id
        client.send({"type": "conversation.item.retrieve", "item_id": item_id, "event_id": "gone"})
        error = [e for e in client.events if e["type"] == "error"]
        await client.wait_for("error", after=index_of(client.types(), "conversation.item.deleted"))
        error = [e for e in client.events if e["type"] == "error"][-1]["error"]
        assert error["event_id"] == "gone"


async def test_text_only_response(emulator: Emulator) -> None:
    async with emulator.call(session={"type": "realtime", "output_modalities": ["text"]}) as client:
        await client.wait_for("session.created")
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Ping"}],
                },
            }
        )
        client.send({"type": "response.create", "response": {"metadata": {"topic": "test"}}})
        done = await client.wait_for("response.done")
        types = client.types()
        assert "response.output_text.delta" in types and "response.output_text.done" in types
        assert not any(t.startswith("response.output_audio") for t in types)
        assert done["response"]["output"][0]["content"][0] == {
            "type": "output_text",
            "text": "You said: Ping",
        }
        assert done["response"]["metadata"] == {"topic": "test"}
        await asyncio.sleep(0.3)
        assert "output_audio_buffer.started" not in client.types()


async def test_errors_are_not_fatal(emulator: Emulator) -> None:
    async with emulator.call() as client:
        await client.wait_for("session.created")
        client.channel.send("{not json")
        client.channel.send('{"event_id": "no-type"}')
        client.channel.send(b"\x00\x01binary")
        client.send({"type": "no.such.event", "event_id": "unknown"})
        client.send({"type": "response.cancel", "event_id": "cancel"})
        client.send({"type": "input_audio_buffer.clear"})
        client.send({"type": "input_audio_buffer.commit", "event_id": "commit"})
        client.send(
            {"type": "conversation.item.create", "event_id": "item", "item": {"type": "message"}}
        )
        client.send({"type": "response.create", "event_id": "extra", "bogus": 1})
        await client.wait_for("input_audio_buffer.cleared")
        await asyncio.sleep(0.3)
        errors = [e["error"] for e in client.events if e["type"] == "error"]
        codes = [(e["code"], e["param"], e["event_id"]) for e in errors]
        assert codes == [
            ("invalid_json", None, None),
            ("invalid_event", "type", "no-type"),
            ("invalid_event", None, None),
            ("invalid_value", "type", "unknown"),
            ("response_cancel_not_active", None, "cancel"),
            ("input_audio_buffer_commit_empty", None, "commit"),
            ("missing_required_parameter", "item.role", "item"),
            ("unknown_parameter", "bogus", "extra"),
        ], codes
        assert "session.update" in errors[3]["message"]  # lists the supported types
        # Still alive: a normal request works.
        client.send(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "ok"}}
        )
        await client.wait_for("session.updated")


async def test_session_expires(start_emulator) -> None:  # type: ignore[no-untyped-def]
    emulator = await start_emulator(max_session_secs=1.5)
    async with emulator.call() as client:
        await client.wait_for("session.created")
        error = (await client.wait_for("error", timeout=5))["error"]
        assert error["code"] == "session_expired"
        assert error["message"] == "Your session hit the maximum duration of 1.5 seconds."
        await asyncio.wait_for(emulator.sessions.wait_idle(), 5)
        call = emulator.sessions.calls()[0]
        assert call.close_reason == "session expired"
        assert call.pc.connectionState == "closed"
        await asyncio.sleep(0.2)
        assert client.channel.readyState in ("closing", "closed")


async def test_forced_function_call(emulator: Emulator) -> None:
    session = {
        "type": "realtime",
        "output_modalities": ["text"],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "tool_choice": "required",
    }
    async with emulator.call(session=session) as client:
        await client.wait_for("session.created")
        client.send({"type": "response.create"})
        done = await client.wait_for("response.done")
        call = done["response"]["output"][0]
        assert (call["type"], call["name"], call["arguments"]) == (
            "function_call",
            "get_weather",
            "{}",
        )
        arguments = await client.wait_for("response.function_call_arguments.done")
        assert arguments["call_id"] == call["call_id"] and arguments["name"] == "get_weather"
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": "sunny",
                },
            }
        )
        client.send({"type": "response.create"})
        await client.wait_for("response.done", after=index_of(client.types(), "response.done") + 1)
        final = [e for e in client.events if e["type"] == "response.done"][-1]
        assert final["response"]["output"][0]["content"][0]["text"] == "The tool returned: sunny"


async def test_session_close(emulator: Emulator) -> None:
    async with emulator.call() as client:
        await client.wait_for("session.created")
        call = emulator.sessions.calls()[0]
        client.send({"type": "session.close"})
        await asyncio.wait_for(call.closed.wait(), 5)
        assert call.close_reason == "session.close"
        assert call.pc.connectionState == "closed"


async def test_idle_timeout(emulator: Emulator) -> None:
    async with emulator.call() as client:
        await client.wait_for("session.created")
        # The API's minimum is 5 s; set 300 ms behind the validator to keep this short.
        call = emulator.sessions.calls()[0]
        call.config.data["audio"]["input"]["turn_detection"]["idle_timeout_ms"] = 300
        client.send({"type": "response.create", "response": {"instructions": "Say: Hi."}})
        stopped = await client.wait_for("output_audio_buffer.stopped", timeout=10)
        at = index_of(client.types(), "output_audio_buffer.stopped")
        timeout = await client.wait_for("input_audio_buffer.timeout_triggered", after=at, timeout=3)
        done = await client.wait_for("response.done", after=at, timeout=5)
        assert in_order(
            client.types()[at:],
            [
                "input_audio_buffer.timeout_triggered",
                "input_audio_buffer.committed",
                "response.created",
            ],
        )
        assert timeout["audio_end_ms"] >= timeout["audio_start_ms"]
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Are you still there?"
        assert done["response"]["id"] != stopped["response_id"]
