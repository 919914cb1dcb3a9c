"""Bench viewers for bench_moq: N moq-rs clients (one session each) read every track of one
broadcast's catalog and count the payload bytes they receive.

`python -m tests.bench._moq_view --url moqt://HOST:PORT --path P -n N --deadline S
[--fingerprint HEX]` prints `ready` once every client is connected, then, when every track
ended (or at the deadline), one JSON line: {"bytes": {client: n}, "frames": n,
"dropped_groups": n, "gap_groups": n, "tail_groups": n, "skipped_groups": n, "errors": [...]}.

Skipped groups are what the viewers saw, never the server's records. Each client reads every
group of a track as it arrives and notes the sequences it read whole: `gap_groups` are the holes
between the lowest and highest of them (a group the relay skipped, or reset: `dropped_groups`
counts those resets apart), `tail_groups` the groups at a track's end that another client read
and this one did not (it fell behind by the deadline). `skipped_groups` = gap + tail. Groups
before a client's first one on a track are not counted (it may join late).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import moq


async def _client(args: argparse.Namespace, i: int, counts: dict[str, int], errors: list[str],
                  connected: asyncio.Event, ready: list[int], frames: list[int],
                  dropped: list[int], seqs: dict[str, dict[str, set[int]]],
                  video_tracks: set[str]) -> None:  # fmt: skip
    name = f"c{i}"
    counts[name] = 0
    fingerprints = [args.fingerprint] if args.fingerprint else None
    async with moq.Client(args.url, tls_fingerprints=fingerprints, reconnect=False) as client:
        ready.append(i)
        if len(ready) == args.n:
            connected.set()
        broadcast = await client.announced_broadcast(args.path)
        catalog = await broadcast.catalog()
        video_tracks.update(catalog.video)

        async def read(group: moq.GroupConsumer, got: set[int]) -> None:
            try:
                async for frame in group:
                    counts[name] += len(frame.payload)
                    frames[0] += 1
            except moq.Error:
                dropped[0] += 1  # reset by the relay: the group is not whole
                return
            got.add(group.sequence)

        async def track(track_name: str) -> None:
            consumer = await broadcast.subscribe_track(track_name)
            got = seqs.setdefault(track_name, {}).setdefault(name, set())
            readers: set[asyncio.Task[None]] = set()
            # Arrival order, each group read by a task of its own: the default (sequence order)
            # iteration skips forward past a group when this reader is behind, which would count
            # the viewer's own pace as the relay's skip.
            while (group := await consumer.recv_group()) is not None:
                task = asyncio.create_task(read(group, got))
                readers.add(task)
                task.add_done_callback(readers.discard)
            await asyncio.gather(*readers)

        await asyncio.gather(*(track(t) for t in [*catalog.video, *catalog.audio]))


async def main(args: argparse.Namespace) -> None:
    counts: dict[str, int] = {}
    errors: list[str] = []
    frames = [0]
    dropped = [0]
    seqs: dict[str, dict[str, set[int]]] = {}
    video_tracks: set[str] = set()
    connected = asyncio.Event()
    ready: list[int] = []
    tasks = [
        asyncio.create_task(
            _client(args, i, counts, errors, connected, ready, frames, dropped, seqs, video_tracks)
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
    gaps = tail = video = 0
    for track_name, by_client in seqs.items():
        before = gaps + tail
        last = max((max(got) for got in by_client.values() if got), default=-1)
        for i in range(args.n):
            got = by_client.get(f"c{i}", set())
            if not got:
                errors.append(f"c{i} read no whole group of track {track_name}")
                tail += last + 1
                continue
            gaps += max(got) - min(got) + 1 - len(got)
            tail += last - max(got)
        if track_name in video_tracks:
            video += gaps + tail - before
    report = {
        "bytes": counts,
        "frames": frames[0],
        "dropped_groups": dropped[0],
        "gap_groups": gaps,
        "tail_groups": tail,
        "skipped_groups": gaps + tail,
        "video_skipped_groups": video,
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
