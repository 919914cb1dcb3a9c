"""The track cache keeps memory bounded: age expiry, the pool's byte budget, the size cap, and
slow consumers that skip instead of holding anything back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from model import (
    BroadcastProducer,
    CachePool,
    Closed,
    Evicted,
    GroupConsumer,
    GroupProducer,
    ManualClock,
    NotFound,
    TrackConsumer,
    TrackInfo,
    TrackProducer,
    Usage,
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


def cached_bytes(*tracks: TrackProducer) -> int:
    """Payload bytes the tracks' caches really hold, counted from their groups' frames (not
    from the pool's own accounting)."""
    return sum(len(f) for t in tracks for g in t._state.groups.values() for f in g.frames)


async def test_the_budget_takes_superseded_groups_before_any_latest_group(
    clock: ManualClock,
) -> None:
    pool = CachePool(2000, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    tracks = [broadcast.create_track(f"t{i}") for i in range(3)]
    for track in tracks:
        write_group(track, b"o" * 400)  # superseded below
        clock.advance(1)
    for track in tracks:
        write_group(track, b"x" * 500)
    # 1200 + 1500 > 2000: older groups go, oldest first, and every latest group stays.
    assert pool.used_bytes == cached_bytes(*tracks) == 1900
    assert (pool.evicted_groups, pool.evicted_latest_groups) == (2, 0)
    for track in tracks:
        assert await (await next_group(track.consume())).read_all() == [b"x" * 500]
    broadcast.finish()


async def test_when_only_latest_groups_are_left_the_largest_goes_and_its_track_goes_on(
    clock: ManualClock,
) -> None:
    pool = CachePool(1000, clock=clock)
    ingress = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    big, small, other = (broadcast.create_track(n) for n in ("big", "small", "other"))
    big_reader = big.consume()
    big_group = big.append_group()
    big_group.write_frame(b"b" * 600)  # open, the largest
    held = await next_group(big_reader)
    write_group(small, b"s" * 300)  # finished
    other_group = other.append_group()
    other_group.write_frame(b"o" * 200)  # 1100 > 1000: only latest groups are cached
    assert pool.used_bytes == cached_bytes(big, small, other) == 500
    assert (pool.evicted_groups, pool.evicted_bytes, pool.evicted_latest_groups) == (1, 600, 1)
    with pytest.raises(Evicted) as caught:
        await held.read_all()
    assert (caught.value.track, caught.value.sequence, caught.value.reason) == ("big", 0, "budget")
    assert big_group.is_closed
    with pytest.raises(Closed):
        big_group.write_frame(b"b")
    # The other tracks keep flowing, and so does the big one, at its next group.
    other_group.write_frame(b"o" * 100)
    other_group.finish()
    assert await (await next_group(other.consume())).read_all() == [b"o" * 200, b"o" * 100]
    assert await (await next_group(small.consume())).read_all() == [b"s" * 300]
    late = big.consume()  # starts after the evicted group: waits for the next one
    assert late.poll_group() is None
    write_group(big, b"n" * 100)
    assert await (await next_group(late)).read_all() == [b"n" * 100]
    assert await (await next_group(big_reader)).read_all() == [b"n" * 100]
    # Ingress counted every frame the model took, the evicted one included.
    assert ingress == Usage(groups=4, frames=5, bytes=1300)
    broadcast.finish()


async def test_a_frame_larger_than_the_whole_budget_evicts_its_own_group(
    clock: ManualClock,
) -> None:
    pool = CachePool(1000, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    audio = broadcast.create_track("audio")
    video = broadcast.create_track("video")
    write_group(video, b"v" * 400)
    audio.write_frame(b"a" * 1500)  # taken, then evicted by its own write
    assert pool.used_bytes == cached_bytes(audio, video) == 400
    assert await (await next_group(video.consume())).read_all() == [b"v" * 400]
    audio.write_frame(b"a" * 10)
    assert await (await next_group(audio.consume())).read_all() == [b"a" * 10]
    broadcast.finish()


async def test_a_relay_may_create_the_evicted_latest_sequence_again(clock: ManualClock) -> None:
    pool = CachePool(1000, clock=clock)
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    track = broadcast.create_track("video")
    group = track.create_group(7)
    group.write_frame(b"x" * 1200)  # evicts itself
    assert pool.used_bytes == 0
    again = track.create_group(7)  # the latest again: never expires by age
    again.write_frame(b"y" * 10)
    again.finish()
    clock.advance(3600)
    other = broadcast.create_track("other")
    write_group(other, b"z")
    assert await (await next_group(track.consume())).read_all() == [b"y" * 10]
    broadcast.finish()


async def test_many_tracks_with_big_groups_share_the_budget_and_all_keep_flowing(
    clock: ManualClock,
) -> None:
    """A PMT declaring many streams does not multiply the cache: 40 tracks writing groups up
    to 8x the per-track share of the budget stay within the budget after every write."""
    budget = 200_000
    pool = CachePool(budget, max_group_bytes=budget, clock=clock)
    ingress = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    tracks = [broadcast.create_track(f"{i}.pes") for i in range(40)]
    readers = [track.consume() for track in tracks]
    reading: list[GroupConsumer | None] = [None] * len(tracks)
    rng = random.Random(5)
    groups: list[GroupProducer | None] = [None] * len(tracks)
    written = Usage()
    got = [[0] * 4 for _ in tracks]  # frames each track's reader received, per quarter
    steps = 8_000
    for step in range(steps):
        i = rng.randrange(len(tracks))
        group = groups[i]
        if group is None or rng.random() < 0.05:  # a keyframe: a new group
            if group is not None:
                group.finish()
            group = groups[i] = tracks[i].append_group()
            written.add_group()
        size = rng.randint(500, 1500)
        try:
            group.write_frame(bytes(size))
        except Closed:
            groups[i] = None  # the importer's way: wait for the next keyframe
        else:
            written.add_frame(size)
        assert pool.used_bytes == cached_bytes(*tracks) <= budget, step
        if step % 20 == 0:  # the readers: a live viewer of every track
            for k, reader in enumerate(readers):
                while (current := reading[k] or reader.poll_group()) is not None:
                    reading[k] = current
                    got[k][4 * step // steps] += len(current.read_ready())
                    try:
                        if not current.poll_end():
                            break  # the open group: more frames later
                    except Evicted:
                        pass
                    reading[k] = None
    assert pool.evicted_latest_groups > 0  # the rule was exercised
    assert ingress == written
    assert all(n > 0 for quarters in got for n in quarters), got  # every track kept flowing
    for group in groups:
        if group is not None:
            group.finish()
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
