"""Soak: one call through the relay to an emulator that, like OpenAI's ICE-lite media
servers, ignores ICE consent checks without USE-CANDIDATE. aioice's stock checks lose
such a call after ~30 s; the relay's must keep it. Real timers, real time.

    .venv/bin/python -m bench.consent_soak [--seconds 150] [--stock-consent]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from aiortc.exceptions import InvalidStateError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import PacedAudioSource, RealtimeClient  # noqa: E402

from bench.common import gather_on  # noqa: E402
from relay import aiortc_patches  # noqa: E402
from relay.config import EmulatorSettings, Settings  # noqa: E402
from relay.embedded import EMULATOR, build_app  # noqa: E402
from relay.emulator.app import SESSIONS  # noqa: E402
from relay.http.state import REGISTRY  # noqa: E402


async def soak(seconds: float, stock_consent: bool) -> bool:
    gather_on(["127.0.0.1"])
    if stock_consent:  # to see what the relay's fix prevents: aioice's own checks
        import aioice.ice

        aiortc_patches.consent_checks = aioice.ice.Connection.query_consent  # type: ignore[assignment]
    settings = Settings(
        open_mode=True,
        ice_addresses=("127.0.0.1",),
        noise_suppression="off",
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",), strict_consent=True),
    )
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    client = RealtimeClient(PacedAudioSource())
    ok = True
    try:
        async with aiohttp.ClientSession() as http:
            response = await client.connect(http, str(server.make_url("/v1/realtime/calls")), "")
            assert response.status == 201, await response.text()
        call_id = response.headers["Location"].rsplit("/", 1)[-1]
        await client.wait_for("session.created", timeout=10)
        emulated = await server.app[EMULATOR][SESSIONS].wait_for_call(timeout_secs=5)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            await asyncio.sleep(10)
            elapsed = time.monotonic() - started
            call = server.app[REGISTRY].get_call(call_id)
            mark = len(client.events)
            try:
                client.send({"type": "session.update", "session": {"type": "realtime"}})
                await client.wait_for("session.updated", timeout=5, after=mark)
                answered = "yes"
            except (TimeoutError, InvalidStateError):  # no answer, or the channel closed
                answered, ok = "NO", False
            state = call.upstream_pc.connectionState if call else "call ended"
            ok = ok and call is not None and state == "connected"
            if call is None:
                print(f"t={elapsed:6.1f}s the relay ended the call: {state}", flush=True)
                break
            print(
                f"t={elapsed:6.1f}s upstream={state:9s} session.update answered={answered} "
                f"frames at the emulator={emulated.received.frames}",
                flush=True,
            )
    finally:
        await client.close()
        await server.close()
    print("PASS: the call survived" if ok else "FAIL: the call was lost", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument(
        "--stock-consent", action="store_true", help="use aioice's own consent checks"
    )
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(soak(args.seconds, args.stock_consent)) else 1)


if __name__ == "__main__":
    main()
