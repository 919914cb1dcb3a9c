"""Metering is exact: ingress once when written, egress per consumer when read, whichever way a
track came into the broadcast; an unmetered broadcast counts nothing."""

from __future__ import annotations

import asyncio
import gc

import pytest

from model import (
    BroadcastConsumer,
    BroadcastProducer,
    CachePool,
    Closed,
    GroupConsumer,
    ManualClock,
    TrackConsumer,
    TrackProducer,
    Usage,
)

FRAMES = [b"a" * 100, b"b" * 250, b"c" * 7]  # one group's frames: 357 bytes


@pytest.fixture
def broadcast(clock: ManualClock, pool: CachePool) -> BroadcastProducer:
    return BroadcastProducer(clock=clock, pool=pool)


def write_group(track: TrackProducer, frames: list[bytes] = FRAMES) -> None:
    group = track.append_group()
    for frame in frames:
        group.write_frame(frame)
    group.finish()


async def next_group(track: TrackConsumer) -> GroupConsumer:
    async with asyncio.timeout(1):
        group = await track.next_group()
    assert group is not None
    return group


async def read_track(track: TrackConsumer) -> list[bytes]:
    frames: list[bytes] = []
    async with asyncio.timeout(1):
        async for group in track:
            frames += await group.read_all()
    return frames


def usage(groups: int, frames: int, nbytes: int) -> Usage:
    return Usage(groups=groups, frames=frames, bytes=nbytes)


async def test_with_meter_is_a_builder_on_both_sides(broadcast: BroadcastProducer) -> None:
    ingress, egress = Usage(), Usage()
    assert broadcast.with_meter(ingress) is broadcast
    consumer = broadcast.consume()
    assert consumer.with_meter(egress) is consumer
    assert (broadcast.meter, consumer.meter) == (ingress, egress)
    broadcast.finish()


async def test_ingress_is_counted_once_when_written_whatever_the_readers(
    broadcast: BroadcastProducer,
) -> None:
    ingress = Usage()
    broadcast.with_meter(ingress)
    track = broadcast.create_track("video")
    readers = [broadcast.consume().with_meter(Usage()).subscribe_track("video") for _ in range(4)]
    group = track.append_group()
    assert ingress == usage(1, 0, 0)  # the group counts when created
    group.write_frame(b"x" * 10)
    assert ingress == usage(1, 1, 10)  # frames and bytes when written
    group.finish()
    track.write_frame(b"y" * 5)
    track.finish()
    for reader in readers:
        await read_track(reader)
    assert ingress == usage(2, 2, 15)
    broadcast.finish()


async def test_egress_counts_per_consumer_so_three_viewers_count_three_times(
    broadcast: BroadcastProducer,
) -> None:
    ingress, shared = Usage(), Usage()
    broadcast.with_meter(ingress)
    track = broadcast.create_track("video")
    own = [Usage() for _ in range(3)]
    readers = [broadcast.consume().with_meter(u).subscribe_track("video") for u in own]
    shared_readers = [
        broadcast.consume().with_meter(shared).subscribe_track("video") for _ in range(2)
    ]
    write_group(track)
    write_group(track)
    track.finish()
    for reader in readers + shared_readers:
        assert await read_track(reader) == FRAMES * 2
    assert ingress == usage(2, 6, 714)
    for meter in own:
        assert meter == ingress
    assert shared == usage(4, 12, 1428)  # two viewers on one meter: twice
    broadcast.finish()


async def test_egress_counts_a_group_when_handed_out_and_frames_when_returned(
    broadcast: BroadcastProducer,
) -> None:
    egress = Usage()
    track = broadcast.create_track("video")
    reader = broadcast.consume().with_meter(egress).subscribe_track("video")
    write_group(track)
    group = await next_group(reader)
    assert egress == usage(1, 0, 0)
    assert await group.next_frame() == FRAMES[0]
    assert egress == usage(1, 1, 100)
    assert group.read_ready() == FRAMES[1:]
    assert egress == usage(1, 3, 357)
    assert await group.next_frame() is None
    assert egress == usage(1, 3, 357)
    track.finish()
    broadcast.finish()


async def test_meter_propagates_through_create_track(broadcast: BroadcastProducer) -> None:
    ingress, egress = Usage(), Usage()
    broadcast.with_meter(ingress)
    track = broadcast.create_track("video")
    reader = broadcast.consume().with_meter(egress).subscribe_track("video")
    write_group(track)
    track.finish()
    await read_track(reader)
    assert ingress == egress == usage(1, 3, 357)
    broadcast.finish()


