"""The usage ledger: interval deltas, session records, idempotent keys, cursors, restarts,
failed writes, schema migration and bad files."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger import Ledger
from gateway.ledger_db import (
    LIFECYCLE,
    SCHEMA_VERSION,
    USAGE,
    IntervalRow,
    LedgerError,
    LedgerReader,
    SessionRow,
    connect,
    write_batch,
)
from model import StatsHandle


@dataclass(frozen=True)
class FakeRecord:
    """Any record with an `as_dict()` (as SRT and MoQ records have)."""

    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.data


def session(sid: str, path: str = "live/a", role: str = "ingress", frames: int = 10) -> FakeRecord:
    return FakeRecord(
        {
            "session": sid,
            "node": "gw-1",
            "path": path,
            "tier": "pro",
            "role": role,
            "groups": 1,
            "frames": frames,
            "bytes": frames * 100,
            "started_at": 1000.0,
            "ended_at": 1010.0,
            "transport": "quic",
        }
    )


def totals(path: Path) -> dict[tuple[str, str, str], dict[str, int]]:
    with LedgerReader(path) as reader:
        return {(t.path, t.tier, t.role): dict(t.counts) for t in reader.totals()}


async def test_interval_records_are_deltas_that_sum_to_the_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite3"
    stats = StatsHandle("gw-1")
    async with await Ledger.open(db, stats) as ledger:
        guard = stats.broadcast("live/a", tier="pro").ingress()
        guard.meter.groups += 1
        guard.meter.frames += 3
        guard.meter.bytes += 300
        assert await ledger.flush()
        guard.meter.frames += 2
        guard.meter.bytes += 50
        assert await ledger.flush()
        assert await ledger.flush()  # nothing changed: nothing written
        records = await ledger.read_since(0)
        guard.close()
    assert [(r.interval, r.counts["frames"], r.counts["bytes"]) for r in records] == [
        (0, 3, 300),
        (1, 2, 50),
    ]
    assert records[0].counts["announced"] == 1
    assert records[1].counts["announced"] == 0
    assert records[1].detail["frames"] == 5  # the cumulative value travels along
    got = totals(db)[("live/a", "pro", "ingress")]
    (entry,) = stats.snapshot()
    assert (got["frames"], got["bytes"], got["groups"]) == (entry.frames, entry.bytes, 1)
    assert got["sessions_closed"] == 1  # the close was flushed by aclose()


async def test_a_restart_counts_from_zero_under_a_new_run_without_double_counting(
    tmp_path: Path,
) -> None:
    db = tmp_path / "l.sqlite3"
    runs = []
    for frames in (7, 5):
        stats = StatsHandle("gw-1")  # a new process: counters restart at zero
        async with await Ledger.open(db, stats) as ledger:
            runs.append(ledger.run_id)
            with stats.broadcast("live/a").ingress() as guard:
                guard.meter.frames += frames
            await ledger.flush()
    assert runs[0] != runs[1]
    assert totals(db)[("live/a", "default", "ingress")]["frames"] == 12


async def test_session_records_are_written_once_and_read_by_cursor(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite3"
    async with await Ledger.open(db, node="gw-9") as ledger:
        woken: list[int] = []
        ledger.on_write(lambda: woken.append(1))
        ledger.record_session(session("s1"))
        ledger.record_session(session("s1"))  # the same record twice: harmless
        ledger.record_session(session("s2", role="egress"))
        await ledger.flush()
        first = await ledger.read_since(0, limit=1)
        rest = await ledger.read_since(first[-1].seq)
        assert await ledger.read_since(rest[-1].seq) == []
    assert woken == [1]
    assert [r.session for r in first + rest] == ["s1", "s2"]
    assert rest[0].kind == "session"
    assert rest[0].detail["transport"] == "quic"  # the whole record is kept
    assert rest[0].as_dict()["record"]["session"] == "s2"
    with LedgerReader(db) as reader:
        (s1,) = reader.sessions(role="ingress")
    assert (s1.node, s1.counts["frames"], s1.end_at) == ("gw-1", 10, 1010.0)


async def test_a_record_without_its_identity_is_refused_with_the_missing_field(
    tmp_path: Path,
) -> None:
    async with await Ledger.open(tmp_path / "l.sqlite3") as ledger:
        bad = dict(session("s1").data)
        del bad["tier"], bad["frames"]
        with pytest.raises(ValueError, match="tier, frames"):
            ledger.record_session(FakeRecord(bad))


def test_writing_a_batch_twice_is_harmless(tmp_path: Path) -> None:
    conn = connect(tmp_path / "l.sqlite3")
    row = IntervalRow(
        node="n",
        run="r",
        interval=0,
        path="p",
        tier="t",
        role="ingress",
        start_at=0.0,
        end_at=1.0,
        counts={"frames": 4},
        totals={"frames": 4},
    )
    srow = SessionRow(
        node="n",
        run="r",
        session="s",
        path="p",
        tier="t",
        role="ingress",
        start_at=0.0,
        end_at=1.0,
        groups=1,
        frames=4,
        bytes=9,
        record={},
    )
    assert write_batch(conn, [row], [srow]) == 2
    assert write_batch(conn, [row], [srow]) == 0
    assert conn.execute("SELECT COUNT(*), SUM(frames) FROM records").fetchone() == (2, 8)
    conn.close()


def test_an_interval_record_keeps_its_totals_whole_in_its_detail(tmp_path: Path) -> None:
    # Every counter, large values kept exact; a counter the row leaves out is written as 0.
    full = {name: 10**15 + i for i, name in enumerate((*USAGE, *LIFECYCLE))}
    cases: list[dict[str, Any]] = [full, {"frames": 4}]
    rows = [
        IntervalRow(
            node="n",
            run="r",
            interval=i,
            path="p",
            tier="t",
            role="egress",
            start_at=0.0,
            end_at=1.0,
            counts={"frames": 1},
            totals=totals,
        )
        for i, totals in enumerate(cases)
    ]
    conn = connect(tmp_path / "l.sqlite3")
    write_batch(conn, rows, [])
    conn.close()
    with LedgerReader(tmp_path / "l.sqlite3") as reader:
        details = [dict(r.detail) for r in reader.read_since(0)]
    assert details == [full, {**dict.fromkeys(full, 0), "frames": 4}]


async def test_a_failed_write_keeps_everything_for_the_next_flush(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite3"
    stats = StatsHandle("gw-1")
    async with await Ledger.open(db, stats) as ledger:
        guard = stats.broadcast("live/a").ingress()
        guard.meter.frames += 3
        ledger.record_session(session("s1"))
        # Another connection holds the write lock: the flush cannot commit.
        blocker = sqlite3.connect(db, timeout=0, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        await ledger._call(lambda conn: conn.execute("PRAGMA busy_timeout = 50"))
        assert not await ledger.flush()
        assert ledger.failures == 1
        guard.meter.frames += 4
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await ledger.flush()
        records = await ledger.read_since(0)
        guard.close()
    assert [(r.kind, r.interval, r.counts["frames"]) for r in records] == [
        ("interval", 0, 7),
        ("session", None, 10),
    ]


async def test_pending_session_records_are_bounded(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.sqlite3", max_pending_sessions=3) as ledger:
        for i in range(5):
            ledger.record_session(session(f"s{i}"))
        await ledger.flush()
        got = [r.session for r in await ledger.read_since(0)]
    assert got == ["s2", "s3", "s4"]


def test_an_older_schema_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite3"
    sqlite3.connect(old).close()  # an empty database: version 0
    conn = connect(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    newer = tmp_path / "newer.sqlite3"
    raw = sqlite3.connect(newer)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(LedgerError, match="newer") as info:
        connect(newer)
    assert info.value.path == str(newer)


def test_a_file_that_is_not_a_ledger_is_a_clear_error_and_stays_untouched(
    tmp_path: Path,
) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not a usable SQLite ledger"):
        connect(junk)
    assert junk.read_bytes() == b"this is not sqlite" * 100
    with pytest.raises(LedgerError, match="no such file"):
        LedgerReader(tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()


async def test_totals_filter_by_time_range_and_split_by_node(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite3"
    conn = connect(db)
    rows = [
        IntervalRow(
            node=node,
            run="r",
            interval=i,
            path="live/a",
            tier="pro",
            role="egress",
            start_at=end - 1,
            end_at=end,
            counts={"frames": frames, "bytes": frames * 10},
            totals={},
        )
        for i, (node, end, frames) in enumerate(
            [("a", 100.0, 1), ("b", 100.0, 2), ("a", 200.0, 4), ("b", 300.0, 8)]
        )
    ]
    write_batch(conn, rows, [])
    conn.close()
    with LedgerReader(db) as reader:
        assert reader.totals()[0].counts["frames"] == 15
        assert reader.totals(since=100.0, until=200.0)[0].counts["frames"] == 4
        split = {t.node: t.counts["frames"] for t in reader.totals(by_node=True)}
        assert split == {"a": 5, "b": 10}
        assert reader.totals(node="b")[0].counts["bytes"] == 100
        assert reader.totals(role="ingress") == []
        assert reader.integrity_check() == "ok"


async def test_srt_and_moq_session_records_are_both_accepted_whole(tmp_path: Path) -> None:
    from gateway.moq.record import BroadcastUsage, MoqSessionRecord
    from gateway.session import SessionRecord

    srt = SessionRecord(
        session="srt1",
        node="gw-1",
        role="ingress",
        path="live/a",
        tier="pro",
        peer="127.0.0.1:5000",
        stream_id="#!::r=live/a",
        user="alice",
        started_at=100.0,
        ended_at=110.0,
        duration_s=10.0,
        groups=2,
        frames=30,
        bytes=3000,
        ts_bytes=3760,
    )
    moq = MoqSessionRecord(
        session="moq1",
        node="gw-1",
        path="",
        tier="pro",
        peer="127.0.0.1:6000",
        transport="quic",
        version="moq-lite-03",
        started_at=105.0,
        ended_at=111.0,
        duration_s=6.0,
        groups=1,
        frames=12,
        bytes=1200,
        subscriptions=2,
        broadcasts=(BroadcastUsage(path="live/a", groups=1, frames=12, bytes=1200),),
    )
    async with await Ledger.open(tmp_path / "l.sqlite3") as ledger:
        ledger.record_session(srt)
        ledger.record_session(moq)
        await ledger.flush()
        got = {r.session: r for r in await ledger.read_since(0)}
    assert (got["srt1"].role, got["srt1"].counts["bytes"], got["srt1"].end_at) == (
        "ingress",
        3000,
        110.0,
    )
    assert got["srt1"].detail["ts_bytes"] == 3760
    assert got["moq1"].role == "egress"
    assert got["moq1"].counts["frames"] == 12
    assert got["moq1"].detail["broadcasts"] == "live/a=1/12/1200"
    assert got["moq1"].detail["transport"] == "quic"


async def test_random_counting_with_failed_writes_and_restarts_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "l.sqlite3"
    rng = random.Random(11)
    expected: dict[tuple[str, str], list[int]] = {}  # (path, role) -> [groups, frames, bytes]
    for _run in range(3):  # three processes, one after the other
        stats = StatsHandle("gw-1")
        async with await Ledger.open(db, stats) as ledger:
            await ledger._call(lambda conn: conn.execute("PRAGMA busy_timeout = 20"))
            guards = {
                (path, role): getattr(stats.broadcast(path), role)()
                for path in ("live/a", "live/b")
                for role in ("ingress", "egress")
            }
            for _step in range(30):
                key = rng.choice(sorted(guards))
                meter = guards[key].meter
                added = (rng.randint(0, 2), rng.randint(0, 20), rng.randint(0, 5000))
                meter.groups += added[0]
                meter.frames += added[1]
                meter.bytes += added[2]
                total = expected.setdefault(key, [0, 0, 0])
                for i, value in enumerate(added):
                    total[i] += value
                if rng.random() < 0.3:
                    blocker = sqlite3.connect(db, timeout=0, isolation_level=None)
                    blocker.execute("BEGIN IMMEDIATE")
                    assert not await ledger.flush()
                    blocker.execute("ROLLBACK")
                    blocker.close()
                elif rng.random() < 0.5:
                    assert await ledger.flush()
            for guard in guards.values():
                guard.close()
    with LedgerReader(db) as reader:
        got = {
            (t.path, t.role): [t.counts["groups"], t.counts["frames"], t.counts["bytes"]]
            for t in reader.totals()
        }
        sessions = {(t.path, t.role): t.counts["sessions_closed"] for t in reader.totals()}
    assert got == expected
    assert set(sessions.values()) == {3}
