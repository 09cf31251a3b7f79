"""The web client's playout buffer on the WebSocket transport, on a clean link and on
one that loses 1 % of its packets and adds up to 50 ms of jitter.

    unshare -n sh -c 'ip link set lo up && PYTHONPATH=$PWD .venv/bin/python -m bench.ws_playout'

(as root: it builds a network namespace with a veth, like the network tests; ``unshare
-n`` keeps everything off the machine's own network.)

Real Chromium lives in a namespace of its own (``tests/netns.py``) and opens the relay's
page with the WebSocket transport forced (a silent microphone; a typed question every
6 s keeps the agent talking); ``realtime-relay serve`` (HTTPS, built-in
emulator) runs on the namespace's host side, behind a small TCP proxy of this process
that all of the page's traffic goes through. Each condition is one call, sampled every
100 ms for ``--seconds`` once the agent's audio flows: the page's
``client.getStats()`` (``playoutBufferMs``: what the AudioWorklet's playout buffer holds;
``underruns``: times it ran dry while playing; ``droppedMs``: audio it dropped above its
300 ms cap).

The kernel here has no ``sch_netem``, so:

* loss: nftables drops 1 % of the packets on the client's veth, both ways, at random
  (``numgen random``, as ``tests/browser/test_ice_tcp_loss.py``); TCP retransmits them;
* jitter: the proxy holds each chunk it forwards, both ways, for a random 0-50 ms
  (uniform), keeping the byte order (a chunk never overtakes the one before it, as on a
  TCP connection): netem's ``delay 25ms 25ms`` in spirit, applied per read, not per
  packet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "browser")]

from browser_harness import BASE_ARGS, CHROMIUM, write_wav  # noqa: E402
from certs import self_signed  # noqa: E402
from netns import ClientNetwork, available  # noqa: E402

from bench.runinfo import machine_lines  # noqa: E402

RELAY_PORT, PROXY_PORT = 8443, 9443
STATS_JS = "window.realtimeApp.client.getStats()"
#: A new question this often, so the agent keeps talking through the window.
ASK_EVERY_SECS = 6.0


class JitterProxy:
    """host:PROXY_PORT -> the relay; each chunk waits a random 0..``jitter_ms``."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.host, self.target = host, target
        self.jitter_ms = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, PROXY_PORT)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        due = 0.0
        try:
            while data := await source.read(65536):
                # In order: never before the previous chunk (a TCP stream keeps order).
                due = max(due, time.monotonic() + random.uniform(0, self.jitter_ms) / 1000)
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()


@dataclass
class Condition:
    name: str
    loss_pct: int
    jitter_ms: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    packets_dropped: int = 0
    error: str | None = None


def relay_process(net: ClientNetwork, folder: Path) -> subprocess.Popen[bytes]:
    cert, key = self_signed(folder, net.host_ip)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {
        "RELAY_OPEN": "1",
        "RELAY_ICE_ADDRESSES": net.host_ip,
        "RELAY_NOISE_SUPPRESSION": "off",
        "RELAY_MAX_LOOP_LAG_MS": "2000",
        "RELAY_WORKERS": "1",
    }
    script = Path(sys.executable).parent / "realtime-relay"
    argv = [str(script), "serve", "--host", net.host_ip, "--port", str(RELAY_PORT)]
    argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
    log = (folder / "relay.log").open("wb")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_for_relay(host: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, RELAY_PORT)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise TimeoutError("the relay did not listen")


