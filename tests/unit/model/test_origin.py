"""The origin: normalized paths, publish policies, announce streams, waiting for a path."""

from __future__ import annotations

import asyncio

import pytest

from model import (
    Announce,
    AnnounceConsumer,
    BroadcastProducer,
    CachePool,
    Closed,
    ManualClock,
    Origin,
    PublishConflict,
    PublisherPolicy,
    normalize_path,
)


class Boom(Exception):
    """A test error."""


@pytest.fixture
def origin(clock: ManualClock) -> Origin:
    return Origin(clock=clock)


@pytest.fixture
def make(clock: ManualClock, pool: CachePool) -> type[BroadcastProducer]:
    class Made(BroadcastProducer):
        def __init__(self) -> None:
            super().__init__(clock=clock, pool=pool)

    return Made


async def next_event(announced: AnnounceConsumer) -> Announce:
    async with asyncio.timeout(1):
        event = await announced.next()
    assert event is not None
    return event


async def no_event(announced: AnnounceConsumer) -> None:
    task = asyncio.ensure_future(announced.next())
    await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("live/cam1", "live/cam1"),
        ("/live/cam1/", "live/cam1"),
        ("//live///cam1", "live/cam1"),
        ("", ""),
        ("///", ""),
    ],
)
def test_paths_are_trimmed_and_collapsed(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize("raw", ["live/../x", "./live", "live/.", ".."])
def test_dot_segments_are_rejected(raw: str) -> None:
    with pytest.raises(ValueError, match="segment"):
        normalize_path(raw)


async def test_a_published_broadcast_is_found_at_its_normalized_path(
    origin: Origin, make: type[BroadcastProducer]
) -> None:
    broadcast = make()
    origin.publish("/live//cam1/", broadcast)
    assert origin.is_live("live/cam1")
    consumer = origin.get("live/cam1/")
    assert consumer is not None
    assert consumer.same_broadcast(broadcast.consume())
    assert origin.get("live") is None
    assert origin.paths() == ["live/cam1"]
    broadcast.finish()


async def test_publishing_at_the_empty_path_or_an_ended_broadcast_fails(
    origin: Origin, make: type[BroadcastProducer]
) -> None:
    broadcast = make()
    with pytest.raises(ValueError, match="empty"):
        origin.publish("/", broadcast)
    broadcast.finish()
    with pytest.raises(Closed):
        origin.publish("live/x", broadcast)


async def test_a_second_publisher_on_a_live_path_is_rejected_by_default(
    origin: Origin, make: type[BroadcastProducer]
) -> None:
    first, second = make(), make()
    origin.publish("live/cam1", first)
    with pytest.raises(PublishConflict) as caught:
        origin.publish("/live/cam1", second)
    assert caught.value.path == "live/cam1"
    consumer = origin.get("live/cam1")
    assert consumer is not None
    assert consumer.same_broadcast(first.consume())
    origin.publish("live/cam1", first)  # the same broadcast again is a no-op
    first.finish()
    origin.publish("live/cam1", second)  # the path is free once the first ended
    second.finish()


async def test_takeover_unannounces_the_old_broadcast_then_announces_the_new_one(
    clock: ManualClock, make: type[BroadcastProducer]
) -> None:
    origin = Origin(clock=clock, publisher_policy=PublisherPolicy.TAKEOVER)
    first, second = make(), make()
    origin.publish("live/cam1", first)
    announced = origin.announced("live")
    event = await next_event(announced)
    assert event.broadcast is not None
    assert event.broadcast.same_broadcast(first.consume())
    origin.publish("live/cam1", second)
    ended = await next_event(announced)
    assert (ended.path, ended.broadcast) == ("live/cam1", None)
    active = await next_event(announced)
    assert active.broadcast is not None
    assert active.broadcast.same_broadcast(second.consume())
    assert not first.is_closed  # the old publisher carries on, unreachable by path
    first.finish()  # ending the replaced broadcast does not touch the path
    await no_event(announced)
    assert origin.is_live("live/cam1")
    second.finish()
    assert not (await next_event(announced)).active
    announced.close()


async def test_announced_replays_the_live_set_first_then_changes(
    origin: Origin, make: type[BroadcastProducer]
) -> None:
    b, a, c = make(), make(), make()
    origin.publish("live/b", b)
    origin.publish("live/a", a)
    announced = origin.announced()
    assert [(await next_event(announced)).path for _ in range(2)] == ["live/a", "live/b"]
    await no_event(announced)
    origin.publish("live/c", c)
    event = await next_event(announced)
    assert (event.path, event.active) == ("live/c", True)
    a.finish()
    event = await next_event(announced)
    assert (event.path, event.active) == ("live/a", False)
    b.abort(Boom())
    event = await next_event(announced)
    assert (event.path, event.active) == ("live/b", False)
    assert not origin.is_live("live/b")
    c.finish()
    announced.close()
    async with asyncio.timeout(1):
        assert await announced.next() is None


async def test_announce_prefixes_match_on_segment_boundaries(
    origin: Origin, make: type[BroadcastProducer]
) -> None:
    broadcasts = {path: make() for path in ("live", "live/cam1", "lively/cam2", "other/live")}
    for path, broadcast in broadcasts.items():
        origin.publish(path, broadcast)
    announced = origin.announced("/live/")
    assert {(await next_event(announced)).path for _ in range(2)} == {"live", "live/cam1"}
    await no_event(announced)
    assert origin.paths("live") == ["live", "live/cam1"]
    for broadcast in broadcasts.values():
        broadcast.finish()
    ended = {(await next_event(announced)).path for _ in range(2)}
    assert ended == {"live", "live/cam1"}
    announced.close()


async def test_a_slow_announce_reader_sees_each_path_once_with_its_latest_state(
    origin: Origin, make: type[BroadcastProducer]
) -> None:
    announced = origin.announced()
    short = make()
    origin.publish("live/flash", short)
    short.finish()  # came and went before the reader looked: coalesced away
    kept = make()
    origin.publish("live/kept", kept)
    event = await next_event(announced)
    assert (event.path, event.active) == ("live/kept", True)
    await no_event(announced)
    kept.finish()
    announced.close()


async def test_announced_broadcast_waits_for_the_path(
    origin: Origin, make: type[BroadcastProducer]
) -> None:
    waiting = asyncio.ensure_future(origin.announced_broadcast("/live/cam9"))
    await asyncio.sleep(0)
    assert not waiting.done()
    broadcast = make()
    origin.publish("live/cam9", broadcast)
    async with asyncio.timeout(1):
        consumer = await waiting
    assert consumer.same_broadcast(broadcast.consume())
    broadcast.finish()


async def test_a_cancelled_wait_for_a_path_leaves_nothing_behind(origin: Origin) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await origin.announced_broadcast("live/never")
    assert origin._path_waiters == {}


async def test_the_origin_unannounces_a_broadcast_dropped_by_its_publisher(
    origin: Origin, make: type[BroadcastProducer], caplog: pytest.LogCaptureFixture
) -> None:
    broadcast = make()
    origin.publish("live/cam1", broadcast)
    del broadcast
    assert not origin.is_live("live/cam1")
    assert any("dropped" in r.getMessage() for r in caplog.records)
