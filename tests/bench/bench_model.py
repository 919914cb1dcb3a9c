"""Frames per second through the model: write -> one consumer read, metered vs unmetered.

Every shape moves groups of 30 frames of 1-5 KB through one track with a 64 MiB cache budget
(so eviction runs as in production) and the real monotonic clock; "metered" puts a `Usage` on
the producer (ingress) and on the consumer (egress), "unmetered" none. The bench's own loop is
kept thin (pre-built groups, bound methods) so the rates measure the model.
- `live`: producer and consumer are separate tasks and the producer yields after every frame,
  so the consumer wakes up through a future for each frame (one frame per network read);
- `batched`: the producer writes a whole group, then the consumer reads it with `async for`
  (an SRT batch carrying many frames: the importer writes them all before the reader runs);
- `bulk`: as `batched`, but the reader takes the group with one `read_ready()` call (what the
  TS export driver does).
- `tracks`: writes only, round robin over 64 tracks (a PMT declaring many streams) under a
  2 MiB budget, smaller than their latest groups together: every write near the budget evicts
  (superseded groups, then the largest latest group), so this prices the eviction path.
Each repetition times unmetered and metered runs back to back, alternating which goes first;
the report is the median rate of each over the repetitions and the median of the per-repetition
ratios, so a noisy moment cannot decide the ratio. `--profile` prints a cProfile of the metered
batched shape instead; `--reps N` changes the repetitions (default 7).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from model import BroadcastProducer, CachePool, TrackProducer, Usage

FRAMES_PER_GROUP = 30
FRAME_SIZES = (1000, 5000)
BUDGET_BYTES = 64 * 1024 * 1024
REPS = 7

Shape = Callable[[bool, int, list[list[bytes]]], Awaitable[float]]


def payloads(count: int = 510) -> list[list[bytes]]:
    """Distinct frames of random size in FRAME_SIZES, cut into groups (seeded: every run moves
    the same bytes)."""
    rng = random.Random(1)
    frames = [rng.randbytes(rng.randint(*FRAME_SIZES)) for _ in range(count)]
    return [frames[i : i + FRAMES_PER_GROUP] for i in range(0, count, FRAMES_PER_GROUP)]


def setup(metered: bool) -> tuple[BroadcastProducer, TrackProducer, Usage, Usage]:
    ingress, egress = Usage(), Usage()
    broadcast = BroadcastProducer(pool=CachePool(BUDGET_BYTES))
    if metered:
        broadcast.with_meter(ingress)
    track = broadcast.create_track("0.avc3")
    return broadcast, track, ingress, egress


def check(metered: bool, ingress: Usage, egress: Usage, groups: int) -> None:
    """The metered run counted every frame on both sides (and the same bytes)."""
    if metered:
        frames = groups * FRAMES_PER_GROUP
        assert ingress.frames == egress.frames == frames, (ingress, egress)
        assert ingress.bytes == egress.bytes, (ingress, egress)
        assert ingress.groups == egress.groups == groups, (ingress, egress)


async def batched(metered: bool, groups: int, shapes: list[list[bytes]]) -> float:
    """Seconds to write and read `groups` groups, writer and reader taking turns per group."""
    broadcast, track, ingress, egress = setup(metered)
    consumer = broadcast.consume()
    if metered:
        consumer.with_meter(egress)
    reader = consumer.subscribe_track(track.name)
    append_group, next_group = track.append_group, reader.next_group
    cycle = len(shapes)
    started = time.perf_counter()
    for g in range(groups):
        group = append_group()
        write = group.write_frame
        for payload in shapes[g % cycle]:
            write(payload)
        group.finish()
        got = await next_group()
        assert got is not None
        async for _frame in got:
            pass
    elapsed = time.perf_counter() - started
    track.finish()
    broadcast.finish()
    check(metered, ingress, egress, groups)
    return elapsed


async def bulk(metered: bool, groups: int, shapes: list[list[bytes]]) -> float:
    """Like `batched`, but the reader takes each group's frames with one `read_ready()`."""
    broadcast, track, ingress, egress = setup(metered)
    consumer = broadcast.consume()
    if metered:
        consumer.with_meter(egress)
    reader = consumer.subscribe_track(track.name)
    append_group, next_group = track.append_group, reader.next_group
    cycle = len(shapes)
    started = time.perf_counter()
    for g in range(groups):
        group = append_group()
        write = group.write_frame
        for payload in shapes[g % cycle]:
            write(payload)
        group.finish()
        got = await next_group()
        assert got is not None
        got.read_ready()
    elapsed = time.perf_counter() - started
    track.finish()
    broadcast.finish()
    check(metered, ingress, egress, groups)
    return elapsed


