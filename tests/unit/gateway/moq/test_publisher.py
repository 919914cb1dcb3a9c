"""The publisher half against the real model and a sans-I/O session (no sockets): what goes on
the wire for announces and subscriptions, error codes, metering of exactly what was handed
over, and priority and skipping when the send budget is full."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from gateway.moq.publisher import Publisher, SendBudget
from gateway.moq.session import (
    MoqSession,
    ResetStream,
    SessionEnded,
    StreamData,
)
from gateway.moq.wire import (
    Announce,
    AnnounceRequest,
    GroupHeader,
    StreamCode,
    Subscribe,
    SubscribeUpdate,
    Version,
    encode_varint,
    take_message,
    take_varint,
)
from model import BroadcastProducer, Origin, Usage
from tests.unit.gateway.moq.fakes import CountingAllocator

L3 = Version.LITE_03


class Wire:
    """Collects what the session sends, per stream."""

    def __init__(self, session: MoqSession) -> None:
        self.session = session
        self.data: dict[int, bytearray] = defaultdict(bytearray)
        self.fin: set[int] = set()
        self.resets: dict[int, int] = {}

    def pump(self) -> None:
        for command in self.session.data_to_send():
            if isinstance(command, StreamData):
                self.data[command.stream_id] += command.data
                if command.end_stream:
                    self.fin.add(command.stream_id)
            elif isinstance(command, ResetStream):
                self.resets[command.stream_id] = command.code

    def groups(self) -> dict[int, tuple[GroupHeader, list[bytes]]]:
        """Every uni stream: its header and frames (parsed here, as a peer would)."""
        out = {}
        for sid, raw in self.data.items():
            if not sid & 0x2:
                continue
            kind, pos = take_varint(raw) or (None, 0)
            assert kind == 0
            got = take_message(raw, pos)
            assert got is not None
            body, pos = got
            header = GroupHeader.decode(body, L3)
            frames = []
            while pos < len(raw):
                size_pos = take_varint(raw, pos)
                assert size_pos is not None
                size, pos = size_pos
                frames.append(bytes(raw[pos : pos + size]))
                pos += size
            out[sid] = (header, frames)
        return out


class Backlog:
    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self) -> int:
        return self.bytes


async def settle(wire: Wire, turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)
        wire.pump()


def setup(
    origin: Origin, backlog: Backlog | None = None, cap: int = 1 << 20
) -> tuple[MoqSession, Publisher, Wire, dict[str, Usage]]:
    session = MoqSession(L3, is_client=False, allocator=CountingAllocator())
    wire = Wire(session)
    meters: dict[str, Usage] = {}
    budget = SendBudget(backlog or Backlog(), lambda sid: 0, cap)
    publisher = Publisher(
        session,
        origin,
        flush=lambda: None,
        budget=budget,
        meter_for=lambda path: meters.setdefault(path, Usage()),
        track_wait_s=0.05,
    )
    return session, publisher, wire, meters


def published(path: str) -> tuple[Origin, BroadcastProducer]:
    """An origin with one (empty) broadcast at `path`."""
    origin = Origin()
    broadcast = BroadcastProducer()
    origin.publish(path, broadcast)
    return origin, broadcast


def feed(session: MoqSession, publisher: Publisher, sid: int, data: bytes) -> None:
    for event in session.feed(sid, data, False, 0.0):
        publisher.handle(event)


def subscribe(sid: int, sub_id: int, path: str, track: str, priority: int = 0) -> bytes:
    return b"\x02" + Subscribe(
        subscribe_id=sub_id, broadcast=path, track=track, priority=priority
    ).encode(L3)


async def test_announce_sends_the_live_set_then_changes_and_never_fins() -> None:
    origin = Origin()
    first = BroadcastProducer()
    origin.publish("live/a", first)
    origin.publish("other/x", BroadcastProducer())
    session, publisher, wire, _ = setup(origin)
    feed(session, publisher, 0, b"\x01" + AnnounceRequest(prefix="live").encode(L3))
    await settle(wire)
    second = BroadcastProducer()
    origin.publish("live/b", second)
    await settle(wire)
    first.finish()
    await settle(wire)
    expected = b"".join(
        Announce(active=a, suffix=s).encode(L3) for a, s in [(True, "a"), (True, "b"), (False, "a")]
    )
    assert bytes(wire.data[0]) == expected
    assert 0 not in wire.fin
    await publisher.aclose()
    second.finish()


async def test_a_subscription_gets_subscribe_ok_then_the_latest_group_and_newer_ones() -> None:
    origin, broadcast = published("live/a")
    track = broadcast.create_track("video")
    old = track.append_group()
    old.write_frame(b"old")
    old.finish()
    latest = track.append_group()
    latest.write_frame(b"k1")
    session, publisher, wire, meters = setup(origin)
    feed(session, publisher, 4, subscribe(4, 7, "live/a", "video", priority=9))
    await settle(wire)
    latest.write_frame(b"d1")
    latest.finish()
    newer = track.append_group()
    newer.write_frame(b"k2")
    newer.finish()
    track.finish()
    broadcast.finish()
    await settle(wire)
    await asyncio.wait_for(_until(lambda: 4 in wire.fin, wire), 2)
    assert bytes(wire.data[4]) == bytes.fromhex("00050900000000")  # SUBSCRIBE_OK, priority 9
    groups = sorted(wire.groups().values(), key=lambda g: g[0].sequence)
    assert groups == [
        (GroupHeader(subscribe_id=7, sequence=1), [b"k1", b"d1"]),
        (GroupHeader(subscribe_id=7, sequence=2), [b"k2"]),
    ]
    assert all(sid in wire.fin for sid in wire.groups())
    # Billed exactly what went out: two groups, three frames, their payload bytes.
    assert meters["live/a"] == Usage(groups=2, frames=3, bytes=6)


async def _until(predicate, wire: Wire) -> None:  # type: ignore[no-untyped-def]
    while not predicate():
        await asyncio.sleep(0.01)
        wire.pump()


@pytest.mark.parametrize(
    ("path", "track", "code"),
    [
        ("live/none", "video", StreamCode.UNROUTABLE),
        ("live/a", "nope", StreamCode.NOT_FOUND),
        ("live/../a", "video", StreamCode.UNROUTABLE),
    ],
)
async def test_unknown_broadcasts_and_tracks_are_reset_with_moq_rs_codes(
    path: str, track: str, code: int
) -> None:
    origin, broadcast = published("live/a")
    broadcast.create_track("video")
    session, publisher, wire, meters = setup(origin)
    feed(session, publisher, 4, subscribe(4, 0, path, track))
    await asyncio.wait_for(_until(lambda: 4 in wire.resets, wire), 2)
    assert wire.resets[4] == code
    assert all(m == Usage() for m in meters.values())
    broadcast.finish()


async def test_a_subscription_waits_briefly_for_a_track_that_appears() -> None:
    origin, broadcast = published("live/a")
    session, publisher, wire, _ = setup(origin)
    publisher._track_wait_s = 2.0
    feed(session, publisher, 4, subscribe(4, 0, "live/a", "catalog.json"))
    await settle(wire)
    catalog = broadcast.create_track("catalog.json")
    catalog.write_frame(b"{}")
    await asyncio.wait_for(_until(lambda: bool(wire.groups()), wire), 2)
    ((_, frames),) = wire.groups().values()
    assert frames == [b"{}"]
    await publisher.aclose()
    catalog.finish()
    broadcast.finish()


async def test_a_cancelled_subscription_resets_its_group_and_stops_reading() -> None:
    origin, broadcast = published("live/a")
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(b"k")
    session, publisher, wire, meters = setup(origin)
    feed(session, publisher, 4, subscribe(4, 0, "live/a", "video"))
    await settle(wire)
    for event in session.stream_reset(4, StreamCode.CANCELLED, 0.0):
        publisher.handle(event)
    await settle(wire)
    group.write_frame(b"after")
    await settle(wire)
    (sid,) = wire.groups()
    assert wire.resets[sid] == StreamCode.CANCELLED
    assert wire.resets[4] == StreamCode.CANCELLED
    assert meters["live/a"] == Usage(groups=1, frames=1, bytes=1)
    broadcast.finish()


async def test_a_group_the_peer_stops_bills_no_frame_written_after_the_stop() -> None:
    origin, broadcast = published("live/a")
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(b"k0")
    session, publisher, wire, meters = setup(origin)
    feed(session, publisher, 4, subscribe(4, 0, "live/a", "video"))
    await settle(wire)
    (sid,) = wire.groups()
    # The frame and the STOP_SENDING land in the same loop turn, before the task runs.
    group.write_frame(b"d0")
    for event in session.stop_sending(sid, StreamCode.CANCELLED, 0.0):
        publisher.handle(event)
    await settle(wire)
    assert wire.groups()[sid][1] == [b"k0"]
    assert meters["live/a"] == Usage(groups=1, frames=1, bytes=2)
    group.finish()
    track.finish()
    broadcast.finish()
    await publisher.aclose()


async def test_a_congested_link_skips_to_the_newest_group_and_bills_only_what_went_out() -> None:
    origin, broadcast = published("live/a")
    track = broadcast.create_track("video")
    first = track.append_group()
    first.write_frame(b"k0")
    backlog = Backlog()
    session, publisher, wire, meters = setup(origin, backlog, cap=100)
    feed(session, publisher, 4, subscribe(4, 0, "live/a", "video"))
    await settle(wire)
    backlog.bytes = 1000  # the link stops draining
    first.write_frame(b"d0")
    first.finish()
    for seq in (1, 2, 3):
        group = track.append_group()
        group.write_frame(f"k{seq}".encode())
        group.finish()
    # The group being sent when the link stalled is dropped once the track moved on.
    await asyncio.wait_for(_until(lambda: StreamCode.OLD in wire.resets.values(), wire), 2)
    backlog.bytes = 0
    publisher.budget.poke()
    track.finish()
    broadcast.finish()
    await asyncio.wait_for(_until(lambda: 4 in wire.fin, wire), 2)
    groups = {h.sequence: (sid, frames) for sid, (h, frames) in wire.groups().items()}
    assert sorted(groups) == [0, 3]  # the congested group was dropped, 1 and 2 never started
    sid0, frames0 = groups[0]
    assert frames0 == [b"k0"]  # d0 came after the stall: never read, never billed
    assert wire.resets[sid0] == StreamCode.OLD
    assert groups[3][1] == [b"k3"]
    assert publisher.skipped_groups == 3  # group 0 dropped part-way, 1 and 2 never started
    assert meters["live/a"] == Usage(groups=2, frames=2, bytes=4)


async def test_when_congested_the_higher_priority_subscription_is_served_first() -> None:
    origin, broadcast = published("live/a")
    low_track = broadcast.create_track("low")
    high_track = broadcast.create_track("high")
    backlog = Backlog()
    session, publisher, wire, _ = setup(origin, backlog, cap=100)
    feed(session, publisher, 4, subscribe(4, 1, "live/a", "low", priority=1))
    feed(session, publisher, 8, subscribe(8, 2, "live/a", "high", priority=200))
    await settle(wire)
    backlog.bytes = 1000
    low = low_track.append_group()
    high = high_track.append_group()
    low.write_frame(b"L")
    high.write_frame(b"H")
    await settle(wire)
    assert all(not frames for _, frames in wire.groups().values())  # both wait for room
    backlog.bytes = 99  # room for one turn
    order: list[int] = []

    def record() -> None:
        for header, frames in wire.groups().values():
            if frames and header.subscribe_id not in order:
                order.append(header.subscribe_id)

    publisher.budget.poke()
    await settle(wire)
    record()
    backlog.bytes = 0
    publisher.budget.poke()
    await settle(wire)
    record()
    assert order[0] == 2
    await publisher.aclose()
    broadcast.finish()


async def test_subscribe_update_changes_the_priority() -> None:
    origin, broadcast = published("live/a")
    track = broadcast.create_track("video")
    session, publisher, wire, _ = setup(origin)
    feed(session, publisher, 4, subscribe(4, 0, "live/a", "video", priority=1))
    await settle(wire)
    feed(session, publisher, 4, SubscribeUpdate(priority=77).encode(L3))
    assert publisher._subs[4].priority == 77
    await publisher.aclose()
    track.finish()
    broadcast.finish()


async def test_the_session_end_stops_every_task() -> None:
    origin, broadcast = published("live/a")
    track = broadcast.create_track("video")
    session, publisher, wire, _ = setup(origin)
    feed(session, publisher, 0, b"\x01" + AnnounceRequest(prefix="").encode(L3))
    feed(session, publisher, 4, subscribe(4, 0, "live/a", "video"))
    await settle(wire)
    for event in session.connection_lost(0, "bye"):
        assert isinstance(event, SessionEnded)
        publisher.handle(event)
    await settle(wire)
    assert publisher._tasks == {}
    track.finish()
    broadcast.finish()


def test_budget_wakes_the_highest_priority_waiter_first() -> None:
    async def run() -> list[int]:
        backlog = Backlog()
        backlog.bytes = 10
        budget = SendBudget(backlog, lambda sid: 0, cap_bytes=5)
        woken: list[int] = []

        async def waiter(priority: int) -> None:
            if await budget.wait(priority, 1.0):
                woken.append(priority)

        tasks = [asyncio.ensure_future(waiter(p)) for p in (1, 50, 9)]
        await asyncio.sleep(0)
        assert not budget.may_send(100)
        backlog.bytes = 0
        assert not budget.may_send(10)  # a priority-50 sender is queued ahead
        assert budget.may_send(50)
        for _ in range(3):
            budget.poke()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return woken

    assert asyncio.run(run()) == [50, 9, 1]


def test_encode_varint_helper_is_what_frames_use() -> None:
    assert encode_varint(2) + b"k1" == b"\x02k1"
