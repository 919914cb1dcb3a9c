"""Groups and tracks: ordering, finish/abort propagation, where consumers start, fetch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from model import (
    BroadcastProducer,
    CachePool,
    Closed,
    Dropped,
    Duplicate,
    GroupConsumer,
    ManualClock,
    NotFound,
    TrackConsumer,
    wait_any,
)


class Boom(Exception):
    """A test error with an identity to compare."""


@pytest.fixture
def broadcast(clock: ManualClock, pool: CachePool) -> Iterator[BroadcastProducer]:
    producer = BroadcastProducer(clock=clock, pool=pool)
    yield producer
    producer.finish()


async def next_group(track: TrackConsumer) -> GroupConsumer:
    async with asyncio.timeout(1):
        group = await track.next_group()
    assert group is not None
    return group


async def test_frames_come_out_in_write_order(broadcast: BroadcastProducer) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    group = track.append_group()
    payloads = [bytes([i]) * (i + 1) for i in range(10)]
    for payload in payloads:
        group.write_frame(payload)
    group.finish()
    assert await (await next_group(reader)).read_all() == payloads


async def test_groups_are_numbered_from_zero_and_read_in_increasing_order(
    broadcast: BroadcastProducer,
) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    sequences = []
    for _ in range(5):
        group = track.append_group()
        sequences.append(group.sequence)
        group.write_frame(b"x")
        group.finish()
    track.finish()
    got = []
    async with asyncio.timeout(1):
        async for consumer in reader:
            got.append(consumer.sequence)
    assert sequences == [0, 1, 2, 3, 4]
    assert got == [0, 1, 2, 3, 4]


async def test_a_waiting_reader_wakes_when_a_frame_is_written(
    broadcast: BroadcastProducer,
) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    pending = asyncio.ensure_future(next_group(reader))
    await asyncio.sleep(0)
    group = track.append_group()
    consumer = await pending
    frame_task = asyncio.ensure_future(consumer.next_frame())
    await asyncio.sleep(0)
    assert not frame_task.done()
    group.write_frame(b"late")
    async with asyncio.timeout(1):
        assert await frame_task == b"late"
    group.finish()
    async with asyncio.timeout(1):
        assert await consumer.next_frame() is None


async def test_late_subscriber_starts_at_the_latest_group(broadcast: BroadcastProducer) -> None:
    track = broadcast.create_track("video")
    for _ in range(3):
        group = track.append_group()
        group.write_frame(b"old")
        group.finish()
    late = track.consume()
    group = track.append_group()
    group.write_frame(b"new")
    group.finish()
    assert (await next_group(late)).sequence == 2
    assert (await next_group(late)).sequence == 3


async def test_create_group_accepts_any_order_and_rejects_a_cached_duplicate(
    broadcast: BroadcastProducer,
) -> None:
    track = broadcast.create_track("relay")
    track.create_group(5).finish()
    track.create_group(2).finish()
    with pytest.raises(Duplicate):
        track.create_group(5)
    assert track.latest_sequence == 5
    assert track.append_group().sequence == 6


async def test_track_finish_lets_readers_drain_then_end(broadcast: BroadcastProducer) -> None:
    track = broadcast.create_track("audio")
    reader = track.consume()
    track.write_frame(b"a")
    track.write_frame(b"b")
    track.finish()
    frames = []
    async with asyncio.timeout(1):
        async for group in reader:
            frames += await group.read_all()
        await reader.closed()
    assert frames == [b"a", b"b"]
    with pytest.raises(Closed):
        track.append_group()


async def test_track_abort_reaches_every_reader(broadcast: BroadcastProducer) -> None:
    track = broadcast.create_track("video")
    readers = [track.consume() for _ in range(3)]
    track.abort(Boom("gone"))
    for reader in readers:
        with pytest.raises(Boom):
            async with asyncio.timeout(1):
                await reader.next_group()
        with pytest.raises(Boom):
            await reader.closed()


async def test_group_abort_drops_frames_and_readers_raise_the_error(
    broadcast: BroadcastProducer,
) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    group = track.append_group()
    group.write_frame(b"x")
    consumer = await next_group(reader)
    err = Boom("bad gop")
    group.abort(err)
    with pytest.raises(Boom) as caught:
        await consumer.next_frame()
    assert caught.value is err
    with pytest.raises(Closed):
        group.write_frame(b"y")


async def test_open_groups_abort_with_their_track(broadcast: BroadcastProducer) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    group = track.append_group()
    consumer = await next_group(reader)
    track.abort(Boom())
    assert group.is_closed
    with pytest.raises(Boom):
        async with asyncio.timeout(1):
            await consumer.next_frame()


async def test_a_finished_group_held_by_a_reader_survives_the_track_abort(
    broadcast: BroadcastProducer,
) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    group = track.append_group()
    group.write_frame(b"x")
    group.finish()
    consumer = await next_group(reader)
    track.abort(Boom())
    assert await consumer.read_all() == [b"x"]


async def test_fetch_returns_a_cached_group_without_moving_the_cursor(
    broadcast: BroadcastProducer,
) -> None:
    track = broadcast.create_track("video")
    for i in range(3):
        group = track.append_group()
        group.write_frame(bytes([i]))
        group.finish()
    reader = track.consume()
    fetched = await reader.fetch_group(0)
    assert await fetched.read_all() == [b"\x00"]
    assert (await next_group(reader)).sequence == 2
    with pytest.raises(NotFound):
        await reader.fetch_group(9)


async def test_producer_dropped_unfinished_logs_a_warning_and_readers_see_dropped(
    broadcast: BroadcastProducer, caplog: pytest.LogCaptureFixture
) -> None:
    track = broadcast.create_track("video")
    reader = track.consume()
    group = track.append_group()
    consumer = await next_group(reader)
    del group
    with pytest.raises(Dropped):
        await consumer.next_frame()
    del track
    with pytest.raises(Dropped):
        async with asyncio.timeout(1):
            await reader.next_group()
    messages = [r.getMessage() for r in caplog.records if r.name == "moqsrt.model"]
    assert any("group 0" in m and "dropped" in m for m in messages)
    assert any("track 'video'" in m and "dropped" in m for m in messages)


async def test_poll_group_and_poll_end_read_without_waiting(broadcast: BroadcastProducer) -> None:
    producer = broadcast.create_track("video")
    reader = producer.consume()
    assert reader.poll_group() is None
    assert bool(reader.finished) is False  # (bool(): mypy would pin the property to False)
    group = producer.append_group()
    group.write_frame(b"a")
    polled = reader.poll_group()
    assert polled is not None
    assert polled.sequence == 0
    assert reader.poll_group() is None  # the cursor moved past it
    assert polled.read_ready() == [b"a"]
    assert polled.poll_end() is False  # open: more may come
    group.write_frame(b"b")
    assert polled.poll_end() is False  # a frame is ready first
    assert polled.read_ready() == [b"b"]
    group.finish()
    assert polled.poll_end() is True
    producer.finish()
    assert reader.finished
    assert reader.poll_group() is None


async def test_poll_end_raises_how_the_group_ended(broadcast: BroadcastProducer) -> None:
    producer = broadcast.create_track("video")
    reader = producer.consume()
    group = producer.append_group()
    polled = reader.poll_group()
    assert polled is not None
    group.abort(Boom("gone"))
    with pytest.raises(Boom):
        polled.poll_end()
    producer.abort(Boom("track"))
    with pytest.raises(Boom, match="track"):
        reader.poll_group()


async def test_wait_any_wakes_on_any_reader_and_leaves_no_waiter(
    broadcast: BroadcastProducer,
) -> None:
    video = broadcast.create_track("video")
    audio = broadcast.create_track("audio")
    v_reader, a_reader = video.consume(), audio.consume()
    v_group = video.append_group()
    polled = v_reader.poll_group()
    assert polled is not None
    for wake in (lambda: audio.append_group(), lambda: v_group.write_frame(b"x")):
        waiter = asyncio.ensure_future(wait_any([v_reader, a_reader, polled]))
        await asyncio.sleep(0)
        assert not waiter.done()
        wake()
        async with asyncio.timeout(1):
            await waiter
    # Woken through one list, the future left the others: no stale waiter is woken later.
    assert all(not reader._state.waiters for reader in (v_reader, a_reader, polled))
    cancelled = asyncio.ensure_future(wait_any([v_reader, a_reader]))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert not v_reader._state.waiters
    assert not a_reader._state.waiters
    await wait_any([])  # nothing to wait on: returns at once