async def live(metered: bool, groups: int, shapes: list[list[bytes]]) -> float:
    """Seconds to move `groups` groups with the producer yielding after every frame."""
    broadcast, track, ingress, egress = setup(metered)
    consumer = broadcast.consume()
    if metered:
        consumer.with_meter(egress)
    reader = consumer.subscribe_track(track.name)
    cycle = len(shapes)
    received = 0

    async def read() -> None:
        nonlocal received
        n = 0
        async for group in reader:
            async for _frame in group:
                n += 1
        received = n

    async def write() -> None:
        sleep = asyncio.sleep
        for g in range(groups):
            group = track.append_group()
            write = group.write_frame
            for payload in shapes[g % cycle]:
                write(payload)
                await sleep(0)
            group.finish()
        track.finish()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(read())
        tasks.create_task(write())
    elapsed = time.perf_counter() - started
    broadcast.finish()
    assert received == groups * FRAMES_PER_GROUP
    check(metered, ingress, egress, groups)
    return elapsed


MANY_TRACKS = 64
MANY_BUDGET_BYTES = 2 * 1024 * 1024


def many_tracks(rounds: int, shapes: list[list[bytes]]) -> tuple[float, CachePool]:
    """Seconds to write `rounds` groups to each of MANY_TRACKS tracks, one frame per track in
    turn, under MANY_BUDGET_BYTES; and the pool (for its eviction counters)."""
    pool = CachePool(MANY_BUDGET_BYTES)
    broadcast = BroadcastProducer(pool=pool)
    tracks = [broadcast.create_track(f"{i}.pes") for i in range(MANY_TRACKS)]
    cycle = len(shapes)
    started = time.perf_counter()
    for r in range(rounds):
        groups = [track.append_group() for track in tracks]
        for payload in shapes[r % cycle]:
            for group in groups:
                if not group.is_closed:  # the budget took it: the next round starts anew
                    group.write_frame(payload)
        for group in groups:
            group.finish()
        assert pool.used_bytes <= MANY_BUDGET_BYTES
    elapsed = time.perf_counter() - started
    broadcast.finish()
    return elapsed, pool


def compare_many_tracks(rounds: int, reps: int) -> None:
    shapes = payloads()
    many_tracks(rounds // 10, shapes)  # warm up
    runs = []
    for _ in range(reps):
        gc.collect()
        runs.append(many_tracks(rounds, shapes))
    elapsed = statistics.median(t for t, _ in runs)
    pool = runs[0][1]
    n = rounds * MANY_TRACKS * FRAMES_PER_GROUP
    print(
        f"tracks   {MANY_TRACKS} tracks, budget {MANY_BUDGET_BYTES >> 20} MiB: written"
        f" {n / elapsed:>10,.0f} frames/s (offered; a frame into an evicted group is skipped),"
        f" {pool.evicted_groups} groups evicted, {pool.evicted_latest_groups} of them latest"
        f"  ({n} frames x {reps} reps)",
        flush=True,
    )


async def timed(shape: Shape, metered: bool, groups: int, shapes: list[list[bytes]]) -> float:
    gc.collect()
    return await shape(metered, groups, shapes)


async def compare(name: str, shape: Shape, groups: int, reps: int) -> None:
    shapes = payloads()
    await shape(False, groups // 10, shapes)  # warm up
    await shape(True, groups // 10, shapes)
    plain: list[float] = []
    metered: list[float] = []
    for rep in range(reps):
        if rep % 2:
            metered.append(await timed(shape, True, groups, shapes))
            plain.append(await timed(shape, False, groups, shapes))
        else:
            plain.append(await timed(shape, False, groups, shapes))
            metered.append(await timed(shape, True, groups, shapes))
    n = groups * FRAMES_PER_GROUP
    rate_plain = n / statistics.median(plain)
    rate_metered = n / statistics.median(metered)
    ratios = sorted(p / m for p, m in zip(plain, metered, strict=True))
    cost_ns = (statistics.median(metered) - statistics.median(plain)) / n * 1e9
    print(
        f"{name:8} unmetered {rate_plain:>10,.0f} frames/s  metered {rate_metered:>10,.0f}"
        f" frames/s  ratio median {statistics.median(ratios):.3f}"
        f" (range {ratios[0]:.3f}-{ratios[-1]:.3f})  meter cost {cost_ns:+.0f} ns/frame"
        f"  ({n} frames x {reps} interleaved reps)",
        flush=True,
    )


async def run_all(reps: int) -> None:
    mean = statistics.mean(len(f) for group in payloads() for f in group)
    print(
        f"{FRAMES_PER_GROUP} frames/group, mean frame {mean:.0f} B, budget {BUDGET_BYTES >> 20} MiB"
    )
    await compare("live", live, 1000, reps)
    await compare("batched", batched, 4000, reps)
    await compare("bulk", bulk, 4000, reps)
    compare_many_tracks(60, reps)


def profile() -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(batched(True, 20000, payloads()))
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    """Print frames/s metered and unmetered for each shape, and their ratio."""
    if "--profile" in sys.argv:
        profile()
        return
    reps = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else REPS
    asyncio.run(run_all(reps))


if __name__ == "__main__":
    main()
