"""Frames per second through the model: write -> one consumer read, metered vs unmetered.

Two shapes, both with 30 frames per group and 1-5 KB frames, a 64 MiB cache budget (so eviction
runs as in production) and the real monotonic clock:
- `batched`: the producer writes a whole group, then the consumer reads it (what happens when an
  SRT batch carries many frames: the importer writes them all before the reader runs);
- `bulk`: as `batched`, but the reader takes a group's frames with one `read_ready()` call;
- `live`: producer and consumer are separate tasks and the producer yields after every frame,
  so the consumer wakes up through a future for each frame (one frame per network read).
Metered and unmetered rounds alternate; the best round of each is reported with the ratio.
`--profile` prints a cProfile of the metered batched shape instead.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import random
import statistics
import sys
import time

from model import BroadcastProducer, CachePool, TrackProducer, Usage

FRAMES_PER_GROUP = 30
FRAME_SIZES = (1000, 5000)
BUDGET_BYTES = 64 * 1024 * 1024
ROUNDS = 7


def payloads(count: int = 512) -> list[bytes]:
    """Distinct frames of random size in FRAME_SIZES (seeded: every run moves the same bytes)."""
    rng = random.Random(1)
    return [rng.randbytes(rng.randint(*FRAME_SIZES)) for _ in range(count)]


def setup(metered: bool) -> tuple[BroadcastProducer, TrackProducer, Usage, Usage]:
    ingress, egress = Usage(), Usage()
    broadcast = BroadcastProducer(pool=CachePool(BUDGET_BYTES))
    if metered:
        broadcast.with_meter(ingress)
    track = broadcast.create_track("0.avc3")
    return broadcast, track, ingress, egress


async def batched(metered: bool, groups: int, frames: list[bytes]) -> float:
    """Seconds to write and read `groups` groups, writer and reader taking turns per group."""
    broadcast, track, ingress, egress = setup(metered)
    consumer = broadcast.consume()
    if metered:
        consumer.with_meter(egress)
    reader = consumer.subscribe_track(track.name)
    nframes = len(frames)
    k = 0
    started = time.perf_counter()
    for _ in range(groups):
        group = track.append_group()
        for _ in range(FRAMES_PER_GROUP):
            group.write_frame(frames[k % nframes])
            k += 1
        group.finish()
        got = await reader.next_group()
        assert got is not None
        async for _frame in got:
            pass
    elapsed = time.perf_counter() - started
    track.finish()
    broadcast.finish()
    if metered:
        assert ingress.frames == egress.frames == groups * FRAMES_PER_GROUP
    return elapsed


async def bulk(metered: bool, groups: int, frames: list[bytes]) -> float:
    """Like `batched`, but the reader takes each group's frames with one `read_ready()`."""
    broadcast, track, ingress, egress = setup(metered)
    consumer = broadcast.consume()
    if metered:
        consumer.with_meter(egress)
    reader = consumer.subscribe_track(track.name)
    nframes = len(frames)
    k = 0
    started = time.perf_counter()
    for _ in range(groups):
        group = track.append_group()
        for _ in range(FRAMES_PER_GROUP):
            group.write_frame(frames[k % nframes])
            k += 1
        group.finish()
        got = await reader.next_group()
        assert got is not None
        got.read_ready()
    elapsed = time.perf_counter() - started
    track.finish()
    broadcast.finish()
    if metered:
        assert ingress.frames == egress.frames == groups * FRAMES_PER_GROUP
    return elapsed


async def live(metered: bool, groups: int, frames: list[bytes]) -> float:
    """Seconds to move `groups` groups with the producer yielding after every frame."""
    broadcast, track, ingress, egress = setup(metered)
    consumer = broadcast.consume()
    if metered:
        consumer.with_meter(egress)
    reader = consumer.subscribe_track(track.name)
    nframes = len(frames)
    received = 0

    async def read() -> None:
        nonlocal received
        async for group in reader:
            async for _frame in group:
                received += 1

    async def write() -> None:
        k = 0
        for _ in range(groups):
            group = track.append_group()
            for _ in range(FRAMES_PER_GROUP):
                group.write_frame(frames[k % nframes])
                k += 1
                await asyncio.sleep(0)
            group.finish()
        track.finish()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(read())
        tasks.create_task(write())
    elapsed = time.perf_counter() - started
    broadcast.finish()
    assert received == groups * FRAMES_PER_GROUP
    if metered:
        assert ingress.frames == egress.frames == received
    return elapsed


async def compare(name: str, shape: object, groups: int, frames: list[bytes]) -> None:
    run = shape  # a coroutine function (metered, groups, frames) -> seconds
    assert callable(run)
    await run(False, groups // 10, frames)  # warm up
    await run(True, groups // 10, frames)
    plain: list[float] = []
    metered: list[float] = []
    for _ in range(ROUNDS):
        plain.append(await run(False, groups, frames))
        metered.append(await run(True, groups, frames))
    n = groups * FRAMES_PER_GROUP
    best_plain, best_metered = n / min(plain), n / min(metered)
    ratios = [p / m for p, m in zip(plain, metered, strict=True)]
    print(
        f"{name:8} unmetered {best_plain:>10,.0f} frames/s  metered {best_metered:>10,.0f} frames/s"
        f"  ratio best {best_metered / best_plain:.3f}  median of rounds"
        f" {statistics.median(ratios):.3f}  ({n} frames x {ROUNDS} rounds)"
    )


async def run_all() -> None:
    frames = payloads()
    mean = sum(map(len, frames)) / len(frames)
    print(
        f"{FRAMES_PER_GROUP} frames/group, mean frame {mean:.0f} B, budget {BUDGET_BYTES >> 20} MiB"
    )
    await compare("batched", batched, 4000, frames)
    await compare("bulk", bulk, 4000, frames)
    await compare("live", live, 1000, frames)


def profile() -> None:
    frames = payloads()
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(batched(True, 20000, frames))
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    """Print frames/s metered and unmetered for both shapes, and their ratio."""
    if "--profile" in sys.argv:
        profile()
        return
    asyncio.run(run_all())


if __name__ == "__main__":
    main()
