"""The ledger's own thread: periodic flushes without the event loop, listeners on the loop,
on-demand flushes racing periodic ones, failed writes retried, and the thread's lifetime."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway import ledger_db
from gateway.ledger import THREAD_NAME, Ledger
from gateway.ledger_db import LedgerError, LedgerReader
from model import StatsHandle
from tests.unit.gateway.test_ledger import session


def interval_sums(db: Path) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(path, role) -> summed (groups, frames, bytes) of the interval records, read directly."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT path, role, SUM(groups), SUM(frames), SUM(bytes) FROM records"
            " WHERE kind = 'interval' GROUP BY path, role"
        ).fetchall()
    finally:
        conn.close()
    return {(p, r): (g, f, b) for p, r, g, f, b in rows}


def interval_numbers(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT DISTINCT interval FROM records WHERE kind = 'interval' ORDER BY interval"
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


async def test_periodic_flushes_commit_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite3"
    stats = StatsHandle("gw-1")
    async with await Ledger.open(db, stats, interval_s=0.05) as ledger:
        guard = stats.broadcast("live/a").ingress()
        ledger.start()
        ledger.record_session(session("s1"))
        # The loop thread sleeps (no task, callback or I/O can run); the counters still move.
        deadline = time.monotonic() + 10
        seen: set[int] = set()
        while time.monotonic() < deadline:
            guard.meter.frames += 1
            time.sleep(0.02)  # noqa: ASYNC251  (blocking the loop is the point)
            with LedgerReader(db) as reader:
                records = reader.read_since(0)
            seen.update(r.interval for r in records if r.interval is not None)
            if len(seen) >= 3 and any(r.kind == "session" for r in records):
                break
        assert len(seen) >= 3, seen  # three intervals committed without the loop
        assert ledger.flushes >= 3
        guard.close()
    (entry,) = stats.snapshot()
    assert interval_sums(db)[("live/a", "ingress")][1] == entry.frames


async def test_listeners_run_on_the_loop_thread_only_after_session_writes(tmp_path: Path) -> None:
    stats = StatsHandle("gw-1")
    async with await Ledger.open(tmp_path / "l.sqlite3", stats, interval_s=0.02) as ledger:
        calls: list[int] = []
        woken = asyncio.Event()

        def listener() -> None:
            calls.append(threading.get_ident())
            woken.set()

        ledger.on_write(listener)
        ledger.start()
        guard = stats.broadcast("live/a").egress("v1")
        flushes = ledger.flushes
        while ledger.flushes < flushes + 3:  # interval records only: nobody is woken
            guard.meter.bytes += 10
            await asyncio.sleep(0.02)
        assert calls == []
        ledger.record_session(session("s1"))
        async with asyncio.timeout(10):
            await woken.wait()
        guard.close()
    assert calls == [threading.get_ident()]


async def test_on_demand_flushes_racing_periodic_ones_write_each_delta_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "l.sqlite3"
    stats = StatsHandle("gw-1")
    ledger = await Ledger.open(db, stats, interval_s=0.001)
    guards = {
        (path, role): getattr(stats.broadcast(path), role)()
        for path in ("live/a", "live/b")
        for role in ("ingress", "egress")
    }
    expected: Counter[tuple[str, str]] = Counter()
    flushing = asyncio.create_task(ledger.run())
    try:
        for step in range(300):
            for key, guard in guards.items():
                guard.meter.frames += step % 3
                guard.meter.bytes += step
                expected[key] += step % 3
            if step % 2:
                assert list(await asyncio.gather(ledger.flush(), ledger.flush())) == [True, True]
            else:
                await asyncio.sleep(0.001)
        assert ledger.flushes > 20
    finally:
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)
        for guard in guards.values():
            guard.close()
        await ledger.aclose()
    sums = interval_sums(db)
    assert {key: sums[key][1] for key in guards} == dict(expected)
    assert {key: sums[key][2] for key in guards} == {key: 300 * 299 // 2 for key in guards}
    numbers = interval_numbers(db)
    assert numbers == list(range(len(numbers)))  # every interval number once, no gap


async def test_failed_periodic_writes_retry_under_the_same_interval_and_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "l.sqlite3"
    stats = StatsHandle("gw-1")
    failing = threading.Event()
    failing.set()
    write_rows = ledger_db.write_rows

    def flaky(conn: sqlite3.Connection, rows: Any) -> int:
        if failing.is_set():
            raise sqlite3.OperationalError("disk I/O error")
        return write_rows(conn, rows)

    monkeypatch.setattr(ledger_db, "write_rows", flaky)
    woken = asyncio.Event()
    async with await Ledger.open(db, stats, interval_s=0.01) as ledger:
        ledger.on_write(woken.set)
        guard = stats.broadcast("live/a").ingress()
        ledger.record_session(session("s1"))
        ledger.start()
        frames = 0
        async with asyncio.timeout(10):
            while ledger.failures < 5:
                guard.meter.frames += 2
                frames += 2
                await asyncio.sleep(0.005)
        assert ledger.flushes == 0
        assert not woken.is_set()
        failing.clear()
        async with asyncio.timeout(10):
            await woken.wait()
        records = await ledger.read_since(0)
        guard.close()
    assert [r.session for r in records if r.kind == "session"] == ["s1"]
    intervals = [r for r in records if r.kind == "interval"]
    # Everything counted while the writes failed went into the first interval, number 0.
    assert intervals[0].interval == 0
    assert intervals[0].counts["frames"] == frames
    assert interval_sums(db)[("live/a", "ingress")][1] == frames


async def test_a_closed_ledger_refuses_calls_and_its_thread_is_gone(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "l.sqlite3", interval_s=0.01)
    ledger.start()
    (thread,) = [t for t in threading.enumerate() if t.name == THREAD_NAME]
    ledger.record_session(session("s1"))
    await ledger.aclose()
    await ledger.aclose()  # idempotent
    assert not thread.is_alive()
    assert not await ledger.flush()
    with pytest.raises(LedgerError, match="closed"):
        await ledger.read_since(0)
    ledger.start()  # nothing to start: no error
    with LedgerReader(tmp_path / "l.sqlite3") as reader:
        assert [r.session for r in reader.read_since(0)] == ["s1"]


async def test_a_file_that_cannot_be_opened_is_a_ledger_error_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not sqlite" * 100)
    before = threading.active_count()
    with pytest.raises(LedgerError, match="not a usable"):
        await Ledger.open(junk)
    for _ in range(100):
        if threading.active_count() == before:
            break
        await asyncio.sleep(0.01)
    assert threading.active_count() == before


async def test_periodic_flushes_keep_their_schedule_whatever_a_flush_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each write takes 60 % of the interval: sleeping an interval after each flush would make
    # ~0.62 flushes per interval, a monotonic schedule makes one.
    interval, work = 0.05, 0.03
    write_rows = ledger_db.write_rows
    writes: list[float] = []

    def slow(conn: sqlite3.Connection, rows: Any) -> int:
        writes.append(time.monotonic())
        time.sleep(work)
        return write_rows(conn, rows)

    monkeypatch.setattr(ledger_db, "write_rows", slow)
    stats = StatsHandle("gw-1")
    async with await Ledger.open(tmp_path / "l.sqlite3", stats, interval_s=interval) as ledger:
        guard = stats.broadcast("live/a").ingress()
        ledger.start()
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            guard.meter.frames += 1
            await asyncio.sleep(0.005)
        ledger.stop()
        guard.close()
    assert len(writes) > 12
    assert (writes[12] - writes[0]) / 12 == pytest.approx(interval, rel=0.15), writes