async def test_meter_propagates_through_unique_track(broadcast: BroadcastProducer) -> None:
    ingress, egress = Usage(), Usage()
    broadcast.with_meter(ingress)
    track = broadcast.unique_track(".aac")
    reader = broadcast.consume().with_meter(egress).subscribe_track(track.name)
    for frame in FRAMES:
        track.write_frame(frame)  # one group per audio frame
    track.finish()
    await read_track(reader)
    assert ingress == egress == usage(3, 3, 357)
    broadcast.finish()


async def test_meter_propagates_through_dynamic_accept(broadcast: BroadcastProducer) -> None:
    ingress, egress = Usage(), Usage()
    broadcast.with_meter(ingress)
    with broadcast.dynamic() as dynamic:
        reader = broadcast.consume().with_meter(egress).subscribe_track("on-demand")
        async with asyncio.timeout(1):
            request = await dynamic.requested_track()
        assert request is not None
        track = request.accept()
        write_group(track)
        track.finish()
        await read_track(reader)
    assert ingress == egress == usage(1, 3, 357)
    broadcast.finish()


async def test_meter_propagates_through_reserve_track(broadcast: BroadcastProducer) -> None:
    ingress, egress = Usage(), Usage()
    request = broadcast.reserve_track("catalog.json")
    broadcast.with_meter(ingress)  # attached after the reservation: still reaches it
    reader = broadcast.consume().with_meter(egress).subscribe_track("catalog.json")
    track = request.accept()
    write_group(track)
    track.finish()
    await read_track(reader)
    assert ingress == egress == usage(1, 3, 357)
    broadcast.finish()


async def test_meter_propagates_through_fetch_counting_frames_and_bytes_but_no_group(
    broadcast: BroadcastProducer,
) -> None:
    ingress, egress = Usage(), Usage()
    broadcast.with_meter(ingress)
    track = broadcast.create_track("video")
    write_group(track)
    write_group(track, [b"z" * 9])
    reader = broadcast.consume().with_meter(egress).subscribe_track("video")
    fetched = await reader.fetch_group(0)
    assert egress == usage(0, 0, 0)
    assert await fetched.read_all() == FRAMES
    assert egress == usage(0, 3, 357)
    assert ingress == usage(2, 4, 366)
    track.finish()
    broadcast.finish()


async def test_a_meter_attached_later_counts_from_then_on(broadcast: BroadcastProducer) -> None:
    track = broadcast.create_track("video")
    write_group(track)
    ingress = Usage()
    broadcast.with_meter(ingress)
    write_group(track, [b"q"])
    assert ingress == usage(1, 1, 1)
    track.finish()
    broadcast.finish()


async def test_an_unmetered_broadcast_counts_nothing_and_allocates_no_meter(
    broadcast: BroadcastProducer,
) -> None:
    def meters() -> int:
        return sum(isinstance(o, Usage) for o in gc.get_objects())

    before = meters()
    track = broadcast.create_track("video")
    consumers: list[BroadcastConsumer] = [broadcast.consume() for _ in range(2)]
    readers = [c.subscribe_track("video") for c in consumers]
    write_group(track)
    track.finish()
    for reader in readers:
        assert await read_track(reader) == FRAMES
    assert broadcast.meter is None
    assert all(c.meter is None for c in consumers)
    assert meters() == before
    broadcast.finish()


async def test_a_metered_viewer_is_unaffected_by_unmetered_ones(
    broadcast: BroadcastProducer,
) -> None:
    egress = Usage()
    track = broadcast.create_track("video")
    metered = broadcast.consume().with_meter(egress).subscribe_track("video")
    plain = broadcast.consume().subscribe_track("video")
    write_group(track)
    track.finish()
    await read_track(plain)
    assert egress == usage(0, 0, 0)
    await read_track(metered)
    assert egress == usage(1, 3, 357)
    broadcast.finish()


async def test_writes_refused_by_the_model_are_not_counted(clock: ManualClock) -> None:
    ingress = Usage()
    pool = CachePool(None, max_group_bytes=300, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(b"x" * 200)
    with pytest.raises(Closed):
        group.write_frame(b"x" * 200)  # past the size cap
    with pytest.raises(Closed):
        group.write_frame(b"x")  # evicted
    track.finish()
    with pytest.raises(Closed):
        track.write_frame(b"late")
    assert ingress == usage(1, 1, 200)
    broadcast.finish()


async def test_egress_counts_frames_read_with_async_for(broadcast: BroadcastProducer) -> None:
    egress = Usage()
    track = broadcast.create_track("video")
    reader = broadcast.consume().with_meter(egress).subscribe_track("video")
    write_group(track)
    group = await next_group(reader)
    seen = 0
    async with asyncio.timeout(1):
        async for frame in group:
            seen += 1
            assert egress == usage(1, seen, sum(map(len, FRAMES[:seen])))
            assert frame == FRAMES[seen - 1]
    assert seen == 3
    track.finish()
    broadcast.finish()
