"""Reconnect time after a network blip: real Chromium (the relay's voice page, a fake
microphone playing speech) in a network namespace whose link goes down for
``--blip`` seconds, several times in one call, with the relay's default settings
(``RELAY_MEDIA_TIMEOUT_SECS`` 5, ``RELAY_CALLER_GRACE_SECS`` 15) unless told otherwise.

For each blip, measured on the relay's side from the moment the link comes back:

* ``audio_back_ms``: the caller's audio reaches the relay again (its first frame);
* ``connected_ms``: the page says "connected" and the relay carries the call again
  (polled every 50 ms; 0 when the page never left "connected");
* ``resumed``: whether it took a new leg (the relay counted a resume) or ICE rode the
  blip out on the same connection; ``lost``: whether the relay had noticed the caller
  gone (and was holding the call in its grace).

Every blip must keep the same call and the one upstream session (checked; a failure
is reported). Runs itself in a fresh network namespace (as the tests do); needs root.

    .venv/bin/python -m bench.reconnect [--blips 5] [--blip 3] [--transport webrtc]
        [--media-timeout 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "browser")]

from browser_harness import BASE_ARGS, CHROMIUM, write_wav  # noqa: E402
from certs import self_signed  # noqa: E402
from netns import ClientNetwork, available  # noqa: E402
from support import espeak  # noqa: E402

from bench.common import write_json  # noqa: E402
from relay.config import EmulatorSettings, Settings  # noqa: E402
from relay.embedded import EMULATOR, build_app  # noqa: E402
from relay.emulator.app import SESSIONS  # noqa: E402
from relay.http.state import REGISTRY  # noqa: E402
from relay.serving import start_site  # noqa: E402

PORT = 8443
POLL_SECS = 0.05
SETTLE_SECS = 4.0


async def serve(net: ClientNetwork, folder: Path, args: argparse.Namespace) -> web.AppRunner:
    cert, key = self_signed(folder, net.host_ip)
    settings = Settings(
        open_mode=True,
        host=net.host_ip,
        port=PORT,
        tls_cert=str(cert),
        tls_key=str(key),
        ice_addresses=(net.host_ip,),
        noise_suppression="off",
        emulator=EmulatorSettings(ice_addresses=("127.0.0.1",)),
    )
    settings = replace(
        settings, media_timeout_secs=args.media_timeout, caller_grace_secs=args.grace
    )
    runner = web.AppRunner(build_app(settings), handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    await start_site(runner, settings)
    return runner


async def page_status(page: Any) -> str:
    return str(await page.evaluate("window.realtimeApp.client.state.status"))


async def one_blip(net: ClientNetwork, page: Any, call: Any, blip: float) -> dict[str, Any]:
    resumes = call.grace.resumes
    statuses: set[str] = set()
    net.exec("ip", "link", "set", "vc0", "down")
    down = time.monotonic()
    while time.monotonic() - down < blip:
        statuses.add(await page_status(page))
        await asyncio.sleep(POLL_SECS)
    lost = call.grace.waiting
    frames = call.caller_audio.frames_in
    net.exec("ip", "link", "set", "vc0", "up")
    up = time.monotonic()
    audio_back = connected = None
    while time.monotonic() - up < 20 and (audio_back is None or connected is None):
        now = time.monotonic() - up
        if audio_back is None and call.caller_audio.frames_in > frames:
            audio_back = now
        status = await page_status(page)
        statuses.add(status)
        # Connected again: on the old path, or (the relay gave it up) on a new leg.
        carried = not call.grace.waiting and (not lost or call.grace.resumes > resumes)
        if connected is None and status == "connected" and carried:
            connected = now
        await asyncio.sleep(POLL_SECS)
    return {
        "lost": lost,
        "resumed": call.grace.resumes > resumes,
        "page_reconnecting": "reconnecting" in statuses,
        "audio_back_ms": None if audio_back is None else round(audio_back * 1000),
        "connected_ms": None if connected is None else round(connected * 1000),
        "call_active": call.state == "active",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    reason = available()
    if reason is not None or CHROMIUM is None:
        raise SystemExit(f"needs network namespaces and Chromium: {reason or 'no chromium'}")
    folder = Path(tempfile.mkdtemp(prefix="bench-reconnect-"))
    wav = write_wav(folder / "speech.wav", espeak(SPEECH, folder / "speech-48k.wav"))
    net = ClientNetwork.create()
    runner = await serve(net, folder, args)
    try:
        async with async_playwright() as playwright:
            flags = [
                *BASE_ARGS,
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--use-fake-ui-for-media-stream",
                "--ignore-certificate-errors",
                f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {net.host_ip}",
            ]
            browser = await playwright.chromium.launch(
                executable_path=str(net.wrapper(CHROMIUM)), headless=True, args=flags
            )
            context = await browser.new_context()
            config = f"window.REALTIME_RELAY_CONFIG = {{transport: {args.transport!r}}};"
            await context.add_init_script(config)
            page = await context.new_page()
            await page.goto(f"https://{net.host_ip}:{PORT}/")
            await page.get_by_role("button", name="Start call").click()
            await page.wait_for_function(
                "window.realtimeApp.client.state.status === 'connected'", timeout=20000
            )
            call_id = await page.evaluate("window.realtimeApp.client.state.callId")
            call = runner.app[REGISTRY].get_call(call_id)
            await asyncio.sleep(SETTLE_SECS)
            blips = []
            for _ in range(args.blips):
                blips.append(await one_blip(net, page, call, args.blip))
                print(blips[-1], flush=True)
                await asyncio.sleep(SETTLE_SECS)
            same_call = await page.evaluate("window.realtimeApp.client.state.callId") == call_id
            sessions = runner.app[EMULATOR][SESSIONS].created
            await browser.close()
    finally:
        await runner.cleanup()
        net.remove()
    return {
        "transport": args.transport,
        "blip_secs": args.blip,
        "media_timeout_secs": args.media_timeout,
        "grace_secs": args.grace,
        "blips": blips,
        "same_call": same_call,
        "upstream_sessions": sessions,
    }


SPEECH = "Hello there. Tell me something about the weather today, please."


def summary(result: dict[str, Any]) -> str:
    blips = result["blips"]
    audio = [b["audio_back_ms"] for b in blips if b["audio_back_ms"] is not None]
    connected = [b["connected_ms"] for b in blips if b["connected_ms"] is not None]

    def figures(values: list[int]) -> str:
        if not values:
            return "none"
        return f"median {statistics.median(values):.0f} ms, max {max(values)} ms"

    ok = result["same_call"] and result["upstream_sessions"] == 1
    ok = ok and all(b["call_active"] for b in blips) and len(audio) == len(blips)
    return (
        f"{result['transport']}: {len(blips)} blips of {result['blip_secs']:.0f} s "
        f"(media timeout {result['media_timeout_secs']:.0f} s, grace "
        f"{result['grace_secs']:.0f} s): caller audio back {figures(audio)}; page "
        f"connected {figures(connected)}; new legs {sum(b['resumed'] for b in blips)}, "
        f"relay held the call {sum(b['lost'] for b in blips)}; same call and one upstream "
        f"session: {'yes' if ok else 'NO'}"
    )


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blips", type=int, default=5)
    parser.add_argument("--blip", type=float, default=3.0, help="seconds the link is down")
    parser.add_argument("--transport", choices=["webrtc", "websocket"], default="webrtc")
    parser.add_argument("--media-timeout", type=float, default=Settings.media_timeout_secs)
    parser.add_argument("--grace", type=float, default=Settings.caller_grace_secs)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.environ.get("RELAY_BENCH_NETNS") != "1":  # a fresh namespace, as the tests
        os.environ["RELAY_BENCH_NETNS"] = "1"
        command = [sys.executable, "-m", "bench.reconnect", *sys.argv[1:]]
        os.execvp(
            "unshare",
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"] + command,
        )
    signal.signal(signal.SIGTERM, _interrupted)  # the namespace and Chromium are removed
    result = asyncio.run(run(args))
    print(summary(result))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
