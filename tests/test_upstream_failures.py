"""OpenAI's failure paths, switched on in the emulator mid-call (``relay.emulator.
faults``): a failed response, a server error and a failed transcription reach the browser
as OpenAI sends them (valid events of the GA protocol), the relay does not end or stall the
call, and the next turn works once the failures are off."""

from __future__ import annotations

from typing import Any

import numpy as np
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from relay_fixtures import RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client
from test_relay_calls import call_relay

from relay.embedded import EMULATOR
from relay.emulator import SESSIONS

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)


def user_text(client: RealtimeClient, text: str) -> None:
    content = [{"type": "input_text", "text": text}]
    item = {"type": "message", "role": "user", "content": content}
    client.send({"type": "conversation.item.create", "item": item})
    client.send({"type": "response.create"})


async def next_event(client: RealtimeClient, kind: str, after: int) -> dict[str, Any]:
    event = await client.wait_for(kind, timeout=20, after=after)
    SERVER_EVENT.validate_python(event)
    return event


async def completed_response(client: RealtimeClient, after: int) -> int:
    """The index after the first completed ``response.done`` (the speech's pauses may
    start responses that its next words cancel)."""
    for _ in range(10):
        done = await next_event(client, "response.done", after)
        after = client.events.index(done) + 1
        if done["response"]["status"] == "completed":
            return after
    raise AssertionError("no response completed")


async def test_openai_failures_reach_the_browser_and_the_call_goes_on(
    relay: RelayUnderTest, speech_48k: np.ndarray
) -> None:
    async with realtime_client(PacedAudioSource()) as client:
        call_id = await call_relay(relay, client)
        await client.wait_for("session.created", timeout=10)
        emulated = await relay.app[EMULATOR][SESSIONS].wait_for_call(timeout_secs=5)
        call = relay.registry.get_call(call_id)

        emulated.faults.switch("server_error", True)
        emulated.faults.switch("response_failed", True)
        after = len(client.events)
        user_text(client, "Hello there")
        error = await next_event(client, "error", after)
        assert error["error"]["type"] == "server_error", error
        done = await next_event(client, "response.done", after)
        assert done["response"]["status"] == "failed", done
        assert done["response"]["status_details"]["error"]["type"] == "server_error"

        emulated.faults.switch("server_error", False)
        emulated.faults.switch("response_failed", False)
        emulated.faults.switch("transcription_failed", True)
        client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                },
            }
        )
        await client.wait_for("session.updated", after=after)
        after = len(client.events)
        client.source.play(speech_48k)
        failed = await next_event(
            client, "conversation.item.input_audio_transcription.failed", after
        )
        assert failed["error"]["code"] == "audio_unintelligible", failed
        spoken = await completed_response(client, after)
        await client.wait_for("output_audio_buffer.stopped", timeout=30, after=spoken)
        assert client.sink.loud_frames() > 25, "the agent's audio did not reach the caller"

        assert call.state == "active" and relay.registry.get(call_id) is not None
        transcripts = call.snapshot()["transcripts"]
        assert {t["role"] for t in transcripts} == {"agent"}, transcripts  # no user words
        assert "conversation.item.input_audio_transcription.completed" not in client.types()
