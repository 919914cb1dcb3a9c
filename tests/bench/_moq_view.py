"""Bench viewers for bench_moq: N moq-rs clients (one session each) read every track of one
broadcast's catalog and count the payload bytes they receive.

`python -m tests.bench._moq_view --url moqt://HOST:PORT --path P -n N --deadline S
[--fingerprint HEX]` prints `ready` once every client is connected, then, when every track
ended (or at the deadline), one JSON line: {"bytes": {client: n}, "frames": n,
"dropped_groups": n, "gap_groups": n, "tail_groups": n, "skipped_groups": n, "errors": [...]}.

Skipped groups are what the viewers saw, never the server's records: `gap_groups` are holes in
the group sequence a client read on a track (tracks are read in sequence order, so a group the
relay skipped shows as a jump), `dropped_groups` are groups reset while being read, and
`tail_groups` are groups at a track's end that another client got and this one did not (it fell
behind by the deadline). `skipped_groups` is their sum. Groups before a client's first one on a
track are not counted (it may join late).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import moq


async def _client(args: argparse.Namespace, i: int, counts: dict[str, int], errors: list[str],
                  connected: asyncio.Event, ready: list[int], frames: list[int],
                  dropped: list[int], seqs: dict[str, dict[str, list[int]]],
                  gaps: list[int]) -> None:  # fmt: skip
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
            seen = seqs.setdefault(track_name, {}).setdefault(name, [])  # [first, last]
            async for group in consumer:
                if seen:
                    gaps[0] += max(0, group.sequence - seen[1] - 1)
                    seen[1] = max(seen[1], group.sequence)
                else:
                    seen[:] = [group.sequence, group.sequence]
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
    gaps = [0]
    seqs: dict[str, dict[str, list[int]]] = {}
    connected = asyncio.Event()
    ready: list[int] = []
    tasks = [
        asyncio.create_task(
            _client(args, i, counts, errors, connected, ready, frames, dropped, seqs, gaps)
        )
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
    tail = 0
    for track_name, by_client in seqs.items():
        last = max((s[1] for s in by_client.values() if s), default=-1)
        tail += sum(last - by_client.get(f"c{i}", [0, -1])[1] for i in range(args.n))
        if any(not by_client.get(f"c{i}") for i in range(args.n)):
            errors.append(f"a client read no group of track {track_name}")
    report = {
        "bytes": counts,
        "frames": frames[0],
        "dropped_groups": dropped[0],
        "gap_groups": gaps[0],
        "tail_groups": tail,
        "skipped_groups": dropped[0] + gaps[0] + tail,
        "errors": errors,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=60)
    parser.add_argument("--fingerprint")
    asyncio.run(main(parser.parse_args()))
