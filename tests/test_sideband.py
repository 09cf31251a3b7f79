"""The sideband: ``GET /v1/realtime?call_id=`` as OpenAI's WebSocket event protocol for
the app backend. The official SDK handles a tool call the browser never sees; the
sideband closes (1000, with the outcome) however the call ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from relay_fixtures import RelayFactory, RelayUnderTest
from support import RealtimeClient, realtime_client

from relay.config import Secret
from relay.http.app import UPSTREAM

API_KEY = "sk-relay-sideband-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Look up the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "backend.py"
HIDE_TOOL_CALLS = {"allowed_server_events": ["*", "-response.function_call_arguments.*"]}


async def keyed_relay(start_relay: RelayFactory, **overrides: Any) -> RelayUnderTest:
    return await start_relay(open_mode=False, relay_api_key=Secret(API_KEY), **overrides)


async def start_call(relay: RelayUnderTest, client: RealtimeClient, session: dict[str, Any]) -> str:
    response = await relay.http.post(
        relay.url("/v1/realtime/client_secrets"), json={"session": session}, headers=AUTH
    )
    minted = await response.json()
    assert response.status == 200, minted
    answer = await client.connect(relay.http, relay.calls_url, minted["value"])
    assert answer.status == 201, await answer.text()
    await client.wait_for("session.created", timeout=10)
    assert client.location is not None
    return client.location.rsplit("/", 1)[-1]


def user_says(client: RealtimeClient, text: str) -> None:
    content = [{"type": "input_text", "text": text}]
    client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": content},
        }
    )
    client.send({"type": "response.create"})


@pytest.mark.parametrize("upstream_transport", ["webrtc", "websocket"])
async def test_sdk_sideband_answers_a_tool_call_the_browser_never_sees(
    start_relay: RelayFactory, upstream_transport: str
) -> None:
    relay = await keyed_relay(start_relay, upstream_transport=upstream_transport)
    session = {
        "type": "realtime",
        "instructions": "You report the weather.",
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "relay": HIDE_TOOL_CALLS,
    }
    backend = openai.AsyncOpenAI(api_key=API_KEY, base_url=relay.url("/v1"))
    async with realtime_client() as browser:
        call_id = await start_call(relay, browser, session)
        seen: list[str] = []
        calls: list[tuple[str, str]] = []

        async def sideband() -> None:
            async with backend.realtime.connect(call_id=call_id) as connection:
                async for event in connection:
                    seen.append(event.type)
                    if event.type == "response.function_call_arguments.done":
                        calls.append((event.name or "", event.arguments))
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
            user_says(browser, "What is the weather in city Paris?")
            spoken = await browser.wait_for("response.output_audio_transcript.done", timeout=20)
            assert spoken["transcript"].startswith("The tool returned:"), spoken
            assert "sunny" in spoken["transcript"]
            assert calls == [("get_weather", json.dumps({"city": "Paris"}))]
            assert "response.function_call_arguments.done" in seen
            # the browser saw the spoken answer and nothing of the tool call
            for event in browser.events:
                assert not event["type"].startswith("response.function_call_arguments")
                item = event.get("item") or {}
                assert item.get("type") not in ("function_call", "function_call_output"), event
                for output in (event.get("response") or {}).get("output") or []:
                    assert output.get("type") != "function_call", event
            assert "error" not in browser.types()
            # hangup ends the call and the SDK's iterator ends cleanly (close 1000)
            response = await relay.http.post(
                relay.url(f"/v1/realtime/calls/{call_id}/hangup"), headers=AUTH
            )
            assert response.status == 200
            await asyncio.wait_for(task, 5)
        finally:
            task.cancel()
    await backend.close()


def _attached(relay: RelayUnderTest, call_id: str) -> bool:
    from relay.http.sideband_routes import SIDEBANDS

    return relay.app[SIDEBANDS].count(call_id) > 0


async def until_attached(
    relay: RelayUnderTest, call_id: str, task: asyncio.Future[None] | None = None
) -> None:
    """Until a sideband is attached to the call (bounded); a sideband task that ended
    first raises its error here."""
    for _ in range(200):
        if _attached(relay, call_id):
            return
        if task is not None and task.done():
            task.result()
            raise AssertionError("the sideband ended before it attached")
        await asyncio.sleep(0.05)
    raise TimeoutError("no sideband attached within 10 s")


async def open_sideband(
    relay: RelayUnderTest, call_id: str, path: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    url = relay.url(path or f"/v1/realtime?call_id={call_id}")
    ws = await relay.http.ws_connect(url, headers=AUTH)
    await until_attached(relay, call_id)
    return ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read to the close frame (within 15 s): its code and reason."""
    async with asyncio.timeout(15):
        while True:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.CLOSE:
                return message.data, str(message.extra or "")
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code, ""