async def one_call(
    playwright: Any, net: ClientNetwork, wav: Path, condition: Condition, seconds: float
) -> None:
    """A call with the WebSocket forced; samples its playout buffer."""
    assert CHROMIUM is not None
    browser = await playwright.chromium.launch(
        executable_path=str(net.wrapper(CHROMIUM)),
        headless=True,
        args=[
            *BASE_ARGS,
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--ignore-certificate-errors",
            f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {net.host_ip}",
        ],
    )
    try:
        context = await browser.new_context()
        await context.add_init_script('window.REALTIME_RELAY_CONFIG = {"transport": "websocket"};')
        page = await context.new_page()
        await page.goto(f"https://{net.host_ip}:{PROXY_PORT}/")
        await page.wait_for_function("() => !!window.realtimeApp", timeout=20000)
        await page.get_by_role("button", name="Start call").click()
        await ask(page)
        deadline = time.monotonic() + 60
        while ((await page.evaluate(STATS_JS)) or {}).get("framesReceived", 0) <= 100:
            if time.monotonic() > deadline:
                status = await page.locator("#status-text").text_content()
                raise TimeoutError(f"no agent audio within 60 s ({status})")
            await asyncio.sleep(0.2)
        dropped_before = net.dropped() if condition.loss_pct else 0
        end = time.monotonic() + seconds
        next_ask = time.monotonic() + ASK_EVERY_SECS
        while time.monotonic() < end:
            if time.monotonic() > next_ask:
                await ask(page)
                next_ask += ASK_EVERY_SECS
            stats = await page.evaluate(STATS_JS)
            if stats is None:  # the call is over
                status = await page.locator("#status-text").text_content()
                raise RuntimeError(
                    f"the call ended after {len(condition.samples)} samples: {status}"
                )
            condition.samples.append({"t": time.monotonic(), **stats})
            await asyncio.sleep(0.1)
        if condition.loss_pct:
            condition.packets_dropped = net.dropped() - dropped_before
    finally:
        await browser.close()


async def ask(page: Any) -> None:
    """A typed question: the agent answers aloud (the microphone is silent, so the
    emulator's speech recognition, the heaviest part of it, stays idle)."""
    await page.locator("#message").fill("Tell me a short story about the sea.")
    await page.locator("#send").click()


def report(conditions: Sequence[Condition], seconds: float) -> str:
    lines = [
        f"web client playout buffer, WebSocket transport, {seconds:g} s per condition, "
        "sampled every 100 ms",
        f"{'condition':34} {'n':>4} {'p50':>5} {'p95':>5} {'max':>5} {'min':>4} ms | "
        f"{'underruns':>9} {'dropped ms':>10} {'frames/s':>8} {'pkts lost':>9}",
    ]
    for c in conditions:
        if c.error or len(c.samples) < 2:
            lines.append(f"{c.name:34} FAILED: {c.error or 'no samples'}")
            continue
        depth = np.array([s["playoutBufferMs"] for s in c.samples], dtype=float)
        first, last = c.samples[0], c.samples[-1]
        span = last["t"] - first["t"]
        underruns = last["underruns"] - first["underruns"]
        dropped = last.get("droppedMs", 0) - first.get("droppedMs", 0)
        rate = (last["framesReceived"] - first["framesReceived"]) / span
        lines.append(
            f"{c.name:34} {len(depth):4d} {np.percentile(depth, 50):5.0f} "
            f"{np.percentile(depth, 95):5.0f} {depth.max():5.0f} {depth.min():4.0f}    | "
            f"{underruns:9d} {dropped:10.0f} {rate:8.1f} {c.packets_dropped:9d}"
        )
    return "\n".join(lines)


async def run(seconds: float) -> int:
    from playwright.async_api import async_playwright

    reason = available()
    if reason is not None or CHROMIUM is None:
        print(f"needs network namespaces and chromium: {reason or 'no chromium'}")
        return 2
    for line in machine_lines():
        print(line, flush=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-ws-playout-"))
    wav = write_wav(folder / "mic.wav", np.zeros(2 * 48000, np.int16))
    net = ClientNetwork.create()
    relay = relay_process(net, folder)
    proxy = JitterProxy(net.host_ip, (net.host_ip, RELAY_PORT))
    conditions = [Condition("clean", 0, 0.0), Condition("1% loss + 0-50 ms jitter", 1, 50.0)]
    try:
        await wait_for_relay(net.host_ip)
        await proxy.start()
        async with async_playwright() as playwright:
            for condition in conditions:
                print(f"running {condition.name}, {seconds:g} s ...", file=sys.stderr)
                proxy.jitter_ms = condition.jitter_ms
                if condition.loss_pct:
                    net.lose(condition.loss_pct)
                try:
                    await asyncio.wait_for(
                        one_call(playwright, net, wav, condition, seconds), seconds + 120
                    )
                except Exception as exc:  # a failed condition is reported, the run goes on
                    condition.error = f"{type(exc).__name__}: {exc}"[:300]
                finally:
                    if condition.loss_pct:
                        net.lossless()
    finally:
        await proxy.stop()
        relay.terminate()
        relay.wait(15)
        net.remove()
    print()
    print(report(conditions, seconds))
    print(f"\nrelay log: {folder / 'relay.log'}")
    return 1 if any(c.error for c in conditions) else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_playout", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="sampled per condition")
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(run(args.seconds)))


if __name__ == "__main__":
    main()
