"""Broadcasts: how tracks come in (create, unique, reserve, dynamic) and how the end propagates."""

from __future__ import annotations

import asyncio
import gc

import pytest

from model import (
    BroadcastProducer,
    CachePool,
    Closed,
    Dropped,
    Duplicate,
    ManualClock,
    NotFound,
    TrackInfo,
)


class Boom(Exception):
    """A test error with an identity to compare."""


@pytest.fixture
def broadcast(clock: ManualClock, pool: CachePool) -> BroadcastProducer:
    return BroadcastProducer(clock=clock, pool=pool)


async def test_unique_track_names_count_up_per_broadcast_across_suffixes(
    broadcast: BroadcastProducer,
) -> None:
    names = [broadcast.unique_track(s).name for s in (".avc3", ".aac", ".aac", ".opus")]
    assert names == ["0.avc3", "1.aac", "2.aac", "3.opus"]
    assert broadcast.track_names() == names
    broadcast.finish()


async def test_unique_track_skips_names_already_taken(broadcast: BroadcastProducer) -> None:
    broadcast.create_track("0.avc3")
    track = broadcast.unique_track(".avc3", priority=2, latency_max_s=10.0)
    assert track.name == "1.avc3"
    assert track.info == TrackInfo("1.avc3", priority=2, latency_max_s=10.0)
    broadcast.finish()


async def test_create_track_rejects_a_name_that_exists_or_is_reserved(
    broadcast: BroadcastProducer,
) -> None:
    video = broadcast.create_track("video")
    audio = broadcast.reserve_track("audio")
    with pytest.raises(Duplicate):
        broadcast.create_track("video")
    with pytest.raises(Duplicate):
        broadcast.create_track(TrackInfo("audio"))
    with pytest.raises(Duplicate):
        broadcast.reserve_track("video")
    audio.reject(NotFound("audio"))
    video.finish()
    broadcast.finish()


async def test_subscribing_to_an_unknown_track_without_a_handler_is_not_found(
    broadcast: BroadcastProducer,
) -> None:
    with pytest.raises(NotFound):
        broadcast.consume().subscribe_track("nope")
    broadcast.finish()


async def test_a_reserved_track_is_readable_before_it_is_accepted(
    broadcast: BroadcastProducer,
) -> None:
    request = broadcast.reserve_track("catalog.json")
    reader = broadcast.consume().subscribe_track("catalog.json")
    assert broadcast.track_names() == []
    pending = asyncio.ensure_future(reader.next_group())
    await asyncio.sleep(0)
    track = request.accept(TrackInfo("catalog.json", latency_max_s=5.0))
    track.write_frame(b"{}")
    async with asyncio.timeout(1):
        group = await pending
    assert group is not None
    assert await group.read_all() == [b"{}"]
    assert reader.info.latency_max_s == 5.0
    with pytest.raises(Closed):
        request.accept()
    broadcast.finish()


async def test_a_dynamic_handler_serves_tracks_requested_before_they_exist(
    broadcast: BroadcastProducer,
) -> None:
    dynamic = broadcast.dynamic()
    consumer = broadcast.consume()
    first = consumer.subscribe_track("thumbs")
    second = consumer.subscribe_track("thumbs")  # coalesces with the first request
    async with asyncio.timeout(1):
        request = await dynamic.requested_track()
    assert request is not None
    assert request.name == "thumbs"
    track = request.accept()
    track.write_frame(b"jpg")
    for reader in (first, second):
        async with asyncio.timeout(1):
            group = await reader.next_group()
        assert group is not None
        assert await group.read_all() == [b"jpg"]
    dynamic.close()
    broadcast.finish()
    async with asyncio.timeout(1):
        assert await dynamic.requested_track() is None


async def test_a_rejected_request_reaches_its_readers_and_frees_the_name(
    broadcast: BroadcastProducer,
) -> None:
    with broadcast.dynamic() as dynamic:
        reader = broadcast.consume().subscribe_track("nope")
        async with asyncio.timeout(1):
            request = await dynamic.requested_track()
        assert request is not None
        err = NotFound("track 'nope'")
        request.reject(err)
        with pytest.raises(NotFound) as caught:
            async with asyncio.timeout(1):
                await reader.next_group()
        assert caught.value is err
        broadcast.create_track("nope").finish()
    broadcast.finish()


async def test_a_dropped_request_rejects_with_dropped(broadcast: BroadcastProducer) -> None:
    with broadcast.dynamic() as dynamic:
        reader = broadcast.consume().subscribe_track("x")
        async with asyncio.timeout(1):
            request = await dynamic.requested_track()
        del request
        gc.collect()
        with pytest.raises(Dropped):
            async with asyncio.timeout(1):
                await reader.next_group()
    broadcast.finish()


async def test_create_track_fulfils_a_pending_request(broadcast: BroadcastProducer) -> None:
    with broadcast.dynamic():
        reader = broadcast.consume().subscribe_track("audio")
        track = broadcast.create_track("audio")
        track.write_frame(b"a")
        async with asyncio.timeout(1):
            group = await reader.next_group()
        assert group is not None
        assert await group.read_all() == [b"a"]
    broadcast.finish()


async def test_requests_left_when_the_last_handler_closes_are_not_found(
    broadcast: BroadcastProducer,
) -> None:
    dynamic = broadcast.dynamic()
    reader = broadcast.consume().subscribe_track("late")
    dynamic.close()
    with pytest.raises(NotFound):
        async with asyncio.timeout(1):
            await reader.next_group()
    broadcast.finish()


async def test_broadcast_finish_ends_every_track_after_draining(
    broadcast: BroadcastProducer,
) -> None:
    video = broadcast.create_track("video")
    consumer = broadcast.consume()
    reader = consumer.subscribe_track("video")
    video.write_frame(b"last")
    broadcast.finish()
    async with asyncio.timeout(1):
        await consumer.closed()
        group = await reader.next_group()
        assert group is not None
        assert await group.read_all() == [b"last"]
        assert await reader.next_group() is None
    assert consumer.finished
    with pytest.raises(Closed):
        broadcast.create_track("more")
    with pytest.raises(Closed):
        video.append_group()


async def test_broadcast_abort_reaches_closed_and_every_track(
    broadcast: BroadcastProducer,
) -> None:
    video = broadcast.create_track("video")
    consumer = broadcast.consume()
    reader = consumer.subscribe_track("video")
    waiting = asyncio.ensure_future(consumer.closed())
    await asyncio.sleep(0)
    err = Boom("publisher lost")
    broadcast.abort(err)
    for awaitable in (waiting, reader.next_group()):
        with pytest.raises(Boom) as caught:
            async with asyncio.timeout(1):
                await awaitable
        assert caught.value is err
    assert consumer.error is err
    assert video.is_closed


async def test_a_dropped_broadcast_warns_and_consumers_see_dropped(
    clock: ManualClock, pool: CachePool, caplog: pytest.LogCaptureFixture
) -> None:
    broadcast = BroadcastProducer(clock=clock, pool=pool)
    consumer = broadcast.consume()
    del broadcast
    with pytest.raises(Dropped):
        async with asyncio.timeout(1):
            await consumer.closed()
    assert any("broadcast dropped" in r.getMessage() for r in caplog.records)


async def test_finish_and_abort_end_once(broadcast: BroadcastProducer) -> None:
    consumer = broadcast.consume()
    broadcast.finish()
    broadcast.abort(Boom())
    broadcast.finish()
    async with asyncio.timeout(1):
        await consumer.closed()
    assert consumer.error is None
