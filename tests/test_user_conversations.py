"""A signed-in user's past conversations (issue 15, "the relay's recordings for a
signed-in user id the app passes"): the app mints client secrets with
``session.relay.user_id``, the call is recorded with it, and ``GET /api/conversations``
gives a secret of the same user that call's transcript, and nobody else's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from relay_fixtures import RelayFactory, RelayUnderTest
from support import PacedAudioSource, realtime_client

from relay.config import Secret
from relay.ops.recording import read_metadata
from relay.ops.recording.conversations import user_conversations
from relay.ops.recording.store import write_json_atomic

pytestmark = pytest.mark.timeout(90)

API_KEY = "sk-relay-history-test-key-0123456789"
ROUTE = "/api/conversations"


async def recording_relay(start_relay: RelayFactory, tmp_path: Path) -> RelayUnderTest:
    return await start_relay(
        open_mode=False,
        relay_api_key=Secret(API_KEY),
        recording_policy="all",
        recording_dir=str(tmp_path / "recordings"),
        media_timeout_secs=20.0,
    )


async def mint(relay: RelayUnderTest, relay_field: dict[str, Any] | None) -> str:
    """A client secret minted with the official SDK, as an app backend does."""
    session: dict[str, Any] = {
        "type": "realtime",
        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
    }
    if relay_field is not None:
        session["relay"] = relay_field
    sdk = openai.AsyncOpenAI(api_key=API_KEY, base_url=relay.url("/v1"), max_retries=0)
    try:
        secret = await sdk.realtime.client_secrets.create(session=session)  # type: ignore[arg-type]
    finally:
        await sdk.close()
    return secret.value


async def conversations(relay: RelayUnderTest, secret: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    async with relay.http.get(relay.url(ROUTE), headers=headers) as response:
        return response.status, await response.json()


async def recorded_call(relay: RelayUnderTest, secret: str, speech: np.ndarray) -> str:
    """A real call (aiortc, real Opus) in which the caller speaks and the agent answers;
    hung up once the answer's transcript is done. Returns the call id."""
    silence = np.zeros(48000, dtype=np.int16)
    async with realtime_client(PacedAudioSource(np.concatenate([silence, speech]))) as client:
        response = await client.connect(relay.http, relay.calls_url, secret)
        assert response.status == 201, await response.text()
        await client.wait_for("session.created", timeout=15)
        user = await client.wait_for(
            "conversation.item.input_audio_transcription.completed", timeout=30
        )
        assert user["transcript"]
        await client.wait_for("response.output_audio_transcript.done", timeout=30)
        assert client.location is not None
        hangup = await relay.http.post(
            relay.url(client.location + "/hangup"), headers={"Authorization": f"Bearer {secret}"}
        )
        assert hangup.status == 200, await hangup.text()
        return client.location.rsplit("/", 1)[-1]


