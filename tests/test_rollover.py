"""Calls that outlive their upstream sessions (relay/upstream/rollover.py), with an aiortc
peer as the browser and the emulator (with a short session cap) as OpenAI: the relay
renews the session before the cap with the conversation carried over, and replaces a
session that dies (its cap reached unannounced, its process killed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, RealtimeClient, realtime_client
from test_process import free_port, start, wait_healthy
from test_sideband import (
    API_KEY,
    HIDE_TOOL_CALLS,
    WEATHER_TOOL,
    start_call,
    until_attached,
    user_says,
)

from relay.config import EmulatorSettings, Secret
from relay.embedded import EMULATOR
from relay.emulator.app import SESSIONS
from relay.upstream.rollover import RENEWED_EVENT

FIRST = "My secret word is pelican."
RECALL = "What did I say first?"
KEY = "sk-rollover-test"
WARM_EMULATOR = Path(__file__).parent / "warm_emulator.py"


def _speech_then_silence(speech_48k: np.ndarray, silence_secs: float) -> np.ndarray:
    return np.concatenate([speech_48k, np.zeros(int(silence_secs * 48000), dtype=np.int16)])


async def _say(client: RealtimeClient, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    client.send({"type": "conversation.item.create", "item": item})


async def _ask_recall(client: RealtimeClient) -> str:
    """Ask the session what was said first; the agent's answer (as text: it comes whole
    at once, where a spoken one takes seconds of playout a renewal could cut)."""
    after = len(client.events)
    await _say(client, RECALL)
    client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    done = await client.wait_for("response.output_text.done", 15, after)
    return str(done["text"])


async def _until_no_response(client: RealtimeClient, timeout: float = 20.0) -> None:
    """Until every response the session created is done (calm for 0.5 s)."""
    deadline = time.monotonic() + timeout
    calm_since = time.monotonic()
    while time.monotonic() - calm_since < 0.5:
        types = client.types()
        if types.count("response.created") > types.count("response.done"):
            calm_since = time.monotonic()
        assert time.monotonic() < deadline, "a response never ended"
        await asyncio.sleep(0.1)


async def _renewals(client: RealtimeClient, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        renewed = [e for e in client.events if e["type"] == RENEWED_EVENT]
        if len(renewed) >= count:
            return renewed
        assert time.monotonic() < deadline, f"{len(renewed)} renewals: {client.types()[-30:]}"
        await asyncio.sleep(0.1)


def _caller_gaps_ms(relay: RelayUnderTest, call: Any) -> list[float]:
    """Caller audio as OpenAI's side heard it: from the last frame an upstream session
    received to the first its successor received, at each swap."""
    sessions = relay.app[EMULATOR][SESSIONS]
    gaps = []
    for renewal in call.rollover.renewals:
        old, new = sessions.get(renewal.old_call_id), sessions.get(renewal.new_call_id)
        assert old is not None and new is not None, renewal
        assert old.received.last_at is not None and new.received.first_at is not None
        gaps.append((new.received.first_at - old.received.last_at) * 1000)
    return gaps


async def test_a_call_outlives_its_upstream_sessions(
    start_relay: RelayFactory, speech_48k: np.ndarray
) -> None:
    """Emulator cap 8 s, rollover 4 s before it: the call goes through at least
    two renewals, the browser sees one session.created and a notice per renewal, the
    caller's audio reaches each new session within 300 ms, and the latest session
    knows the first thing said (carried as an item through every renewal)."""
    relay = await start_relay(
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), max_session_secs=8.0),
        rollover_lead_secs=4.0,
    )
    source = PacedAudioSource(_speech_then_silence(speech_48k, 3.0), loop=True)
    async with realtime_client(source) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201, await response.text()
        call = relay.registry.get_call(response.headers["Location"].rsplit("/", 1)[-1])
        await client.wait_for("session.created", timeout=10)
        await _say(client, FIRST)
        renewed = await _renewals(client, 2, timeout=30)
        assert {r["reason"] for r in renewed} <= {"rollover", "forced"}
        assert all(r["items_carried"] >= 1 for r in renewed)
        source.muted = True  # the caller stops talking and lets the agent finish
        await _until_no_response(client)
        answer = await _ask_recall(client)
        assert FIRST in answer, answer

        assert client.types().count("session.created") == 1
        assert relay.registry.get_call(call.id) is call and call.state == "active"
        assert len(call.rollover.renewals) == len(renewed)
        gaps = _caller_gaps_ms(relay, call)
        assert len(gaps) >= 2 and max(gaps) < 300, gaps
        agent_gap = call.rollover.clock.last_gap_ms
        assert agent_gap is not None and agent_gap < 300, agent_gap
        # Agent audio keeps flowing from the newest session to the caller.
        packets = call.agent_audio.packets_in
        await asyncio.sleep(0.5)
        assert call.agent_audio.packets_in > packets + 10


async def test_an_expired_session_is_replaced_without_an_error(
    start_relay: RelayFactory,
) -> None:
    """Rollover off and a relay that does not know the cap: the session ends with
    OpenAI's ``session_expired``; the relay opens a new one with the conversation, and
    the browser sees a renewal notice, no error."""
    relay = await start_relay(
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), max_session_secs=8.0),
        rollover_lead_secs=0.0,
    )
    async with realtime_client(PacedAudioSource()) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        call = relay.registry.get_call(response.headers["Location"].rsplit("/", 1)[-1])
        await client.wait_for("session.created", timeout=10)
        await _say(client, FIRST)
        renewed = await client.wait_for(RENEWED_EVENT, timeout=15)
        assert renewed["reason"] == "recovered"
        assert FIRST in await _ask_recall(client)
        assert "error" not in client.types(), client.types()
        assert call.state == "active"
        reasons = [r.reason for r in call.rollover.renewals]
        assert reasons and set(reasons) == {"recovered"}, reasons


async def test_a_killed_upstream_is_replaced_by_a_new_one_at_the_same_url(
    start_relay: RelayFactory, tmp_path: Path
) -> None:
    """The emulator process is killed mid-call and another starts on the same port:
    the relay notices (~1-1.5 s), opens a session on the new one with the conversation,
    and the browser gets a renewal notice, no error, within 3 s of the kill."""
    port = free_port()
    env = {"RELAY_EMULATOR_API_KEYS": KEY, "RELAY_ICE_ADDRESSES": "127.0.0.1"}
    first = start(["emulator", "--port", str(port)], env, tmp_path / "emulator1.log")
    # The second emulator is the same command, its Python modules loaded in advance
    # (it binds when told): the machine's load must not decide how fast it can start.
    second = _warm_emulator(port, env, tmp_path / "emulator2.log")
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", first)
        relay = await start_relay(
            openai_api_key=Secret(KEY), openai_base_url=f"http://127.0.0.1:{port}/v1"
        )
        async with realtime_client(PacedAudioSource()) as client:
            response = await client.connect(relay.http, relay.calls_url, "")
            assert response.status == 201, await response.text()
            call = relay.registry.get_call(response.headers["Location"].rsplit("/", 1)[-1])
            await client.wait_for("session.created", timeout=10)
            await _say(client, FIRST)
            await client.wait_for("conversation.item.done", timeout=5)
            await asyncio.sleep(0.5)
            first.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            first.wait(5)
            assert second.stdin is not None
            second.stdin.write(b"go\n")
            second.stdin.flush()
            renewed = await client.wait_for(RENEWED_EVENT, timeout=5)
            renewed_after = time.monotonic() - killed
            assert renewed["reason"] == "recovered"
            print(f"renewed {renewed_after:.2f} s after the kill")
            assert renewed_after < 3.0, f"renewed after {renewed_after:.2f} s"
            assert "error" not in client.types(), client.types()
            assert FIRST in await _ask_recall(client)
            assert call.state == "active"
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
        if second.stdin is not None:
            second.stdin.close()


def _warm_emulator(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {**_base_env(), **env}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(WARM_EMULATOR), "--port", str(port)],
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=out,
        )


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}


async def test_a_renewed_session_keeps_the_secrets_config_policy_and_sideband(
    start_relay: RelayFactory,
) -> None:
    """A call made with a client secret (locked instructions and tools, tool calls hidden
    from the browser) and a backend on the sideband (the official SDK): the renewed
    session has the secret's config, the backend hears of the renewal and still answers
    the tool calls, and the browser still sees none of them."""
    relay = await start_relay(
        open_mode=False,
        relay_api_key=Secret(API_KEY),
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), max_session_secs=10.0),
        rollover_lead_secs=5.0,
    )
    session = {
        "type": "realtime",
        "instructions": "You report the weather.",
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "relay": HIDE_TOOL_CALLS,
    }
    backend = openai.AsyncOpenAI(api_key=API_KEY, base_url=relay.url("/v1"))
    seen: list[str] = []
    async with realtime_client() as browser:
        call_id = await start_call(relay, browser, session)

        async def sideband() -> None:
            async with backend.realtime.connect(call_id=call_id) as connection:
                async for event in connection:
                    seen.append(event.type)
                    if event.type == "response.function_call_arguments.done":
                        await connection.conversation.item.create(
                            item={
                                "type": "function_call_output",
                                "call_id": event.call_id,
                                "output": json.dumps({"forecast": "sunny"}),
                            }
                        )
                        await connection.response.create()

        task = asyncio.ensure_future(sideband())
        try:
            await until_attached(relay, call_id, task)
            await browser.wait_for(RENEWED_EVENT, timeout=15)
            after = len(browser.events)
            user_says(browser, "What is the weather in city Paris?")
            spoken = await browser.wait_for("response.output_audio_transcript.done", 20, after)
            assert "sunny" in spoken["transcript"], spoken
            assert RENEWED_EVENT in seen
            newest = relay.app[EMULATOR][SESSIONS].calls()[-1]
            assert len(relay.app[EMULATOR][SESSIONS].calls()) >= 2
            assert newest.config.instructions == "You report the weather."
            assert [t["name"] for t in newest.config.data["tools"]] == ["get_weather"]
            for event in browser.events:
                assert not event["type"].startswith("response.function_call_arguments")
                item = event.get("item") or {}
                assert item.get("type") not in ("function_call", "function_call_output"), event
            assert browser.types().count("session.created") == 1
            assert "error" not in browser.types()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    await backend.close()


async def test_the_carried_conversation_is_the_most_recent_within_the_budget(
    start_relay: RelayFactory,
) -> None:
    """A context budget of 20 tokens (4 characters each, 4 per item) carries the last two
    of four messages: the renewed session's first message is the third one said."""
    relay = await start_relay(
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), max_session_secs=8.0),
        rollover_lead_secs=4.0,
        rollover_context_tokens=20,
    )
    said = ["First message alpha.", "Second message bravo.", "Third message charlie."]
    said.append("Fourth message delta.")
    async with realtime_client(PacedAudioSource()) as client:
        response = await client.connect(relay.http, relay.calls_url, "")
        assert response.status == 201
        await client.wait_for("session.created", timeout=10)
        for text in said:
            await _say(client, text)
        renewed = await client.wait_for(RENEWED_EVENT, timeout=15)
        assert renewed["items_carried"] == 2, renewed
        answer = await _ask_recall(client)
        assert said[2] in answer and said[0] not in answer, answer
