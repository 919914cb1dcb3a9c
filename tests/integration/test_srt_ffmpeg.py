"""ffmpeg publishes over SRT, ffmpeg pulls it back: playable output and exact usage."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.conftest import (
    FIXTURE,
    Procs,
    decode_video,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    frames_in_last,
    poll_until,
    remux_size,
    run_gateway,
)
from tests.media import expected_counts

PUBLISH = "#!::r=live/t1,m=publish"
REQUEST = "#!::r=live/t1,m=request"


def fixture_totals() -> tuple[int, int]:
    """(frames, groups) the whole fixture must produce in the model, derived with PyAV:
    video frames = access units from the first keyframe, video groups = keyframes, audio
    frames = groups = AAC frames, plus the catalog track's one group of one frame."""
    counts = expected_counts(FIXTURE)
    frames = sum(c.frames for c in counts.values()) + 1
    groups = sum(c.groups for c in counts.values()) + 1
    return frames, groups


async def test_ffmpeg_publish_then_pull_plays_and_usage_matches_the_fixture(
    procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "pulled.ts"
    async with run_gateway() as gw:
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, PUBLISH))
        await gw.wait_live("live/t1", 10)
        await asyncio.sleep(2.6)  # join mid-stream, well after the first GOP
        viewer = procs.start("pull", ffmpeg_pull_argv(gw.port, REQUEST, out))
        assert await publisher.wait(30) == 0, publisher.stderr()
        assert await viewer.wait(15) == 0, viewer.stderr()
        records = await gw.wait_records(2, 10)
        snapshot = {(e.path, e.role): e for e in gw.stats.snapshot()}

    decoded = decode_video(out)
    assert decoded.first_is_keyframe
    assert decoded.errors == 0
    published_since_join = frames_in_last(decoded.span())
    assert published_since_join < 300  # the viewer really joined mid-stream
    assert decoded.frames >= 0.9 * published_since_join

    ingress = next(r for r in records if r.role == "ingress")
    egress = next(r for r in records if r.role == "egress")
    frames, groups = fixture_totals()
    assert (ingress.frames, ingress.groups) == (frames, groups)
    assert ingress.ts_bytes == remux_size()
    assert ingress.outcome == "eof"
    assert egress.outcome == "eof"
    # The meter and the stats handle agree, and the viewer read less than the whole broadcast.
    entry = snapshot[("live/t1", "ingress")]
    assert (entry.frames, entry.groups, entry.bytes) == (frames, groups, ingress.bytes)
    viewer_entry = snapshot[("live/t1", "egress")]
    assert (viewer_entry.frames, viewer_entry.bytes) == (egress.frames, egress.bytes)
    assert 0 < egress.frames < ingress.frames


async def test_session_closed_records_carry_identity_usage_and_link_figures(
    procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "pulled.ts"
    async with run_gateway() as gw:
        viewer = procs.start("pull", ffmpeg_pull_argv(gw.port, REQUEST + ",u=viewer1", out))
        await poll_until(lambda: gw.server.sessions == 1, 10)
        publisher = procs.start(
            "publish", ffmpeg_publish_argv(gw.port, PUBLISH + ",u=alice", realtime=False)
        )
        assert await publisher.wait(30) == 0, publisher.stderr()
        assert await viewer.wait(20) == 0, viewer.stderr()
        records = await gw.wait_records(2, 10)

    ingress = next(r for r in records if r.role == "ingress")
    egress = next(r for r in records if r.role == "egress")
    assert ingress.session != egress.session
    for record, user in ((ingress, "alice"), (egress, "viewer1")):
        assert record.node == "test-node"
        assert record.path == "live/t1"
        assert record.tier == "default"
        assert record.user == user
        assert record.peer.startswith("127.0.0.1:")
        assert record.stream_id.startswith("#!::r=live/t1")
        assert record.ended_at >= record.started_at
        assert record.duration_s > 0
        assert record.srt.pkts_sent + record.srt.pkts_recv > 0
        data = record.as_dict()
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
            "srt_rtt_ms",
            "srt_bytes_recv",
            "srt_bytes_sent",
        ):
            assert key in data
    assert ingress.ts_bytes == remux_size()
    # Wire bytes include SRT/UDP/IP headers (and any retransmission): never below TS bytes.
    assert ingress.wire_bytes >= ingress.ts_bytes
    assert ingress.srt.pkts_recv >= ingress.ts_bytes // 1316
    assert egress.wire_bytes >= egress.ts_bytes > 0
    assert egress.srt.pkts_sent >= egress.ts_bytes // 1316


async def test_two_viewers_attached_before_the_publisher_count_exactly_twice(
    procs: Procs, tmp_path: Path
) -> None:
    async with run_gateway() as gw:
        viewers = [
            procs.start(f"pull{i}", ffmpeg_pull_argv(gw.port, REQUEST, tmp_path / f"v{i}.ts"))
            for i in range(2)
        ]
        await poll_until(lambda: gw.server.sessions == 2, 10)
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, PUBLISH))
        assert await publisher.wait(30) == 0, publisher.stderr()
        for viewer in viewers:
            assert await viewer.wait(15) == 0, viewer.stderr()
        records = await gw.wait_records(3, 10)
        snapshot = {(e.path, e.role): e for e in gw.stats.snapshot()}

    ingress = next(r for r in records if r.role == "ingress")
    one, two = (r for r in records if r.role == "egress")
    assert (one.groups, one.frames, one.bytes) == (two.groups, two.frames, two.bytes)
    egress = snapshot[("live/t1", "egress")]
    assert (egress.groups, egress.frames, egress.bytes) == (
        2 * one.groups,
        2 * one.frames,
        2 * one.bytes,
    )
    assert egress.viewers == 2
    # Attached before the first byte, each viewer read (nearly) the whole broadcast.
    assert one.frames >= 0.95 * ingress.frames
    for i in range(2):
        decoded = decode_video(tmp_path / f"v{i}.ts")
        assert decoded.first_is_keyframe
        assert decoded.errors == 0
        assert decoded.frames >= 0.95 * 300
