"""StatsHandle: usage per (path, tier, role), lifecycle counters that only grow, distinct
viewers, bounded memory, thread safety."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import sys
import threading
import time
import weakref

import pytest

from model import (
    BroadcastProducer,
    CachePool,
    Closed,
    ManualClock,
    Origin,
    PublishConflict,
    StatsEntry,
    StatsGuard,
    StatsHandle,
    Usage,
)

# Every counter of a StatsEntry (the rest are labels).
COUNTERS = [f for f in StatsEntry.__dataclass_fields__ if f not in ("node", "path", "tier", "role")]


def entries(stats: StatsHandle) -> dict[tuple[str, str, str], StatsEntry]:
    return {(e.path, e.tier, e.role): e for e in stats.snapshot()}


async def test_guards_meter_a_broadcast_end_to_end(clock: ManualClock, pool: CachePool) -> None:
    stats = StatsHandle(node="gw-1")
    with stats.broadcast("/live/cam1/", tier="pro").ingress() as ingress:
        broadcast = BroadcastProducer(clock=clock, pool=pool).with_meter(ingress.meter)
        track = broadcast.create_track("video")
        viewers = [
            stats.broadcast("live/cam1", tier="pro").egress(viewer=f"v{i}") for i in range(2)
        ]
        readers = [
            broadcast.consume().with_meter(g.meter).subscribe_track("video") for g in viewers
        ]
        group = track.append_group()
        group.write_frame(b"x" * 1000)
        group.finish()
        track.finish()
        for reader in readers:
            async with asyncio.timeout(1):
                async for g in reader:
                    await g.read_all()
        for guard in viewers:
            guard.close()
        broadcast.finish()
    got = entries(stats)
    assert got.keys() == {("live/cam1", "pro", "ingress"), ("live/cam1", "pro", "egress")}
    ing, egr = got["live/cam1", "pro", "ingress"], got["live/cam1", "pro", "egress"]
    assert (ing.groups, ing.frames, ing.bytes) == (1, 1, 1000)
    assert (egr.groups, egr.frames, egr.bytes) == (2, 2, 2000)
    assert (ing.announced, ing.announced_closed, ing.sessions, ing.sessions_closed) == (1, 1, 1, 1)
    assert (ing.subscriptions, ing.viewers) == (0, 0)
    assert (egr.subscriptions, egr.subscriptions_closed, egr.viewers) == (2, 2, 2)
    assert (egr.sessions, egr.sessions_closed, egr.announced) == (2, 2, 0)
    assert ing.node == "gw-1"
    assert ing.as_dict()["bytes"] == 1000


def test_tiers_and_roles_are_separate_entries() -> None:
    stats = StatsHandle(node="n")
    guards = [
        stats.broadcast("live/a", tier="pro").ingress(),
        stats.broadcast("live/a", tier="pro").egress(),
        stats.broadcast("live/a", tier="internal").egress(),
        stats.broadcast("live/a").egress(),
    ]
    for i, guard in enumerate(guards):
        guard.meter.add_frame(10**i)
    got = entries(stats)
    assert {k: e.bytes for k, e in got.items()} == {
        ("live/a", "pro", "ingress"): 1,
        ("live/a", "pro", "egress"): 10,
        ("live/a", "internal", "egress"): 100,
        ("live/a", "default", "egress"): 1000,
    }
    for guard in guards:
        guard.close()


def test_viewers_are_distinct_by_id_and_anonymous_guards_are_each_new() -> None:
    stats = StatsHandle(node="n")
    egress = stats.broadcast("live/a")
    guards = [egress.egress("alice"), egress.egress("alice"), egress.egress("bob")]
    guards += [egress.egress(), egress.egress()]
    (entry,) = stats.snapshot()
    assert (entry.viewers, entry.subscriptions, entry.sessions) == (4, 5, 5)
    for guard in guards:
        guard.close()


def test_counters_are_cumulative_across_guards_and_close_is_idempotent() -> None:
    stats = StatsHandle(node="n")
    keeper = stats.broadcast("live/a").egress()  # keeps the entry alive
    for _ in range(3):
        guard = stats.broadcast("live/a").egress()
        guard.meter.add_group()
        guard.meter.add_frame(7)
        guard.close()
        guard.close()
    (entry,) = stats.snapshot()
    assert (entry.groups, entry.frames, entry.bytes) == (3, 3, 21)
    assert (entry.subscriptions, entry.subscriptions_closed) == (4, 3)
    keeper.close()


def test_a_second_reader_sees_the_same_cumulative_numbers_and_nothing_restarts() -> None:
    stats = StatsHandle(node="n")
    guard = stats.broadcast("live/a").ingress()
    guard.meter.add_frame(5)
    assert [e.announced_closed for e in stats.snapshot()] == [0]
    guard.close()
    first, second = stats.snapshot(), stats.snapshot()
    assert first == second
    (final,) = first
    assert (final.announced, final.announced_closed, final.bytes) == (1, 1, 5)
    again = stats.broadcast("live/a").ingress()  # the same path again: adds on top
    again.meter.add_frame(2)
    again.close()
    (entry,) = stats.snapshot()
    assert (entry.announced, entry.announced_closed, entry.bytes) == (2, 2, 7)


def test_a_dropped_guard_warns_and_is_closed_at_the_next_snapshot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats = StatsHandle(node="n")
    guard = stats.broadcast("live/a").egress()
    guard.meter.add_frame(3)
    del guard
    gc.collect()
    (entry,) = stats.snapshot()
    assert (entry.subscriptions, entry.subscriptions_closed, entry.bytes) == (1, 1, 3)
    assert stats.snapshot() == [entry]
    assert stats._orphans == []
    assert any("stats guard" in r.getMessage() for r in caplog.records)


def test_snapshots_on_another_thread_never_go_back_nor_show_more_closed_than_opened() -> None:
    stats = StatsHandle(node="n")
    keepers = [stats.broadcast("live/a").egress(), stats.broadcast("live/a").ingress()]
    stop = threading.Event()
    violations: list[tuple[str, StatsEntry]] = []

    def watch() -> None:
        last: dict[tuple[str, str, str], StatsEntry] = {}
        while not stop.is_set():
            for e in stats.snapshot():
                if (
                    e.announced_closed > e.announced
                    or e.subscriptions_closed > e.subscriptions
                    or e.sessions_closed > e.sessions
                ):
                    violations.append(("closed > opened", e))
                before = last.get((e.path, e.tier, e.role))
                if before is not None and any(
                    getattr(e, name) < getattr(before, name) for name in COUNTERS
                ):
                    violations.append(("went back", e))
                last[e.path, e.tier, e.role] = e

    pool = CachePool(None)
    watcher = threading.Thread(target=watch)
    watcher.start()
    rounds = 0
    deadline = time.monotonic() + 0.5
    try:
        while rounds < 7 or (rounds < 1000 and time.monotonic() < deadline):
            b = stats.broadcast("live/a")
            with b.ingress() as ingress, b.egress(viewer=str(rounds % 7)) as egress:
                # A real broadcast: its ingress meter reads open groups live.
                broadcast = BroadcastProducer(pool=pool).with_meter(ingress.meter)
                track = broadcast.create_track("video")
                group = track.append_group()
                group.write_frame(b"x")
                group.finish()
                broadcast.finish()
                egress.meter.add_frame(1)
            rounds += 1
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert not violations
    got = entries(stats)
    assert got["live/a", "default", "egress"].subscriptions_closed == rounds
    assert got["live/a", "default", "egress"].viewers == 8  # 7 ids + the anonymous keeper
    assert got["live/a", "default", "ingress"].bytes == rounds
    for keeper in keepers:
        keeper.close()


def test_snapshot_reads_the_closed_counters_before_the_opened_ones() -> None:
    # The ordering is the invariant's second line of defence (see StatsHandle.snapshot): pin it.
    import inspect

    from model import stats as stats_module

    source = inspect.getsource(stats_module.StatsHandle.snapshot)
    for closed, opened in [
        ("announced_closed = entry.announced_closed", "announced=entry.announced"),
        ("subscriptions_closed = entry.subscriptions_closed", "subscriptions=entry.subscriptions"),
        ("sessions_closed = entry.sessions_closed", "sessions=entry.sessions"),
    ]:
        assert source.index(closed) < source.index(opened)


def test_usage_helpers() -> None:
    meter = Usage()
    meter.add_group()
    meter.add_frame(10)
    copy = meter.copy()
    meter.add(copy)
    assert (meter.groups, meter.frames, meter.bytes) == (2, 2, 20)
    assert copy == Usage(1, 1, 10)


def test_a_viewer_id_counts_once_per_path_and_tier_however_often_it_reconnects() -> None:
    stats = StatsHandle(node="n")
    for _ in range(3):  # alice reconnects: sequential sessions, one viewer
        stats.broadcast("live/a", tier="pro").egress("alice").close()
    stats.broadcast("live/a", tier="free").egress("alice").close()  # another tier: counted there
    stats.broadcast("live/b", tier="pro").egress("alice").close()  # another path
    stats.broadcast("live/a", tier="pro").egress("bob").close()
    got = entries(stats)
    assert got["live/a", "pro", "egress"].viewers == 2
    assert got["live/a", "pro", "egress"].subscriptions == 4
    assert got["live/a", "free", "egress"].viewers == 1
    assert got["live/b", "pro", "egress"].viewers == 1


def test_past_the_id_cap_the_least_recently_seen_viewer_is_forgotten_and_counts_again() -> None:
    stats = StatsHandle(node="n", viewer_ids_max=2)
    egress = stats.broadcast("live/a")
    for viewer in ["a", "b", "a", "c"]:  # "a" was seen again: "b" is the least recent
        egress.egress(viewer).close()
    (entry,) = stats.snapshot()
    assert entry.viewers == 3
    egress.egress("a").close()  # still remembered
    egress.egress("b").close()  # forgotten: counts again (an overcount, never a miss)
    (entry,) = stats.snapshot()
    assert (entry.viewers, entry.subscriptions) == (4, 6)
    with pytest.raises(ValueError, match="viewer_ids_max"):
        StatsHandle(node="n", viewer_ids_max=-1)


def test_counters_never_decrease_across_snapshots_while_sessions_open_and_close(
    clock: ManualClock, pool: CachePool
) -> None:
    stats = StatsHandle(node="n")
    rng = random.Random(3)
    open_guards: list[tuple[StatsGuard, BroadcastProducer | None]] = []
    last: dict[tuple[str, str, str], StatsEntry] = {}
    for step in range(600):
        path = f"live/p{rng.randrange(3)}"
        action = rng.random()
        if action < 0.3 or not open_guards:
            guard = stats.broadcast(path).ingress()
            producer = BroadcastProducer(clock=clock, pool=pool).with_meter(guard.meter)
            open_guards.append((guard, producer))
        elif action < 0.5:
            open_guards.append((stats.broadcast(path).egress(str(rng.randrange(5))), None))
        elif action < 0.8:
            guard, broadcast = rng.choice(open_guards)
            if broadcast is None:
                guard.meter.add_group()
                guard.meter.add_frame(rng.randrange(100))
            elif not broadcast.is_closed:
                track = broadcast.unique_track(".pes")
                group = track.append_group()  # left open: its frames are read live
                group.write_frame(b"x" * rng.randrange(100))
        else:
            guard, broadcast = open_guards.pop(rng.randrange(len(open_guards)))
            if broadcast is not None:
                broadcast.finish()
            guard.close()
        now = entries(stats)
        assert last.keys() <= now.keys(), step  # nothing pruned
        for key, before in last.items():
            after = now[key]
            for name in COUNTERS:
                assert getattr(after, name) >= getattr(before, name), (step, key, name)
        for e in now.values():
            assert e.announced_closed <= e.announced, step
            assert e.subscriptions_closed <= e.subscriptions, step
            assert e.sessions_closed <= e.sessions, step
        last = now
    for guard, left in open_guards:
        if left is not None:
            left.finish()
        guard.close()


def test_a_meter_read_low_for_a_moment_never_makes_a_snapshot_go_back() -> None:
    # A reader on another thread may catch a live ingress meter low while the loop thread ends
    # a group (model.usage.Usage); the snapshot reports the highest reading so far instead.
    stats = StatsHandle(node="n")
    guard = stats.broadcast("live/a").ingress()
    guard.meter.add_group()
    guard.meter.add_frame(100)
    assert [(e.frames, e.bytes) for e in stats.snapshot()] == [(1, 100)]
    guard.meter.frames -= 1  # stands in for the momentary low reading
    guard.meter.bytes -= 100
    (second,) = stats.snapshot()
    assert (second.groups, second.frames, second.bytes) == (1, 1, 100)
    guard.meter.frames += 2
    guard.meter.bytes += 150
    (third,) = stats.snapshot()
    assert (third.frames, third.bytes) == (2, 150)
    guard.close()


def test_the_handle_keeps_nothing_per_past_session_after_100k_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The dropped guards' warnings would pile up in pytest's log capture, not in the handle.
    monkeypatch.setattr(logging.getLogger("moqsrt.model"), "disabled", True)
    stats = StatsHandle(node="n", viewer_ids_max=500)

    def churn(sessions: range) -> None:
        for i in sessions:
            b = stats.broadcast(f"live/p{i % 5}", tier=("pro", "free")[i % 2])
            guard = b.ingress() if i % 4 == 0 else b.egress(f"v{i}" if i % 3 else None)
            guard.meter.add_frame(3)
            if i % 1000 == 0:
                del guard  # dropped unclosed: closed by its finalizer, then forgotten
            else:
                guard.close()

    finalizers = len(weakref.finalize._registry)  # type: ignore[attr-defined]
    churn(range(20_000))  # the viewer ids reach their cap
    gc.collect()
    blocks = sys.getallocatedblocks()
    churn(range(20_000, 100_000))
    gc.collect()
    stats.snapshot()  # closes the dropped guards queued since
    grown = sys.getallocatedblocks() - blocks
    assert grown < 200, grown  # a leak of one object per session would be 80,000
    assert len(stats._entries) == 15  # 5 paths x (2 egress tiers + the ingress one: even i)
    assert len(stats._viewer_ids) == 500
    assert stats._orphans == []
    assert all(not entry.live for entry in stats._entries.values())
    assert len(weakref.finalize._registry) == finalizers  # type: ignore[attr-defined]
    total = sum(e.sessions for e in stats.snapshot())
    assert total == sum(e.sessions_closed for e in stats.snapshot()) == 100_000


async def test_a_publish_refused_after_the_handshake_counts_nothing_when_the_guard_follows_it(
    clock: ManualClock, pool: CachePool
) -> None:
    # The order BroadcastStats.ingress documents: publish first, then open the guard.
    stats = StatsHandle(node="n")
    origin = Origin(clock=clock)
    sessions: list[tuple[BroadcastProducer, StatsGuard]] = []
    for _ in range(2):
        broadcast = BroadcastProducer(clock=clock, pool=pool)
        try:
            origin.publish("live/a", broadcast)
        except PublishConflict:
            broadcast.abort(Closed("publish refused"))
            continue
        guard = stats.broadcast("live/a", tier="pro").ingress()
        sessions.append((broadcast.with_meter(guard.meter), guard))
    ((broadcast, guard),) = sessions
    track = broadcast.create_track("video")
    group = track.append_group()
    group.write_frame(b"x" * 10)
    group.finish()
    broadcast.finish()
    guard.close()
    (entry,) = stats.snapshot()
    assert (entry.announced, entry.announced_closed, entry.sessions) == (1, 1, 1)
    assert (entry.groups, entry.frames, entry.bytes) == (1, 1, 10)