async def until_listed(relay: RelayUnderTest, secret: str, call_id: str) -> dict[str, Any]:
    """The conversation of ``call_id`` once its recording is finished (the writer thread
    rewrites the metadata shortly after the call ends)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = await conversations(relay, secret)
        assert status == 200, body
        found = [c for c in body["data"] if c["call_id"] == call_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def test_a_users_recorded_call_is_theirs_alone(
    start_relay: RelayFactory, tmp_path: Path, speech_48k: np.ndarray
) -> None:
    relay = await recording_relay(start_relay, tmp_path)
    call_id = await recorded_call(relay, await mint(relay, {"user_id": "u1"}), speech_48k)

    # The recording carries the user id the app passed.
    folder = next((tmp_path / "recordings").glob(f"*/{call_id}"))
    metadata = read_metadata(folder)
    assert metadata is not None and metadata["user_id"] == "u1"

    # A second secret of the same user, minted later (a reload), reads it back.
    conversation = await until_listed(relay, await mint(relay, {"user_id": "u1"}), call_id)
    roles = [turn["role"] for turn in conversation["transcript"]]
    assert "user" in roles and "assistant" in roles
    recorded = [
        line for line in (folder / "transcript.jsonl").read_text().splitlines() if line.strip()
    ]
    assert len(conversation["transcript"]) == len(recorded)
    assert all(turn["text"] for turn in conversation["transcript"])
    assert conversation["outcome"] == "hangup" and conversation["ended_at"]
    assert not {"audio", "files", "user_agent", "writer"} & set(conversation)

    # Another user reads nothing of it.
    status, body = await conversations(relay, await mint(relay, {"user_id": "u2"}))
    assert status == 200 and body["data"] == [] and body["has_more"] is False

    # A secret without a user id: 404 in OpenAI's envelope.
    status, body = await conversations(relay, await mint(relay, None))
    assert status == 404 and body["error"]["code"] == "user_id_not_set"

    # An unknown secret, the relay's own key, no key: 401 in the envelope, no key echoed.
    for token in ("ek_" + "0" * 32, API_KEY, None):
        status, body = await conversations(relay, token)
        assert status == 401, body
        assert set(body["error"]) == {"message", "type", "code", "param"}
        assert body["error"]["type"] == "invalid_request_error"
        assert API_KEY not in body["error"]["message"]


async def test_user_id_is_checked_at_mint(start_relay: RelayFactory, tmp_path: Path) -> None:
    relay = await recording_relay(start_relay, tmp_path)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for bad in ("", "a" * 129, "has space", "semi;colon", 12, None, ["u1"]):
        body = {"session": {"type": "realtime", "relay": {"user_id": bad}}}
        async with relay.http.post(
            relay.url("/v1/realtime/client_secrets"), json=body, headers=auth
        ) as response:
            answer = await response.json()
        assert response.status == 400, (bad, answer)
        assert answer["error"]["param"] == "session.relay.user_id", answer
    ok = {"session": {"type": "realtime", "relay": {"user_id": "tenant-7:alice@example.com"}}}
    async with relay.http.post(
        relay.url("/v1/realtime/client_secrets"), json=ok, headers=auth
    ) as response:
        minted = await response.json()
    assert response.status == 200, minted
    assert minted["session"]["relay"]["user_id"] == "tenant-7:alice@example.com"


def test_newest_first_bounded_and_unfinished_left_out(tmp_path: Path) -> None:
    """The reader on its own: newest first, ``limit`` of them with ``has_more``, a call
    still being recorded left out, a long transcript cut at a line."""
    now = time.time()
    for i in range(4):
        folder = tmp_path / time.strftime("%Y-%m-%d", time.gmtime(now)) / f"rtc_{i}"
        folder.mkdir(parents=True)
        status = "recording" if i == 3 else "complete"
        write_json_atomic(
            folder / "metadata.json",
            {"call_id": f"rtc_{i}", "user_id": "u1", "status": status, "started_at": now + i},
        )
        lines = [f'{{"t": {now}, "role": "agent", "item_id": null, "text": "turn {i}"}}']
        if i == 0:
            lines += [
                '{"t": 1, "role": "user", "item_id": null, "text": "' + "x" * 500 + '"}'
            ] * 400
        (folder / "transcript.jsonl").write_text("\n".join(lines) + "\n")
    page = user_conversations(tmp_path, "u1", limit=2)
    assert [c["call_id"] for c in page["data"]] == ["rtc_2", "rtc_1"] and page["has_more"]
    assert page["data"][0]["transcript"][0] == {
        "role": "assistant",
        "text": "turn 2",
        "item_id": None,
        "t": now,
    }
    everything = user_conversations(tmp_path, "u1", limit=50)
    assert [c["call_id"] for c in everything["data"]] == ["rtc_2", "rtc_1", "rtc_0"]
    assert not everything["has_more"]
    long = everything["data"][2]
    assert long["truncated"] and 1 < len(long["transcript"]) < 401
    assert user_conversations(tmp_path, "u2")["data"] == []
