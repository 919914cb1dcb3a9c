"""StatsHandle: usage per (path, tier, role), lifecycle counters, pruning, thread safety."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from model import BroadcastProducer, CachePool, ManualClock, StatsEntry, StatsHandle, Usage


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


def test_an_entry_no_guard_holds_is_reported_once_more_then_pruned() -> None:
    stats = StatsHandle(node="n")
    guard = stats.broadcast("live/a").ingress()
    guard.meter.add_frame(5)
    assert [e.announced_closed for e in stats.snapshot()] == [0]
    guard.close()
    (final,) = stats.snapshot()
    assert (final.announced, final.announced_closed, final.bytes) == (1, 1, 5)
    assert stats.snapshot() == []
    again = stats.broadcast("live/a").ingress()  # seen again: starts from zero
    (entry,) = stats.snapshot()
    assert (entry.announced, entry.bytes) == (1, 0)
    again.close()


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
    assert stats.snapshot() == []
    assert any("stats guard" in r.getMessage() for r in caplog.records)


def test_a_snapshot_never_shows_more_closed_than_opened_while_guards_churn() -> None:
    stats = StatsHandle(node="n")
    keepers = [stats.broadcast("live/a").egress(), stats.broadcast("live/a").ingress()]
    stop = threading.Event()
    violations: list[StatsEntry] = []

    def watch() -> None:
        while not stop.is_set():
            for e in stats.snapshot():
                if (
                    e.announced_closed > e.announced
                    or e.subscriptions_closed > e.subscriptions
                    or e.sessions_closed > e.sessions
                ):
                    violations.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    rounds = 0
    deadline = time.monotonic() + 0.5
    try:
        while rounds < 7 or (rounds < 1000 and time.monotonic() < deadline):
            b = stats.broadcast("live/a")
            with b.ingress() as ingress, b.egress(viewer=str(rounds % 7)) as egress:
                ingress.meter.add_frame(1)
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
