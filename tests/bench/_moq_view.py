"""Bench viewers for bench_moq: N moq-rs clients (one session each) read every track of one
broadcast's catalog and count the payload bytes they receive.

`python -m tests.bench._moq_view --url moqt://HOST:PORT --path P -n N --deadline S
[--fingerprint HEX]` prints `ready` once every client is connected, then, when every track
ended (or at the deadline), one JSON line: {"bytes": {client: n}, "frames": n,
"dropped_groups": n, "errors": [...]}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import moq


async def _client(args: argparse.Namespace, i: int, counts: dict[str, int], errors: list[str],
                  connected: asyncio.Event, ready: list[int], frames: list[int],
                  dropped: list[int]) -> None:  # fmt: skip
    name = f"c{i}"
    counts[name] = 0
    fingerprints = [args.fingerprint] if args.fingerprint else None
    async with moq.Client(args.url, tls_fingerprints=fingerprints, reconnect=False) as client:
        ready.append(i)
        if len(ready) == args.n:
            connected.set()
        broadcast = await client.announced_broadcast(args.path)
        catalog = await broadcast.catalog()

        async def track(track_name: str) -> None:
            consumer = await broadcast.subscribe_track(track_name)
            async for group in consumer:
                try:
                    async for frame in group:
                        counts[name] += len(frame.payload)
                        frames[0] += 1
                except moq.Error:
                    dropped[0] += 1  # a group the relay dropped (reset): read the next one

        await asyncio.gather(*(track(t) for t in [*catalog.video, *catalog.audio]))


async def main(args: argparse.Namespace) -> None:
    counts: dict[str, int] = {}
    errors: list[str] = []
    frames = [0]
    dropped = [0]
    connected = asyncio.Event()
    ready: list[int] = []
    tasks = [
        asyncio.create_task(_client(args, i, counts, errors, connected, ready, frames, dropped))
        for i in range(args.n)
    ]
    await asyncio.wait_for(connected.wait(), 20)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            exc = task.exception()
            errors.append(f"{exc!r} {getattr(exc, 'details', '')}"[:300])
    sys.stdout.write(
        json.dumps(
            {"bytes": counts, "frames": frames[0], "dropped_groups": dropped[0], "errors": errors}
        )
        + "\n"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=60)
    parser.add_argument("--fingerprint")
    asyncio.run(main(parser.parse_args()))
