"""The floor of moqsrt's architecture for bench_gateway: a Python SRT relay that only moves bytes.

`python -m tests.bench._byte_relay --listen host:port` accepts callers on one SRT port through
`gateway.srt.SrtReactor`, exactly as `moqsrt serve` does (same reactor, I/O thread, batches and
ctypes sends), with the stream ids moqsrt reads (`#!::r=PATH,m=publish|request`). Every batch a
publisher's connection delivers goes to that path's viewers as it came: one `send_many` per
viewer per batch, no TS demux, no model, no mux, no metering. When a publisher ends, its
viewers are closed. It prints `ready` once listening and runs until SIGINT/SIGTERM.

What it costs per delivered GB is what moqsrt would cost if its import, model, export and
fan-out were free: the gap between the two is the price of the Python media path, and the gap
between it and ffmpeg is what that path may cost for moqsrt to match ffmpeg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable

from gateway.srt import (
    Accept,
    HandshakeInfo,
    Reject,
    SrtConnection,
    SrtError,
    SrtOptions,
    SrtReactor,
    set_libsrt_log_level,
)
from gateway.streamid import StreamIdError, parse_stream_id


async def _decide(info: HandshakeInfo) -> Accept | Reject:
    """Handshake hook: let in every caller whose stream id parses, keyed by (path, mode)."""
    try:
        request = parse_stream_id(info.stream_id)
    except StreamIdError:
        return Reject(1400)
    return Accept(context=(request.resource, request.mode))


class _Relay:
    """Viewers by path; each publisher's batches go to its path's viewers."""

    def __init__(self) -> None:
        self.viewers: dict[str, list[SrtConnection]] = {}

    async def serve(self, conn: SrtConnection) -> None:
        context = conn.context  # (path, mode), set by _decide
        assert isinstance(context, tuple)
        path, mode = str(context[0]), str(context[1])
        if mode == "request":
            self.viewers.setdefault(path, []).append(conn)
            await conn.wait_closed()
            with contextlib.suppress(ValueError):
                self.viewers.get(path, []).remove(conn)
            return
        try:
            while batch := await conn.recv_batch():
                for viewer in self.viewers.get(path, ()):
                    with contextlib.suppress(SrtError):  # a broken viewer ends on its own
                        viewer.send_many(batch)
        except SrtError:
            pass
        finally:
            conn.close()
            for viewer in self.viewers.pop(path, []):
                viewer.close()


async def _run(host: str, port: int, latency_ms: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay = _Relay()
    tasks: set[asyncio.Task[None]] = set()
    async with SrtReactor() as reactor:
        options = SrtOptions(latency_ms=latency_ms)
        listener = await reactor.listen(host, port, options, _decide, backlog=256)

        async def acceptor() -> None:
            async for conn in listener:
                task = asyncio.create_task(relay.serve(conn))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        accepting = asyncio.create_task(acceptor())
        print("ready", flush=True)
        await stop.wait()
        accepting.cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(accepting, *tasks, return_exceptions=True)
        await listener.aclose()


def main(argv: Iterable[str] | None = None) -> None:
    """Entry point (see the module docs)."""
    parser = argparse.ArgumentParser(prog="_byte_relay")
    parser.add_argument("--listen", required=True, help="host:port to accept SRT callers on")
    parser.add_argument("--latency-ms", type=int, default=120)
    args = parser.parse_args(list(argv) if argv is not None else None)
    set_libsrt_log_level(logging.ERROR)
    host, _, port = args.listen.rpartition(":")
    asyncio.run(_run(host, int(port), args.latency_ms))


if __name__ == "__main__":
    main()
