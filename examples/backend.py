"""An example app backend for the relay: it mints client secrets for its browsers with
its own instructions, tools and policy, and answers the tool calls of their calls over
the sideband, so the browser never sees a tool call or its arguments.

    pip install 'openai[realtime]' aiohttp
    RELAY_API_KEY=... python examples/backend.py --relay http://127.0.0.1:8080 --port 8000

Routes (the browser's page calls them):

* ``POST /token``: a client secret, ``{"value": "ek_..."}`` (the relay web client's
  ``tokenUrl``);
* ``POST /calls/{call_id}/attach``: once the browser's call is up (the web client's
  ``onStateChange`` gives ``callId``), the backend opens the call's sideband and serves
  its tools until the call ends. A real backend checks that the call is its user's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import openai
from aiohttp import web

log = logging.getLogger("example-backend")

INSTRUCTIONS = "You are the weather desk. Answer in one sentence."
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Look up the weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
#: The relay's policy for the browser: the default client events, every server event
#: except tool-call arguments (which also hides function-call items from the browser).
POLICY = {"allowed_server_events": ["*", "-response.function_call_arguments.*"]}


def session_config() -> dict[str, Any]:
    """What every browser of this app gets; the relay locks all of it for the call."""
    return {
        "type": "realtime",
        "instructions": INSTRUCTIONS,
        "tools": TOOLS,
        "tool_choice": "auto",
        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
        "relay": POLICY,
    }


async def get_weather(city: str = "nowhere") -> dict[str, Any]:
    return {"city": city, "forecast": "sunny", "celsius": 21}


ToolHandler = Callable[..., Awaitable[dict[str, Any]]]
HANDLERS: dict[str, ToolHandler] = {"get_weather": get_weather}


async def serve_tools(
    client: openai.AsyncOpenAI, call_id: str, handlers: dict[str, ToolHandler] = HANDLERS
) -> None:
    """Answer the call's tool calls over its sideband until the call ends (the relay
    closes the sideband with code 1000 then, and the loop ends)."""
    async with client.realtime.connect(call_id=call_id) as connection:
        async for event in connection:
            if event.type != "response.function_call_arguments.done":
                continue
            handler = handlers.get(event.name or "")
            try:
                arguments = json.loads(event.arguments or "{}")
                if handler is None:
                    raise LookupError(f"no tool named {event.name!r}")
                result: dict[str, Any] = await handler(**arguments)
            except Exception as exc:  # the model is told, the call goes on
                result = {"error": str(exc)}
            await connection.conversation.item.create(
                item={
                    "type": "function_call_output",
                    "call_id": event.call_id,
                    "output": json.dumps(result),
                }
            )
            await connection.response.create()
    log.info("call %s ended: sideband closed", call_id)


def build_app(relay_url: str, relay_key: str) -> web.Application:
    client = openai.AsyncOpenAI(api_key=relay_key, base_url=relay_url.rstrip("/") + "/v1")
    tasks: set[asyncio.Task[None]] = set()

    async def token(request: web.Request) -> web.Response:
        secret = await client.realtime.client_secrets.create(
            session=session_config(),  # type: ignore[arg-type]
            expires_after={"anchor": "created_at", "seconds": 60},
        )
        return web.json_response({"value": secret.value, "expires_at": secret.expires_at})

    async def attach(request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        task = asyncio.ensure_future(serve_tools(client, call_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.json_response({"attached": call_id})

    async def close(app: web.Application) -> None:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_post("/calls/{call_id}/attach", attach)
    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", default="http://127.0.0.1:8080", help="the relay's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    key = os.environ.get("RELAY_API_KEY")
    if not key:
        raise SystemExit("set RELAY_API_KEY (the relay's API key)")
    logging.basicConfig(level=logging.INFO)
    web.run_app(build_app(args.relay, key), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
