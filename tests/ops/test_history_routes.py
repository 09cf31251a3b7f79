"""The history API: recordings searched by transcript words, date and outcome (paged,
bounded), and a recording's waveform, against real recordings the recorder wrote."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from relay.ops.recording import store

from .recordings import ops_with_recorder, record_call

ADMIN = "history-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
DAY = 86400.0


@pytest.fixture
async def history(aiohttp_client: AiohttpClient, tmp_path: Path) -> Any:
    ops = ops_with_recorder(tmp_path / "rec", ADMIN)
    return await aiohttp_client(ops.app), ops.directory, ops.recorder, ops.clock


async def search(client: Any, **params: str) -> dict[str, Any]:
    response = await client.get("/api/recordings", params=params, headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_recordings_are_found_by_words_date_and_outcome(history: Any) -> None:
    client, directory, recorder, clock = history
    clock.shift = -3 * DAY
    old = await record_call(
        directory, recorder, clock, [(0.5, "user", "Where is my parcel?")], 1.0, "hangup"
    )
    clock.shift = 0.0
    weather = await record_call(
        directory,
        recorder,
        clock,
        [(0.5, "user", "What is the WEATHER tomorrow?"), (0.8, "agent", "Sunny and warm.")],
        1.0,
        "upstream_failed",
    )

    ids = lambda body: [r["call_id"] for r in body["data"]]  # noqa: E731
    assert ids(await search(client)) == [weather.id, old.id]  # newest first
    found = await search(client, q="weather")
    assert ids(found) == [weather.id]
    assert [m["text"] for m in found["data"][0]["matches"]] == ["What is the WEATHER tomorrow?"]
    assert ids(await search(client, q="weather sunny")) == [weather.id]  # all words, any turn
    assert ids(await search(client, q="weather parcel")) == []
    assert ids(await search(client, q="parcel")) == [old.id]

    yesterday = datetime.datetime.fromtimestamp(clock() - DAY, datetime.UTC).date().isoformat()
    assert ids(await search(client, since=yesterday)) == [weather.id]
    assert ids(await search(client, until=yesterday)) == [old.id]
    assert ids(await search(client, since=str(clock() - 4 * DAY), until=str(clock() - DAY))) == [
        old.id
    ]
    assert ids(await search(client, outcome="upstream_failed")) == [weather.id]

    first = await search(client, limit="1")
    assert ids(first) == [weather.id] and first["has_more"] and first["next_offset"] == 1
    second = await search(client, limit="1", offset="1")
    assert ids(second) == [old.id] and not second["has_more"] and second["next_offset"] is None

    for name, value in (("since", "last tuesday"), ("limit", "many"), ("offset", "x")):
        response = await client.get("/api/recordings", params={name: value}, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["param"] == name


async def test_waveform_follows_the_two_channels(history: Any) -> None:
    client, directory, recorder, clock = history
    call = await record_call(directory, recorder, clock, [], 2.0)
    response = await client.get(
        f"/api/recordings/{call.id}/waveform", params={"points": "10"}, headers=AUTH
    )
    assert response.status == 200
    wave = await response.json()
    assert len(wave["caller"]) == len(wave["agent"]) == 10
    # The caller speaks (0.3 full scale) in the first second, the agent in the second.
    assert all(0.25 < v <= 0.31 for v in wave["caller"][:4])
    assert all(v < 0.01 for v in wave["caller"][6:])
    assert all(v < 0.01 for v in wave["agent"][:4])
    assert all(0.25 < v <= 0.31 for v in wave["agent"][6:])

    assert (await client.get(f"/api/recordings/{call.id}/waveform")).status == 401
    missing = await client.get("/api/recordings/rtc_nope/waveform", headers=AUTH)
    assert missing.status == 404
    bad = await client.get(
        f"/api/recordings/{call.id}/waveform", params={"points": "lots"}, headers=AUTH
    )
    assert bad.status == 400


async def test_a_search_reads_a_bounded_number_of_recordings(
    history: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, directory, recorder, clock = history
    clock.shift = -DAY
    old = await record_call(directory, recorder, clock, [(0.5, "user", "A needle.")], 1.0)
    clock.shift = 0.0
    await record_call(directory, recorder, clock, [(0.5, "user", "Hay.")], 1.0)
    assert [r["call_id"] for r in (await search(client, q="needle"))["data"]] == [old.id]

    monkeypatch.setattr(store, "MAX_SCANNED", 1)
    stopped = await search(client, q="needle")
    assert stopped["data"] == [] and stopped["truncated"] is True
    monkeypatch.setattr(store, "MAX_SCANNED", 5000)
    monkeypatch.setattr(store, "MAX_SEARCH_BYTES", 10)  # less than one transcript
    stopped = await search(client, q="needle")
    assert stopped["data"] == [] and stopped["truncated"] is True
