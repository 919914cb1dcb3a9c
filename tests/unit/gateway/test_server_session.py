"""Session records: the flat `session.closed` shape and delivery to sinks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from gateway.session import LinkFigures, SessionRecord, emit_session


@dataclass
class FakeLinkStats:
    rtt_ms: float = 0.25
    pkt_sent: int = 10
    pkt_recv: int = 3000
    pkt_sent_loss: int = 1
    pkt_recv_loss: int = 2
    pkt_retrans: int = 4
    pkt_recv_drop: int = 5
    pkt_send_drop: int = 6
    bytes_sent: int = 1_000
    bytes_recv: int = 4_200_000
    bytes_retrans: int = 700


def make_record(**overrides: object) -> SessionRecord:
    fields: dict[str, object] = {
        "session": "abc",
        "node": "gw-1",
        "role": "ingress",
        "path": "live/cam1",
        "tier": "pro",
        "peer": "127.0.0.1:5000",
        "stream_id": "#!::r=live/cam1,m=publish",
        "user": "alice",
        "started_at": 1000.0,
        "ended_at": 1010.0,
        "duration_s": 10.0,
        "groups": 5,
        "frames": 600,
        "bytes": 4_000_000,
        "ts_bytes": 4_100_000,
        "srt": LinkFigures.from_stats(FakeLinkStats()),
    }
    fields.update(overrides)
    return SessionRecord(**fields)  # type: ignore[arg-type]


def test_link_figures_copy_every_libsrt_total() -> None:
    link = LinkFigures.from_stats(FakeLinkStats())
    assert link.bytes_recv == 4_200_000
    assert link.pkts_retrans == 4
    assert link.pkts_recv_loss == 2
    assert link.pkts_send_drop == 6
    assert link.rtt_ms == 0.25


def test_wire_bytes_follow_the_session_direction() -> None:
    assert make_record(role="ingress").wire_bytes == 4_200_000
    assert make_record(role="egress").wire_bytes == 1_000


def test_as_dict_is_flat_and_carries_the_contract_fields() -> None:
    out = make_record().as_dict()
    for key in (
        "session",
        "path",
        "tier",
        "role",
        "groups",
        "frames",
        "bytes",
        "ts_bytes",
        "duration_s",
        "node",
        "peer",
        "stream_id",
        "user",
        "started_at",
        "ended_at",
        "outcome",
        "srt_rtt_ms",
        "srt_bytes_recv",
        "srt_pkts_retrans",
        "wire_bytes",
    ):
        assert key in out, key
    assert all(isinstance(v, str | int | float) for v in out.values())
    assert out["srt_bytes_retrans"] == 700


async def test_emit_logs_session_closed_and_feeds_sync_and_async_sinks() -> None:
    got: list[str] = []

    def sync_sink(record: SessionRecord) -> None:
        got.append("sync:" + record.session)

    async def async_sink(record: SessionRecord) -> None:
        await asyncio.sleep(0)
        got.append("async:" + record.session)

    with capture_logs() as logs:
        await emit_session(make_record(), [sync_sink, async_sink])
    assert got == ["sync:abc", "async:abc"]
    closed = [entry for entry in logs if entry["event"] == "session.closed"]
    assert len(closed) == 1
    assert closed[0]["path"] == "live/cam1"
    assert closed[0]["ts_bytes"] == 4_100_000


async def test_a_failing_sink_is_logged_and_does_not_stop_the_others() -> None:
    got: list[SessionRecord] = []

    def broken(record: SessionRecord) -> None:
        raise RuntimeError("ledger down")

    with capture_logs() as logs:
        await emit_session(make_record(), [broken, got.append])
    assert len(got) == 1
    assert any(entry["event"] == "session.sink_failed" for entry in logs)


async def test_cancellation_during_an_async_sink_propagates() -> None:
    started = asyncio.Event()

    async def slow(record: SessionRecord) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(emit_session(make_record(), [slow]))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
