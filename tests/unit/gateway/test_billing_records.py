"""What a session record carries beside the bill (skipped, dropped, problems), how viewers are
named for the distinct-viewer count, and the bounded-rate problem log (issue 13)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from gateway.publish import ProblemReporter
from gateway.subscribe import viewer_id
from model import BroadcastProducer
from mux import TsImporter
from tests.unit.gateway.test_server_session import make_record


def test_as_dict_reports_skipped_and_dropped_beside_the_bill_and_problems_per_kind() -> None:
    record = make_record(
        role="egress",
        frames=100,
        skipped_frames=7,
        skipped_ts_bytes=9_212,
        dropped_groups=1,
        dropped_frames=3,
        problems=(("bad_pes", 1), ("continuity_gap", 4)),
    )
    flat = record.as_dict()
    assert (flat["frames"], flat["skipped_frames"], flat["dropped_frames"]) == (100, 7, 3)
    assert (flat["skipped_ts_bytes"], flat["dropped_groups"], flat["dropped_ts_bytes"]) == (
        9_212,
        1,
        0,
    )
    assert (flat["problems"], flat["problems_continuity_gap"], flat["problems_bad_pes"]) == (
        5,
        4,
        1,
    )
    assert record.problem_total == 5
    assert all(isinstance(v, str | int | float) for v in flat.values())


def test_a_record_without_problems_says_zero() -> None:
    flat = make_record().as_dict()
    assert flat["problems"] == 0
    assert not [k for k in flat if k.startswith("problems_")]


def test_viewers_are_named_by_user_else_by_peer_address() -> None:
    assert viewer_id("alice", ("10.0.0.1", 5000)) == viewer_id("alice", ("10.0.0.2", 6000))
    assert viewer_id("", ("10.0.0.1", 5000)) == "peer:10.0.0.1:5000"
    assert viewer_id("", ("::1", 5000)) == "peer:[::1]:5000"
    # a user whose name looks like an address is still a user
    assert viewer_id("10.0.0.1:5000", ("10.0.0.9", 1)) != viewer_id("", ("10.0.0.1", 5000))


FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "h264_aac.ts"


def damaged_ts(gaps: int, *, every: int = 20) -> bytes:
    """The start of the test fixture with `gaps` video continuation packets left out (one in
    every `every` packets of PID 0x100 after the first 100 packets): `gaps` continuity gaps."""
    data = FIXTURE.read_bytes()
    out = bytearray()
    left_out = 0
    for n, i in enumerate(range(0, len(data), 188)):
        packet = data[i : i + 188]
        video = ((packet[1] & 0x1F) << 8 | packet[2]) == 0x100
        continuation = video and not packet[1] & 0x40 and packet[3] & 0x10
        if continuation and n > 100 and n % every == 0 and left_out < gaps:
            left_out += 1
            continue
        out += packet
        if left_out == gaps and n % every == every - 1:
            break
    assert left_out == gaps
    return bytes(out)


async def test_problems_are_logged_at_most_max_lines_per_interval_and_summarized() -> None:
    broadcast = BroadcastProducer()
    importer = TsImporter(broadcast)
    reporter = ProblemReporter(importer, session="s1", path="live/x")
    with capture_logs() as logs:
        reporter.start()
        importer.feed(damaged_ts(3))
        found = len(importer.take_problems())  # taken here: the reporter never sees them
        importer.feed(damaged_ts(40))
        reporter.close()
        reporter.close()  # idempotent
    importer.abort(RuntimeError("test over"))
    lines = [e for e in logs if e["event"] == "srt.publish_problem"]
    summary = [e for e in logs if e["event"] == "srt.publish_problems_suppressed"]
    total = sum(importer.problem_counts.values())
    assert len(lines) == ProblemReporter.MAX_LINES
    assert len(summary) == 1
    assert found >= 3
    assert importer.problem_counts["continuity_gap"] >= 43
    assert len(lines) + summary[0]["suppressed"] == total - found
    assert sum(summary[0]["kinds"].values()) == summary[0]["suppressed"]
    assert {e["session"] for e in lines + summary} == {"s1"}


async def test_the_reporter_reports_on_its_timer_and_stops_when_closed() -> None:
    broadcast = BroadcastProducer()
    importer = TsImporter(broadcast)
    reporter = ProblemReporter(importer, session="s2", path="live/y")
    reporter.INTERVAL_S = 0.02  # type: ignore[misc]
    with capture_logs() as logs:
        reporter.start()
        importer.feed(damaged_ts(2))
        async with asyncio.timeout(2):
            while not logs:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        reporter.close()
        seen = len(logs)
        importer.feed(damaged_ts(2))
        await asyncio.sleep(0.1)
    importer.abort(RuntimeError("test over"))
    assert logs[0]["event"] == "srt.publish_problem"
    assert len(logs) == seen  # nothing after close
