"""Property: under any interleaving of writes, subscribes, reads, fetches, evictions, finishes
and aborts, every egress meter equals exactly what its consumers received, and the ingress meter
equals exactly what the model accepted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import (
    BroadcastConsumer,
    BroadcastProducer,
    CachePool,
    GroupConsumer,
    GroupProducer,
    ManualClock,
    ModelError,
    TrackConsumer,
    TrackInfo,
    TrackProducer,
    Usage,
)

READS = {"next_group", "next_frame", "read_ready", "fetch"}


class Boom(Exception):
    """An abort reason."""


@dataclass
class Reader:
    """One track consumer and what it really got."""

    track: TrackConsumer
    received: Usage = field(default_factory=Usage)
    group: GroupConsumer | None = None


@dataclass
class Viewer:
    """One broadcast consumer handle (one meter) and its track readers."""

    consumer: BroadcastConsumer
    meter: Usage
    readers: list[Reader] = field(default_factory=list)

    def received(self) -> Usage:
        total = Usage()
        for reader in self.readers:
            total.add(reader.received)
        return total


SEEN: dict[str, int] = {}  # outcome kinds, for checking the generator's reach by hand


async def attempt(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run `coro` until it blocks: (True, result or exception) if it completed, else cancel it
    and return (False, None). Nothing is consumed by a cancelled read."""
    task = asyncio.ensure_future(coro)
    for _ in range(2):
        await asyncio.sleep(0)
    if task.done():
        exc = task.exception()
        result = exc if exc is not None else task.result()
        kind = type(result).__name__
        SEEN[kind] = SEEN.get(kind, 0) + 1
        return True, result
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False, None


# Op kinds, repeated to weight them: mostly writes and reads, ends rare enough that most
# examples move content for a while first.
KINDS = (
    ["write"] * 20
    + ["append", "create"] * 4
    + ["write_one"] * 8
    + ["end_group"] * 8
    + ["next_group"] * 10
    + ["next_frame"] * 20
    + ["read_ready", "fetch"] * 5
    + ["subscribe", "tick"] * 6
    + ["end_track"] * 2
    + ["end_broadcast"]
)
# (kind, track, size/sequence/viewer, flag, flag, reader index taken modulo the readers)
Op = tuple[str, int, int, bool, bool, int]
OPS = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 1),
        st.integers(0, 700),
        st.booleans(),
        st.booleans(),
        st.integers(0, 63),
    ),
    min_size=10,
    max_size=100,
)


async def scenario(ops: list[Op]) -> None:
    clock = ManualClock()
    pool = CachePool(1500, max_group_bytes=1200, clock=clock)
    ingress = Usage()
    broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress)
    tracks: list[TrackProducer] = [
        broadcast.create_track(TrackInfo("video", latency_max_s=2.0)),
        broadcast.unique_track(".aac", latency_max_s=2.0),
    ]
    open_groups: dict[int, GroupProducer] = {}
    left_open: list[GroupProducer] = []
    written = Usage()
    viewers: list[Viewer] = []
    readers: list[Reader] = []

    for op in ops:
        kind, t, n, flag, keep_open, any_reader = op
        track = tracks[t]
        try:
            replaces = kind in ("append", "create") or (
                kind == "write" and t in open_groups and open_groups[t].is_closed
            )
            if replaces and t in open_groups:
                left_open.append(open_groups.pop(t))  # stays referenced until the end
            if kind == "append" or (kind == "write" and t not in open_groups):
                open_groups[t] = track.append_group()
                written.add_group()
            elif kind == "create":
                open_groups[t] = track.create_group(n % 13)
                written.add_group()
            if kind == "write":
                open_groups[t].write_frame(b"w" * n)
                written.add_frame(n)
            elif kind == "write_one":
                before = track.latest_sequence
                try:
                    track.write_frame(b"o" * n)
                finally:
                    if track.latest_sequence != before:
                        written.add_group()  # the group was created even if the write failed
                written.add_frame(n)
            elif kind == "end_group" and t in open_groups:
                group = open_groups.pop(t)
                if keep_open:
                    left_open.append(group)
                else:
                    group.finish() if flag else group.abort(Boom())
            elif kind == "subscribe" or (kind in READS and not readers):
                index = n % 4 if kind == "subscribe" else 0
                while len(viewers) <= index:
                    meter = Usage()
                    viewers.append(Viewer(broadcast.consume().with_meter(meter), meter))
                viewer = viewers[index]
                reader = Reader(viewer.consumer.subscribe_track(track.name))
                viewer.readers.append(reader)
                readers.append(reader)
            elif kind == "next_group":
                reader = readers[any_reader % len(readers)]
                done, got = await attempt(reader.track.next_group())
                if done and isinstance(got, GroupConsumer):
                    reader.group = got
                    reader.received.add_group()
            elif kind == "next_frame":
                reader = readers[any_reader % len(readers)]
                if reader.group is not None:
                    done, got = await attempt(reader.group.next_frame())
                    if done and isinstance(got, bytes):
                        reader.received.add_frame(len(got))
            elif kind == "read_ready":
                reader = readers[any_reader % len(readers)]
                if reader.group is not None:
                    for frame in reader.group.read_ready():
                        reader.received.add_frame(len(frame))
                        SEEN["read_ready"] = SEEN.get("read_ready", 0) + 1
            elif kind == "fetch":
                reader = readers[any_reader % len(readers)]
                done, got = await attempt(reader.track.fetch_group(n % 13))
                if done and isinstance(got, GroupConsumer):
                    reader.group = got  # re-served: no group counted
            elif kind == "tick":
                clock.advance((0.5, 1.0, 3.0)[n % 3])
            elif kind == "end_track":
                track.finish() if flag else track.abort(Boom())
            elif kind == "end_broadcast":
                broadcast.finish() if flag else broadcast.abort(Boom())
        except ModelError:
            pass
        assert ingress == written, op
        for viewer in viewers:
            assert viewer.meter == viewer.received(), op
        # The budget covers every cached byte, each track's latest group included.
        held = sum(len(f) for t in tracks for g in t._state.groups.values() for f in g.frames)
        assert pool.used_bytes == held <= pool.limit_bytes, op

    SEEN["budget_evictions"] = SEEN.get("budget_evictions", 0) + pool.evicted_groups
    SEEN["latest_evictions"] = SEEN.get("latest_evictions", 0) + pool.evicted_latest_groups
    for group in [*open_groups.values(), *left_open]:
        group.finish()
    broadcast.finish()
    for viewer in viewers:  # drain what is left; the meters keep matching
        for reader in viewer.readers:
            while True:
                while reader.group is not None:
                    done, frame = await attempt(reader.group.next_frame())
                    assert done  # every group has ended by now
                    if not isinstance(frame, bytes):
                        break
                    reader.received.add_frame(len(frame))
                done, got = await attempt(reader.track.next_group())
                if not done or not isinstance(got, GroupConsumer):
                    break
                reader.group = got
                reader.received.add_group()
        assert viewer.meter == viewer.received()
    assert ingress == written


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_meters_equal_what_was_written_and_what_each_consumer_received(ops: list[Op]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(10):
            await scenario(ops)

    asyncio.run(bounded())
