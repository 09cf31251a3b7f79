"""``serve --workers N``: a supervisor process and N shard processes (see
:mod:`relay.shards`). The supervisor forwards SIGTERM/SIGINT, waits for every shard
to close its calls, and restarts a shard that dies."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web

from .config import Settings
from .shards import ShardLayout

logger = logging.getLogger(__name__)

RESTART_BACKOFF_SECS = 1.0


def serve_sharded(settings: Settings, workers: int, log_level: int) -> None:
    socket_dir = tempfile.mkdtemp(prefix="realtime-relay-")  # mode 0700: ours alone
    token = ShardLayout.new_token()
    layouts = [ShardLayout(i, workers, socket_dir, token) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(layout: ShardLayout) -> BaseProcess:
        process = context.Process(
            target=run_shard, args=(settings, layout, log_level), name=f"shard-{layout.index}"
        )
        process.start()
        return process

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("starting %d shards on %s:%d", workers, settings.host, settings.port)
    processes = {layout.index: start(layout) for layout in layouts}
    try:
        while not stopping:
            time.sleep(0.2)
            for layout in layouts:
                process = processes[layout.index]
                if not process.is_alive() and not stopping:
                    logger.error("shard %d exited (%s); restarting", layout.index, process.exitcode)
                    time.sleep(RESTART_BACKOFF_SECS)
                    processes[layout.index] = start(layout)
    finally:
        # Each shard drains first (RELAY_DRAIN_TIMEOUT_SECS), then closes its calls.
        _stop_all(
            list(processes.values()),
            settings.drain_timeout_secs + settings.shutdown_timeout_secs + 5,
        )
        shutil.rmtree(socket_dir, ignore_errors=True)


def _stop_all(processes: list[BaseProcess], timeout_secs: float) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            process.terminate()  # SIGTERM: each shard closes its calls
    deadline = time.monotonic() + timeout_secs
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.warning("shard %s did not stop in time; killing it", process.name)
            process.kill()
            process.join(5)


def run_shard(settings: Settings, layout: ShardLayout, log_level: int) -> None:
    """Entry point of one shard process."""
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s [shard {layout.index}] %(name)s: %(message)s",
    )
    asyncio.run(_shard_main(settings, layout))


async def _shard_main(settings: Settings, layout: ShardLayout) -> None:
    from .embedded import build_app
    from .serving import serve

    async def unix_site(runner: web.AppRunner) -> None:
        await web.UnixSite(runner, layout.socket_path(layout.index)).start()
        logger.info("shard %d of %d ready", layout.index, layout.count)

    await serve(build_app(settings, shard=layout), settings, reuse_port=True, extra_sites=unix_site)
