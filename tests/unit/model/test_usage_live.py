"""The ingress meter counts a group's frames from the group itself while it is written (no
per-write increments), so every reading between model calls must still be exact: mid-group,
after finish, abort, overflow and eviction, across a meter attached mid-group, and through the
`Usage` surface (a slotted dataclass look-alike: init, ==, repr, copy, `+=`)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import pickle
import threading

import pytest

from model import BroadcastProducer, CachePool, Closed, ManualClock, Usage

FRAMES = [b"a" * 100, b"b" * 250, b"c" * 7]


def counts(meter: Usage) -> tuple[int, int, int]:
    return (meter.groups, meter.frames, meter.bytes)


def test_usage_behaves_like_a_mutable_dataclass() -> None:
    meter = Usage(groups=1, frames=2, bytes=3)
    assert meter == Usage(1, 2, 3)
    assert meter != Usage(1, 2, 4)
    assert repr(meter) == "Usage(groups=1, frames=2, bytes=3)"
    meter.frames += 5
    meter.bytes = 40
    meter.groups += 1
    assert counts(meter) == (2, 7, 40)
    reading = meter.copy()
    meter.add_frame(1)
    assert counts(reading) == (2, 7, 40)
    assert counts(meter) == (2, 8, 41)
    match meter:
        case Usage(groups, frames, nbytes):
            assert (groups, frames, nbytes) == (2, 8, 41)
    with pytest.raises(TypeError):
        hash(meter)
    assert pickle.loads(pickle.dumps(meter)) == meter
    assert copy.deepcopy(meter) == meter


def test_ingress_is_exact_after_every_write_of_an_open_group(
    clock: ManualClock, pool: CachePool
) -> None:
    ingress = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    video = broadcast.create_track("video")
    audio = broadcast.create_track("audio")
    group = video.append_group()
    other = video.create_group(5)
    written = 0
    for n, frame in enumerate(FRAMES, 1):
        group.write_frame(frame)
        other.write_frame(frame)
        written += 2 * len(frame)
        expected = Usage(1 + n, 3 * n - 1, written)  # audio: one group per earlier frame
        assert counts(ingress) == (expected.groups, expected.frames, expected.bytes)
        assert ingress == expected
        assert ingress.copy() == expected
        audio.write_frame(b"x" * 9)  # a one-frame group, counted at once
        written += 9
        assert counts(ingress) == (2 + n, 3 * n, written)
    live = copy.copy(ingress)
    group.finish()
    other.abort(RuntimeError("gone"))  # an aborted group's frames were written: they count
    assert counts(ingress) == (5, 9, written)
    assert pickle.loads(pickle.dumps(ingress)) == ingress
    assert counts(live) == (5, 9, written)  # a copy is a plain reading, no longer linked
    video.finish()
    audio.finish()
    broadcast.finish()
    assert counts(ingress) == (5, 9, written)


def test_meter_fields_can_be_added_to_while_a_group_is_open(
    clock: ManualClock, pool: CachePool
) -> None:
    ingress = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(FRAMES[0])
    ingress.frames += 10
    ingress.bytes += 1000
    assert counts(ingress) == (1, 11, 1100)
    group.write_frame(FRAMES[1])
    assert counts(ingress) == (1, 12, 1350)
    ingress.add(Usage(1, 1, 1))
    group.finish()
    assert counts(ingress) == (2, 13, 1351)
    broadcast.finish()


def test_a_meter_attached_mid_group_counts_only_later_writes(
    clock: ManualClock, pool: CachePool
) -> None:
    first, second = Usage(), Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(FRAMES[0])
    broadcast.with_meter(first)
    assert counts(first) == (0, 0, 0)
    group.write_frame(FRAMES[1])
    assert counts(first) == (0, 1, 250)
    broadcast.with_meter(second)  # the rest of the open group goes to the new meter
    group.write_frame(FRAMES[2])
    group.finish()
    assert counts(first) == (0, 1, 250)
    assert counts(second) == (0, 1, 7)
    broadcast.finish()


def test_a_group_evicted_for_size_counts_what_it_accepted(clock: ManualClock) -> None:
    ingress = Usage()
    pool = CachePool(None, max_group_bytes=300, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(FRAMES[0])
    with pytest.raises(Closed):
        group.write_frame(FRAMES[1])  # 350 > 300: refused, the group is evicted
    assert counts(ingress) == (1, 1, 100)
    with pytest.raises(Closed):
        group.write_frame(FRAMES[2])
    assert counts(ingress) == (1, 1, 100)
    broadcast.finish()


def test_groups_evicted_by_budget_or_dropped_tracks_keep_their_counts(clock: ManualClock) -> None:
    ingress = Usage()
    pool = CachePool(500, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    track = broadcast.create_track("video")
    groups = [track.append_group() for _ in range(3)]  # open, older ones evictable
    for group in groups:
        group.write_frame(FRAMES[1])  # 3 x 250 > 500: the stalest group goes
    assert pool.evicted_groups >= 1
    assert counts(ingress) == (3, 3, 750)
    track.abort(RuntimeError("stop"))
    assert counts(ingress) == (3, 3, 750)
    broadcast.finish()


async def test_read_ready_from_the_start_counts_the_group_bytes(
    clock: ManualClock, pool: CachePool
) -> None:
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    egress = Usage()
    track = broadcast.create_track("video")
    reader = broadcast.consume().with_meter(egress).subscribe_track("video")
    group = track.append_group()
    group.write_frame(FRAMES[0])
    group.write_frame(FRAMES[1])
    async with asyncio.timeout(1):
        got = await reader.next_group()
    assert got is not None
    assert got.read_ready() == FRAMES[:2]
    assert counts(egress) == (1, 2, 350)
    group.write_frame(FRAMES[2])
    group.finish()
    assert got.read_ready() == FRAMES[2:]
    assert counts(egress) == (1, 3, 357)
    async with asyncio.timeout(1):
        late = await reader.fetch_group(0)  # a finished group, read in one go from the start
    assert late.read_ready() == FRAMES
    assert counts(egress) == (1, 6, 714)
    track.finish()
    broadcast.finish()


def test_a_reader_thread_never_sees_more_than_was_written(
    clock: ManualClock, pool: CachePool
) -> None:
    ingress = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    track = broadcast.create_track("video")
    written = [0, 0]  # frames, bytes: updated after each model call
    stop = threading.Event()
    seen: list[tuple[int, int, int, int]] = []

    def watch() -> None:
        while not stop.is_set():
            before = (written[0], written[1])
            frames, nbytes = ingress.frames, ingress.bytes
            after = (written[0], written[1])
            seen.append((frames - after[0] - 1, nbytes - after[1] - 250, *before))

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for _ in range(300):
            group = track.append_group()
            for frame in FRAMES:
                group.write_frame(frame)
                written[0] += 1
                written[1] += len(frame)
            group.finish()
    finally:
        stop.set()
        thread.join(5)
    # A reading may lag (or land mid-call, one frame ahead), but never runs further ahead.
    assert all(frames <= 0 and nbytes <= 0 for frames, nbytes, _, _ in seen)
    assert counts(ingress) == (300, 900, 300 * 357)
    track.finish()
    broadcast.finish()


def test_a_linked_meter_still_looks_like_the_dataclass(clock: ManualClock, pool: CachePool) -> None:
    ingress = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(FRAMES[0])
    assert dataclasses.is_dataclass(ingress)
    assert isinstance(ingress, Usage)
    assert repr(ingress) == "Usage(groups=1, frames=1, bytes=100)"
    assert ingress == Usage(1, 1, 100)
    assert Usage(1, 1, 100) == ingress
    assert [f.name for f in dataclasses.fields(ingress) if f.init] == ["groups", "frames", "bytes"]
    group.finish()
    track.finish()
    broadcast.finish()


async def test_one_meter_for_ingress_and_egress_counts_both(
    clock: ManualClock, pool: CachePool
) -> None:
    meter = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(meter)
    track = broadcast.create_track("video")
    reader = broadcast.consume().with_meter(meter).subscribe_track("video")
    group = track.append_group()
    group.write_frame(FRAMES[0])
    async with asyncio.timeout(1):
        got = await reader.next_group()
        assert got is not None
        assert await got.next_frame() == FRAMES[0]
    assert counts(meter) == (2, 2, 200)
    group.write_frame(FRAMES[1])
    group.finish()
    assert got.read_ready() == [FRAMES[1]]
    track.write_frame(FRAMES[2])
    assert counts(meter) == (3, 5, 707)
    track.finish()
    broadcast.finish()


def test_a_meter_must_be_a_plain_usage(clock: ManualClock, pool: CachePool) -> None:
    class Custom(Usage):
        __slots__ = ()

    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(Custom())
    track = broadcast.create_track("video")
    with pytest.raises(TypeError, match="Usage"):
        track.append_group()
    track.finish()
    broadcast.finish()
