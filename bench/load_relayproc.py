"""The relay under test, for ``bench.load``, with three bench-only hooks.

    python -m bench.load_relayproc relay [realtime-relay args, default: serve]
    python -m bench.load_relayproc stock [bench.stock_relay args]

It runs the project's relay (``relay.cli.main``) or the stock aiortc relay
(``bench.stock_relay.main``) unchanged, after wrapping their ``create_app`` so that the
app also serves:

* ``GET /bench/stats``: the number of asyncio tasks, and this process's event-loop lag
  (a task that sleeps 20 ms and records how late it woke) since the previous call;
* ``POST /bench/profile`` ``{"action": "start"}`` / ``{"action": "stop", "path": P}``:
  cProfile (thread CPU-time clock) of the event-loop thread between the two, written
  to P (pstats format).
  Only when the environment has ``BENCH_LOAD_PROFILE=1``.

The lag probe costs ~50 wake-ups per second (well under 0.1 % of a core).
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bench.common import LagProbe, lag_summary

LAG = web.AppKey("bench_lag", LagProbe)
PROFILE_ENV = "BENCH_LOAD_PROFILE"


def add_bench_routes(app: web.Application) -> web.Application:
    lag = LagProbe(0.02)
    app[LAG] = lag
    profiler: list[cProfile.Profile] = []

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "tasks": len(asyncio.all_tasks()),
                "lag": lag_summary(lag.take()),
                "pid": os.getpid(),
            }
        )

    async def profile(request: web.Request) -> web.Response:
        body = await request.json()
        action = body.get("action")
        if action == "start" and not profiler:
            # CPU time of the loop thread, not wall time: idle waits in epoll and time
            # the thread was pre-empted by other threads do not count.
            prof = cProfile.Profile(time.thread_time)
            profiler.append(prof)
            prof.enable()
            return web.json_response({"profiling": True})
        if action == "stop" and profiler:
            prof = profiler.pop()
            prof.disable()
            prof.dump_stats(str(body["path"]))
            return web.json_response({"profiling": False, "path": body["path"]})
        return web.json_response({"error": f"cannot {action!r} now"}, status=409)

    async def on_startup(app: web.Application) -> None:
        lag.start()

    async def on_cleanup(app: web.Application) -> None:
        await lag.stop()

    app.router.add_get("/bench/stats", stats)
    if os.environ.get(PROFILE_ENV) == "1":
        app.router.add_post("/bench/profile", profile)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _wrap(create: Callable[..., web.Application]) -> Callable[..., web.Application]:
    def create_app(*args: Any, **kwargs: Any) -> web.Application:
        return add_bench_routes(create(*args, **kwargs))

    return create_app


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("relay", "stock"):
        raise SystemExit("usage: python -m bench.load_relayproc relay|stock [args...]")
    which, rest = args[0], args[1:]
    if which == "relay":
        import relay.http.app as relay_app
        from relay.cli import main as relay_main

        relay_app.create_app = _wrap(relay_app.create_app)  # type: ignore[assignment]
        relay_main(rest or ["serve"])
    else:
        import bench.stock_relay as stock

        stock.create_app = _wrap(stock.create_app)  # type: ignore[assignment]
        stock.main(rest)


if __name__ == "__main__":
    main()
