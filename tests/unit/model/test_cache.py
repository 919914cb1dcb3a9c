"""The track cache keeps memory bounded: age expiry, the pool's byte budget, the size cap, and
slow consumers that skip instead of holding anything back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from model import (
    BroadcastProducer,
    CachePool,
    Closed,
    Evicted,
    GroupConsumer,
    ManualClock,
    NotFound,
    TrackConsumer,
    TrackInfo,
    TrackProducer,
)


@pytest.fixture
def broadcast(clock: ManualClock, pool: CachePool) -> Iterator[BroadcastProducer]:
    producer = BroadcastProducer(clock=clock, pool=pool)
    yield producer
    producer.finish()


def write_group(track: TrackProducer, *frames: bytes) -> None:
    group = track.append_group()
    for frame in frames:
        group.write_frame(frame)
    group.finish()


async def next_group(track: TrackConsumer) -> GroupConsumer:
    async with asyncio.timeout(1):
        group = await track.next_group()
    assert group is not None
    return group


async def cached(track: TrackConsumer, sequences: range) -> list[int]:
    """The sequences of `sequences` a fetch still finds."""
    found = []
    for seq in sequences:
        try:
            await track.fetch_group(seq)
        except NotFound:
            continue
        found.append(seq)
    return found


async def test_groups_expire_latency_max_after_a_newer_group_superseded_them(
    broadcast: BroadcastProducer, clock: ManualClock
) -> None:
    track = broadcast.create_track(TrackInfo("video", latency_max_s=5.0))
    probe = track.consume()
    write_group(track, b"0")  # superseded at t+1
    clock.advance(1)
    write_group(track, b"1")  # superseded at t+2
    clock.advance(1)
    write_group(track, b"2")
    clock.advance(4)  # group 0 superseded 5 s ago, group 1 4 s ago
    write_group(track, b"3")
    assert await cached(probe, range(4)) == [1, 2, 3]
    clock.advance(100)
    write_group(track, b"4")  # group 3 was only superseded now
    assert await cached(probe, range(5)) == [3, 4]


async def test_the_latest_group_never_expires_however_old(
    broadcast: BroadcastProducer, clock: ManualClock
) -> None:
    track = broadcast.create_track(TrackInfo("catalog.json", latency_max_s=1.0))
    write_group(track, b"v1")
    clock.advance(3600)
    other = broadcast.create_track(TrackInfo("other", latency_max_s=1.0))
    write_group(other, b"x")  # writes elsewhere expire nothing here
    late = track.consume()
    group = await next_group(late)
    assert await group.read_all() == [b"v1"]


async def test_a_reader_of_an_expired_group_gets_evicted_with_the_reason(
    broadcast: BroadcastProducer, clock: ManualClock
) -> None:
    track = broadcast.create_track(TrackInfo("video", latency_max_s=2.0))
    reader = track.consume()
    write_group(track, b"a", b"b")
    group = await next_group(reader)
    assert await group.next_frame() == b"a"
    write_group(track, b"c")
    clock.advance(3)
    write_group(track, b"d")
    with pytest.raises(Evicted) as caught:
        await group.next_frame()
    assert (caught.value.track, caught.value.sequence, caught.value.reason) == ("video", 0, "age")


async def test_a_reader_that_read_everything_ends_cleanly_even_after_eviction(
    broadcast: BroadcastProducer, clock: ManualClock
) -> None:
    track = broadcast.create_track(TrackInfo("video", latency_max_s=2.0))
    reader = track.consume()
    write_group(track, b"a")
    group = await next_group(reader)
    assert await group.next_frame() == b"a"
    clock.advance(3)
    write_group(track, b"b")
    clock.advance(3)
    write_group(track, b"c")
    assert await group.next_frame() is None


async def test_the_budget_evicts_the_stalest_groups_first_across_tracks(
    clock: ManualClock,
) -> None:
    pool = CachePool(10_000, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    video = broadcast.create_track("video")
    audio = broadcast.create_track("audio")
    video_probe, audio_probe = video.consume(), audio.consume()
    write_group(video, b"v" * 3000)  # superseded at t+1
    clock.advance(1)
    write_group(audio, b"a" * 3000)  # superseded at t+2
    clock.advance(1)
    write_group(video, b"v" * 1000)  # superseded at t+3 by video 2
    write_group(audio, b"a" * 1000)  # the latest audio group
    clock.advance(1)
    assert pool.used_bytes == 8000
    write_group(video, b"v" * 3000)  # 11000 > 10000: video 0 goes (superseded first)
    assert await cached(video_probe, range(3)) == [1, 2]
    assert await cached(audio_probe, range(2)) == [0, 1]
    write_group(video, b"v" * 3000)  # 11000 again: audio 0 is now the stalest
    assert await cached(audio_probe, range(2)) == [1]
    assert await cached(video_probe, range(4)) == [1, 2, 3]
    assert pool.used_bytes <= 10_000
    assert pool.evicted_groups == 2
    assert pool.evicted_bytes == 6000
    broadcast.finish()


async def test_the_budget_never_evicts_a_latest_group(clock: ManualClock) -> None:
    pool = CachePool(100, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    tracks = [broadcast.create_track(f"t{i}") for i in range(3)]
    for track in tracks:
        write_group(track, b"x" * 500)
    assert pool.used_bytes == 1500  # over budget, but only latest groups are cached
    for track in tracks:
        assert await (await next_group(track.consume())).read_all() == [b"x" * 500]
    broadcast.finish()


async def test_a_group_outgrowing_the_size_cap_is_evicted(clock: ManualClock) -> None:
    pool = CachePool(None, max_group_bytes=1000, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    track = broadcast.create_track("video")
    reader = track.consume()
    group = track.append_group()
    group.write_frame(b"x" * 600)
    consumer = await next_group(reader)
    with pytest.raises(Closed):
        group.write_frame(b"x" * 600)
    with pytest.raises(Evicted) as caught:
        await consumer.read_all()
    assert caught.value.reason == "size"
    assert pool.used_bytes == 0
    broadcast.finish()


async def test_a_consumer_that_never_reads_neither_blocks_the_producer_nor_grows_the_cache(
    clock: ManualClock,
) -> None:
    pool = CachePool(50_000, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    track = broadcast.create_track(TrackInfo("video", latency_max_s=30.0))
    idle = [track.consume() for _ in range(3)]
    for _ in range(1000):
        write_group(track, *(b"f" * 100 for _ in range(10)))
        assert pool.used_bytes <= 50_000
    assert len(idle) == 3
    broadcast.finish()


async def test_a_slow_consumer_skips_to_the_newest_cached_group(
    broadcast: BroadcastProducer, clock: ManualClock
) -> None:
    track = broadcast.create_track(TrackInfo("video", latency_max_s=2.0))
    slow = track.consume()
    write_group(track, b"0")
    assert (await next_group(slow)).sequence == 0
    for _ in range(10):  # one group per second: each expires 2 s after the next arrives
        clock.advance(1)
        write_group(track, b"n")
    got = [(await next_group(slow)).sequence for _ in range(3)]
    assert got == [8, 9, 10]


async def test_memory_of_an_evicted_group_is_released_for_readers_still_holding_it(
    clock: ManualClock,
) -> None:
    pool = CachePool(1000, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    track = broadcast.create_track("video")
    reader = track.consume()
    write_group(track, b"x" * 800)
    held = await next_group(reader)
    write_group(track, b"y" * 800)  # over budget: group 0 is evicted although held
    assert pool.used_bytes == 800
    assert held.read_ready() == []
    with pytest.raises(Evicted):
        await held.next_frame()
    broadcast.finish()


async def test_a_track_nobody_references_gives_its_bytes_back_to_the_pool(
    clock: ManualClock,
) -> None:
    pool = CachePool(None, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    track = broadcast.create_track("video")
    write_group(track, b"x" * 700)
    track.finish()
    broadcast.finish()
    assert pool.used_bytes == 700
    del track, broadcast
    assert pool.used_bytes == 0


async def test_a_reader_behind_live_can_skip_straight_to_the_latest_group(
    broadcast: BroadcastProducer,
) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    for _ in range(5):
        write_group(track, b"g")
    assert (await next_group(reader)).sequence == 0
    reader.skip_to_latest()
    assert (await next_group(reader)).sequence == 4
    reader.skip_to_latest()  # already there: never moves backwards
    write_group(track, b"g")
    assert (await next_group(reader)).sequence == 5