async def until_done(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read server events until a ``response.done`` (within 15 s)."""
    async with asyncio.timeout(15):
        while json.loads((await ws.receive()).data)["type"] != "response.done":
            pass


@pytest.mark.parametrize("how", ["hangup", "caller_disconnect", "upstream_end"])
async def test_sideband_closes_when_the_call_ends(start_relay: RelayFactory, how: str) -> None:
    relay = await keyed_relay(start_relay)
    async with realtime_client() as browser:
        call_id = await start_call(relay, browser, {"type": "realtime"})
        call = relay.registry.get_call(call_id)
        path = f"/v1/realtime/calls/{call_id}/sideband" if how == "hangup" else None
        ws = await open_sideband(relay, call_id, path)
        # a trusted client event goes upstream; its answer comes back on the sideband
        await ws.send_str(
            json.dumps(
                {"type": "response.create", "response": {"instructions": "Say: backend here"}}
            )
        )
        await until_done(ws)
        if how == "hangup":
            response = await relay.http.post(
                relay.url(f"/v1/realtime/calls/{call_id}/hangup"), headers=AUTH
            )
            assert response.status == 200
        elif how == "caller_disconnect":
            await browser.pc.close()
        else:
            emulator = relay.emulator_base_url
            key = relay.app[UPSTREAM].api_key
            response = await relay.http.post(
                f"{emulator}/realtime/calls/{call.upstream.call_id}/hangup",
                headers={"Authorization": "Bearer " + key.value},
            )
            assert response.status == 200, await response.text()
        code, reason = await closed_with(ws)
        assert code == 1000
        assert reason.startswith("call ended: "), reason
        await asyncio.wait_for(call.wait_closed(), 10)
        assert reason == f"call ended: {call.outcome}"
        await ws.close()


async def test_sideband_needs_the_api_key_and_a_live_call(start_relay: RelayFactory) -> None:
    relay = await keyed_relay(start_relay)
    async with realtime_client() as browser:
        call_id = await start_call(relay, browser, {"type": "realtime"})
        url = relay.url(f"/v1/realtime?call_id={call_id}")
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer ek_0123456789abcdef0123456789abcdef"}, 401),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await relay.http.ws_connect(url, headers=headers)
            assert refused.value.status == status
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await relay.http.ws_connect(
                relay.url("/v1/realtime?call_id=rtc_0123456789abcdef0123456789abcdef"),
                headers=AUTH,
            )
        assert refused.value.status == 404
        response = await relay.http.get(relay.url("/v1/realtime?call_id=" + call_id), headers=AUTH)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "websocket_required"
        # malformed events get an error; the sideband and the call go on
        ws = await open_sideband(relay, call_id)
        await ws.send_str("{nope")
        error = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
        assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
        assert relay.registry.get_call(call_id).state == "active"
        await ws.close()


async def test_example_backend_serves_a_tool_over_the_sideband(start_relay: RelayFactory) -> None:
    """examples/backend.py, as is: its token route and its sideband tool handler."""
    import importlib.util

    from aiohttp.test_utils import TestServer

    spec = importlib.util.spec_from_file_location("example_backend", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    relay = await keyed_relay(start_relay)
    backend = TestServer(example.build_app(relay.url("/"), API_KEY), host="127.0.0.1")
    await backend.start_server()
    try:
        token = await (await relay.http.post(str(backend.make_url("/token")))).json()
        async with realtime_client() as browser:
            answer = await browser.connect(relay.http, relay.calls_url, token["value"])
            assert answer.status == 201
            await browser.wait_for("session.created", timeout=10)
            assert browser.location is not None
            call_id = browser.location.rsplit("/", 1)[-1]
            attached = await relay.http.post(str(backend.make_url(f"/calls/{call_id}/attach")))
            assert attached.status == 200
            await until_attached(relay, call_id)
            user_says(browser, "What is the weather in city Lisbon?")
            spoken = await browser.wait_for("response.output_audio_transcript.done", timeout=20)
            assert "Lisbon" in spoken["transcript"] and "sunny" in spoken["transcript"]
            assert not [t for t in browser.types() if "function_call" in t]
    finally:
        await backend.close()


@pytest.mark.parametrize("answer", ["ok", "error", "slow"])
async def test_tool_webhook_answers_tool_calls(start_relay: RelayFactory, answer: str) -> None:
    """With RELAY_TOOL_WEBHOOK_URL, the relay POSTs the tool call (signed), waits a
    bounded time, and gives the model the answer, or an error output when it fails."""
    from aiohttp.test_utils import TestServer

    from relay.ops.webhooks import verify_signature

    received: list[dict[str, Any]] = []

    async def tool(request: web.Request) -> web.Response:
        body = await request.read()
        assert verify_signature(
            "hook-secret",
            body,
            request.headers["X-Relay-Timestamp"],
            request.headers["X-Relay-Signature"],
        )
        received.append(json.loads(body))
        if answer == "error":
            return web.Response(status=500)
        if answer == "slow":
            await asyncio.sleep(3)
        return web.json_response({"output": "rainy"})

    hook_app = web.Application()
    hook_app.router.add_post("/tools", tool)
    hook = TestServer(hook_app, host="127.0.0.1")
    await hook.start_server()
    try:
        relay = await start_relay(
            open_mode=False,
            relay_api_key=Secret(API_KEY),
            tool_webhook_url=str(hook.make_url("/tools")),
            tool_webhook_timeout_secs=1.0,
            webhook_secret=Secret("hook-secret"),
        )
        session = {"type": "realtime", "tools": [WEATHER_TOOL], "relay": HIDE_TOOL_CALLS}
        async with realtime_client() as browser:
            call_id = await start_call(relay, browser, session)
            user_says(browser, "weather in city Rome")
            spoken = await browser.wait_for("response.output_audio_transcript.done", timeout=20)
            text = spoken["transcript"]
            if answer == "ok":
                assert text == "The tool returned: rainy"
            else:
                assert text.startswith("The tool returned: ") and "could not be run" in text
            assert received[0]["call_id"] == call_id
            assert received[0]["name"] == "get_weather"
            assert json.loads(received[0]["arguments"]) == {"city": "Rome"}
            assert not [t for t in browser.types() if "function_call" in t]
    finally:
        await hook.close()


async def test_sideband_reaches_the_owning_shard(tmp_path: Path) -> None:
    """With ``serve --workers 2``, the call-path form of the sideband works whichever
    shard the WebSocket lands on (shard forwarding carries it to the owner)."""
    from support import PacedAudioSource
    from test_process import free_port, start, wait_healthy

    port = free_port()
    relay = start(
        ["serve", "--workers", "2", "--port", str(port)],
        {
            "RELAY_ICE_ADDRESSES": "127.0.0.1",
            "RELAY_NOISE_SUPPRESSION": "off",
            "RELAY_API_KEY": API_KEY,
        },
        tmp_path / "relay.log",
    )
    base = f"http://127.0.0.1:{port}"
    client = RealtimeClient(PacedAudioSource())
    try:
        await wait_healthy(f"{base}/healthz", relay)
        async with aiohttp.ClientSession() as http:
            minted = await http.post(
                f"{base}/v1/realtime/client_secrets", json={"session": {}}, headers=AUTH
            )
            secret = (await minted.json())["value"]
            response = await client.connect(http, f"{base}/v1/realtime/calls", secret)
            assert response.status == 201, await response.text()
            call_id = response.headers["Location"].rsplit("/", 1)[-1]
        await client.wait_for("session.created", timeout=10)
        for attempt in range(8):  # new connections land on either shard: each must work
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(
                    f"{base}/v1/realtime/calls/{call_id}/sideband", headers=AUTH
                )
                say = {"instructions": f"Say: attempt {attempt}"}
                await ws.send_str(json.dumps({"type": "response.create", "response": say}))
                await until_done(ws)
                await ws.close()
    finally:
        await client.close()
        relay.terminate()
        relay.wait(15)
