"""A gateway in a process of its own, so a test can read its resident memory (VmRSS).

`python -m tests.integration._limits_server '{"passphrase": ..., "max_sessions": ...}'` serves
SRT on 127.0.0.1 (a free port) with `ServerConfig` fields from the JSON argument, logs JSON
lines to stderr, prints `{"port": N}` on stdout once bound, then answers each line read on
stdin with one JSON line: what the server holds (`Server.held()`), its refusal count, the
number of `StatsHandle` entries and of Python's allocated memory blocks (after a
collection). It exits when stdin closes or on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import sys
import threading
from typing import Any

from gateway import Server, ServerConfig
from gateway.logs import configure_logging
from model import Origin, StatsHandle


def _answer(server: Server, stats: StatsHandle) -> dict[str, Any]:
    gc.collect()
    return {
        **server.held(),
        "rejected": server.rejected,
        "stats_entries": len(stats.snapshot()),
        "py_blocks": sys.getallocatedblocks(),
    }


def _say(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


async def _main(settings: dict[str, Any]) -> None:
    configure_logging("json", "info")
    origin, stats = Origin(), StatsHandle(node="limits-test")
    config = ServerConfig(listen=("127.0.0.1", 0), **settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await Server.bind(config=config, origin=origin) as server:
        server.with_stats(stats)
        _say({"port": server.port})

        def read_commands() -> None:
            # A thread: stdin is a pipe the loop need not poll; each line asks for one answer.
            for _line in sys.stdin:
                future = asyncio.run_coroutine_threadsafe(_snapshot(), loop)
                _say(future.result(timeout=10))
            loop.call_soon_threadsafe(stop.set)

        async def _snapshot() -> dict[str, Any]:
            return _answer(server, stats)

        threading.Thread(target=read_commands, daemon=True).start()
        serving = asyncio.create_task(server.serve(origin))
        await stop.wait()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
