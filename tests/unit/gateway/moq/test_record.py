"""The MoQ session record's ingress records (one per broadcast a connection published)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ledger import Ledger
from gateway.moq.ingest import ingest_into
from gateway.moq.record import BroadcastUsage, MoqSessionRecord, PublishUsage
from gateway.moq.transport import QuicFigures
from model import Origin, StatsHandle


def egress_record() -> MoqSessionRecord:
    return MoqSessionRecord(
        session="c0ffee",
        node="gw-1",
        path="/pub",
        tier="basic",
        peer="127.0.0.1:6000",
        transport="webtransport",
        version="moq-lite-03",
        started_at=100.0,
        ended_at=130.0,
        duration_s=30.0,
        groups=1,
        frames=5,
        bytes=500,
        subscriptions=3,
        skipped_groups=1,
        broadcasts=(BroadcastUsage(path="live/x", groups=1, frames=5, bytes=500),),
        outcome="error",
        error="code 7: gone",
        quic=QuicFigures(rtt_ms=1.5, bytes_sent=900, bytes_recv=70_000, datagrams_recv=60),
    )


PUBLISHES = (
    PublishUsage(
        path="live/a",
        tier="pro",
        started_at=101.0,
        ended_at=120.0,
        duration_s=19.0,
        groups=3,
        frames=90,
        bytes=40_000,
    ),
    PublishUsage(
        path="live/a",  # published again after it ended: a record of its own
        tier="pro",
        started_at=121.0,
        ended_at=129.0,
        duration_s=8.0,
        groups=1,
        frames=30,
        bytes=12_000,
    ),
)


def test_ingress_records_carry_the_publish_and_the_connection() -> None:
    egress = egress_record()
    first, second = egress.ingress_records(PUBLISHES)
    assert egress.ingress_records(()) == []
    assert [r.session for r in (first, second)] == ["c0ffee-in1", "c0ffee-in2"]
    for record, publish in zip((first, second), PUBLISHES, strict=True):
        assert record.role == "ingress"
        assert record.connection == "c0ffee"
        assert (record.path, record.tier) == (publish.path, publish.tier)
        assert (record.groups, record.frames, record.bytes) == (
            publish.groups,
            publish.frames,
            publish.bytes,
        )
        assert (record.started_at, record.ended_at, record.duration_s) == (
            publish.started_at,
            publish.ended_at,
            publish.duration_s,
        )
        assert (record.subscriptions, record.skipped_groups, record.broadcasts) == (0, 0, ())
        # Who and how: the connection's.
        assert (record.node, record.peer, record.transport, record.version) == (
            "gw-1",
            "127.0.0.1:6000",
            "webtransport",
            "moq-lite-03",
        )
        assert (record.outcome, record.error) == ("error", "code 7: gone")
        assert record.quic == egress.quic
        assert record.wire_bytes == 70_000  # what the publisher sent us
    assert egress.wire_bytes == 900
    data = first.as_dict()
    assert data["role"] == "ingress"
    assert data["connection"] == "c0ffee"
    assert data["quic_bytes_recv"] == 70_000
    assert data["broadcasts"] == ""
    assert egress.as_dict()["connection"] == ""


async def test_ledger_keeps_the_egress_and_every_ingress_record_apart(tmp_path: Path) -> None:
    egress = egress_record()
    async with await Ledger.open(tmp_path / "l.sqlite3") as ledger:
        for record in (egress, *egress.ingress_records(PUBLISHES)):
            ledger.record_session(record)
        await ledger.flush()
        got = {r.session: r for r in await ledger.read_since(0)}
    assert set(got) == {"c0ffee", "c0ffee-in1", "c0ffee-in2"}
    assert got["c0ffee"].role == "egress"
    assert got["c0ffee-in1"].role == "ingress"
    assert (got["c0ffee-in1"].path, got["c0ffee-in1"].tier) == ("live/a", "pro")
    assert got["c0ffee-in1"].counts["bytes"] == 40_000
    assert got["c0ffee-in2"].counts["frames"] == 30
    assert got["c0ffee-in2"].detail["connection"] == "c0ffee"


@pytest.mark.parametrize("metered", [True, False])
def test_ingest_into_reports_each_ended_publish(metered: bool) -> None:
    origin = Origin()
    stats = StatsHandle("n") if metered else None
    ended: list[PublishUsage] = []
    open_broadcast = ingest_into(origin, stats, tier="pro", session="s", on_ended=ended.append)
    assert open_broadcast("demo/cam") is not None
    ingest = open_broadcast("demo/cam2")
    assert ingest is not None
    assert open_broadcast("demo/cam2") is None  # refused: never reported
    track = ingest.broadcast.create_track("t")
    track.write_frame(b"abc")
    track.write_frame(b"defgh")
    track.finish()
    ingest.broadcast.finish()
    assert ended == []  # reported when it ended, not before
    ingest.release()
    (usage,) = ended
    assert (usage.path, usage.tier) == ("demo/cam2", "pro")
    assert (usage.groups, usage.frames, usage.bytes) == (2, 2, 8)  # one group per write_frame
    assert usage.ended_at >= usage.started_at
    assert usage.duration_s >= 0.0
