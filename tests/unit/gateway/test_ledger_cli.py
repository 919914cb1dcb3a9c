"""`moqsrt usage`: totals and session records from a ledger file, as tables or JSON; raw
records after a cursor; time parsing; clear errors for a missing ledger or a bad time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli_usage import parse_time
from gateway.ledger_db import IntervalRow, SessionRow, connect, write_batch


def make_ledger(path: Path) -> None:
    conn = connect(path)
    intervals = [
        IntervalRow(
            node=node,
            run="r1",
            interval=i,
            path="live/a",
            tier="pro",
            role=role,
            start_at=end - 1,
            end_at=end,
            counts={"groups": 1, "frames": frames, "bytes": frames * 100, "sessions": 1},
            totals={},
        )
        for i, (node, role, end, frames) in enumerate(
            [
                ("gw-1", "ingress", 1000.0, 30),
                ("gw-2", "ingress", 1000.0, 20),
                ("gw-1", "egress", 2000.0, 25),
            ]
        )
    ]
    sessions = [
        SessionRow(
            node="gw-1",
            run="r1",
            session="abc123",
            path="live/a",
            tier="pro",
            role="egress",
            start_at=1990.0,
            end_at=2000.0,
            groups=1,
            frames=25,
            bytes=2500,
            record={"session": "abc123", "duration_s": 10.0, "outcome": "eof"},
        )
    ]
    write_batch(conn, intervals, sessions)
    conn.close()


def test_totals_per_path_tier_role_sum_nodes_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.sqlite3"
    make_ledger(db)
    assert main(["usage", "--ledger", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    totals = {t["role"]: t for t in doc["totals"]}
    assert totals["ingress"]["frames"] == 50
    assert totals["ingress"]["bytes"] == 5000
    assert totals["egress"]["frames"] == 25
    (session,) = doc["sessions"]
    assert session["session"] == "abc123"
    assert session["record"]["outcome"] == "eof"


def test_a_time_range_and_filters_select_intervals_by_their_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.sqlite3"
    make_ledger(db)
    assert main(["usage", "--ledger", str(db), "--json", "--until", "1500"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["role"] for t in doc["totals"]] == ["ingress"]
    assert doc["sessions"] == []
    assert main(["usage", "--ledger", str(db), "--json", "--node", "gw-2"]) == 0
    (only,) = json.loads(capsys.readouterr().out)["totals"]
    assert only["frames"] == 20


def test_tables_show_totals_by_node_and_the_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.sqlite3"
    make_ledger(db)
    assert main(["usage", "--ledger", str(db), "--by-node"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("node"))
    assert header.split() == [
        "node",
        "path",
        "tier",
        "role",
        "groups",
        "frames",
        "bytes",
        "sessions",
        "viewers",
    ]
    rows = [line.split() for line in lines if line.startswith("gw-")]
    assert ["gw-2", "live/a", "pro", "ingress", "1", "20", "2000", "1", "0"] in rows
    assert "abc123" in out
    assert "1970-01-01 00:33:20" in out  # the session ended at epoch 2000 (UTC)


def test_raw_records_after_a_cursor_give_the_next_cursor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.sqlite3"
    make_ledger(db)
    assert main(["usage", "--ledger", str(db), "--after", "0", "--limit", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert [r["seq"] for r in first["records"]] == [1, 2]
    assert first["cursor"] == 2
    assert main(["usage", "--ledger", str(db), "--after", "2", "--json"]) == 0
    rest = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in rest["records"]] == ["interval", "session"]
    assert rest["cursor"] == 4


def test_a_missing_ledger_or_a_bad_time_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite3"
    assert main(["usage", "--ledger", str(missing)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not missing.exists()
    db = tmp_path / "l.sqlite3"
    make_ledger(db)
    assert main(["usage", "--ledger", str(db), "--since", "yesterday-ish"]) == 2
    assert "not a time" in capsys.readouterr().err


def test_times_are_epoch_iso_or_a_duration_ago() -> None:
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_time("2026-01-01T00:00:00+00:00") == 1_767_225_600.0
    with pytest.raises(ValueError, match="not a time"):
        parse_time("soon")
