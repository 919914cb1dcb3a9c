"""Bills that match delivery, end to end: a slow viewer is billed no more than it received,
viewers are counted as people, a refused publish is not announced, and a damaged stream's
problems reach the session record (issue 13)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import structlog.testing

from gateway import Publish, Server, ServerConfig, SessionRecord
from gateway.publish import ProblemReporter
from gateway.srt import SrtOptions, SrtReactor
from model import BroadcastProducer, Origin, StatsHandle
from tests.integration.conftest import (
    FIXTURE,
    HOST,
    Gateway,
    Procs,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    poll_until,
)
from tests.integration.test_srt_embedding import send_file

TS = 188


@contextlib.asynccontextmanager
async def gateway(**settings: Any) -> AsyncIterator[Gateway]:
    """Serve SRT on a free 127.0.0.1 port with `settings` (ServerConfig fields)."""
    origin = Origin()
    stats = StatsHandle("test-node")
    records: list[SessionRecord] = []
    config = ServerConfig(
        listen=(HOST, 0), request_timeout_s=8.0, sinks=(records.append,), **settings
    )
    server = await Server.bind(config=config, origin=origin)
    server.with_stats(stats)
    task = asyncio.create_task(server.serve(origin))
    try:
        yield Gateway(server=server, origin=origin, stats=stats, records=records)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(15):
                await task
        await server.aclose()


def media_packets(path: Path) -> int:
    """Video and audio access units PyAV demuxes from a TS file (what a player gets)."""
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size and packet.stream.type in ("video", "audio"):
                count += 1
    return count


async def test_a_slow_viewer_is_billed_no_more_than_it_received(
    procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "slow.ts"
    # The gateway may send this viewer 40 kB/s of a ~75 kB/s stream: its send buffer grows,
    # libsrt drops what waited past its too-late threshold, and past 60 kB the viewer is
    # skipped to the next keyframe.
    async with gateway(maxbw_bytes_s=40_000, send_buffer_limit_bytes=60_000) as gw:
        with out.open("wb") as sink:
            viewer = procs.start(
                "slt-pull",
                [
                    "srt-live-transmit",
                    "-q",
                    "-a:no",
                    f"srt://{HOST}:{gw.port}?streamid=#!::r=live/slow,m=request",
                    "file://con",
                ],
                stdout=sink,
            )
        await poll_until(lambda: gw.server.sessions == 1, 10)
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, "#!::r=live/slow"))
        assert await publisher.wait(30) == 0, publisher.stderr()
        assert await viewer.wait(20) == 0, viewer.stderr()
        records = await gw.wait_records(2, 10)

    ingress = next(r for r in records if r.role == "ingress")
    egress = next(r for r in records if r.role == "egress")
    received = out.stat().st_size
    frames = media_packets(out)
    # The bill never exceeds what reached the client: TS bytes it wrote, and frames PyAV finds
    # in them (plus the one catalog frame, which is model payload but no TS frame).
    assert 0 < egress.ts_bytes <= received
    assert 0 < egress.frames <= frames + 1
    # The link really was too slow, and what it lost is reported beside the bill.
    assert egress.skipped_frames + egress.dropped_frames > 0
    assert egress.skipped_ts_bytes + egress.dropped_ts_bytes > 0
    assert egress.frames < 0.9 * ingress.frames
    # Every packet libsrt dropped as too late belongs to a unit that was not billed.
    assert egress.skipped_ts_bytes + egress.dropped_ts_bytes >= egress.srt.pkts_send_drop * TS
    # Nothing vanishes from the books: billed + skipped + dropped is what the viewer's export
    # read, (nearly) the whole broadcast since it was attached from the start.
    accounted = egress.frames + egress.skipped_frames + egress.dropped_frames
    assert 0.95 * ingress.frames <= accounted <= ingress.frames
    assert received <= egress.ts_bytes + egress.skipped_ts_bytes + egress.dropped_ts_bytes
    for key in ("skipped_frames", "skipped_ts_bytes", "dropped_frames", "dropped_bytes"):
        assert key in egress.as_dict()
    snapshot = {(e.path, e.role): e for e in gw.stats.snapshot()}
    assert snapshot[("live/slow", "egress")].frames == egress.frames


async def test_a_viewer_whose_receiver_drops_late_packets_is_billed_no_more_than_it_got(
    procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "late.ts"
    # An ffmpeg reader whose UDP receive buffer (SRTO_UDP_RCVBUF) holds two or three packets,
    # frozen (SIGSTOP) for longer than the SRT latency a few times: the kernel drops what
    # arrives meanwhile, the bursts of retransmissions the reader then asks for overflow its
    # buffer again, and its libsrt gives up on packets whose play time passed (TLPKTDROP) and
    # acknowledges past them. The gateway's libsrt frees them as delivered and counts no drop
    # (its own threshold is 1 s): only the loss reports tell.
    async with gateway() as gw:
        reader = procs.start(
            "late-pull",
            ffmpeg_pull_argv(
                gw.port,
                "#!::r=live/late,m=request",
                out,
                loglevel="verbose",  # for the input's "Statistics: N bytes read" at the end
                input_options=["-recv_buffer_size", "3000"],
            ),
        )
        await poll_until(lambda: gw.server.sessions == 1, 10)
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, "#!::r=live/late"))
        for _ in range(4):
            await asyncio.sleep(1.0)
            os.killpg(reader.pid, signal.SIGSTOP)  # `timeout` and its ffmpeg
            try:
                await asyncio.sleep(0.5)  # > the 120 ms latency, < libsrt's 1 s sender drop
            finally:
                os.killpg(reader.pid, signal.SIGCONT)
        assert await publisher.wait(30) == 0, publisher.stderr()
        assert await reader.wait(20) == 0, reader.stderr()
        records = await gw.wait_records(2, 10)

    ingress = next(r for r in records if r.role == "ingress")
    egress = next(r for r in records if r.role == "egress")
    (received,) = [int(n) for n in re.findall(r"Statistics: (\d+) bytes read", reader.stderr())]
    frames = media_packets(out)
    # The receiver really gave up on packets the gateway's libsrt saw acknowledged: it read
    # less than libsrt took, which dropped none itself but was told of losses.
    sent = egress.ts_bytes + egress.skipped_ts_bytes + egress.dropped_ts_bytes
    assert egress.skipped_ts_bytes == 0  # nothing refused or skipped: every unit went whole
    assert received < sent
    assert egress.srt.pkts_send_drop == 0
    assert egress.srt.pkts_send_loss > 0
    # The bill never exceeds what reached the client: the TS bytes its libsrt delivered to it
    # (what ffmpeg read) and the frames PyAV finds in what it wrote (+1: the catalog frame).
    assert 0 < egress.ts_bytes <= received
    assert 0 < egress.frames <= frames + 1
    # What was not billed is reported dropped, and nothing vanishes from the books.
    assert egress.dropped_ts_bytes >= sent - received
    accounted = egress.frames + egress.skipped_frames + egress.dropped_frames
    assert 0.95 * ingress.frames <= accounted <= ingress.frames


async def test_viewers_are_counted_once_per_user_or_anonymous_peer(
    procs: Procs, tmp_path: Path
) -> None:
    ids = ["#!::r=live/v,m=request,u=alice"] * 2 + ["#!::r=live/v,m=request"]
    async with gateway() as gw:
        viewers = [
            procs.start(f"pull{i}", ffmpeg_pull_argv(gw.port, sid, tmp_path / f"v{i}.ts"))
            for i, sid in enumerate(ids)
        ]
        await poll_until(lambda: gw.server.sessions == 3, 10)
        publisher = procs.start(
            "publish", ffmpeg_publish_argv(gw.port, "#!::r=live/v", extra=["-t", "3"])
        )
        assert await publisher.wait(30) == 0, publisher.stderr()
        for viewer in viewers:
            assert await viewer.wait(15) == 0, viewer.stderr()
        records = await gw.wait_records(4, 10)
        snapshot = {(e.path, e.role): e for e in gw.stats.snapshot()}

    egress = snapshot[("live/v", "egress")]
    assert egress.subscriptions == egress.sessions == 3
    assert egress.viewers == 2  # alice (twice) and one anonymous caller
    assert sorted(r.user for r in records if r.role == "egress") == ["", "alice", "alice"]


async def test_a_publish_refused_after_the_handshake_is_not_counted_as_announced(
    procs: Procs,
) -> None:
    origin = Origin()
    busy = BroadcastProducer()
    origin.publish("live/busy", busy)  # an in-process publisher holds the path
    stats = StatsHandle("test-node")
    records: list[SessionRecord] = []
    config = ServerConfig(listen=(HOST, 0), sinks=(records.append,))
    server = await Server.bind(config=config)  # no origin: nothing is refused at handshake
    server.with_stats(stats)

    async def embedder() -> None:
        async for request in server:
            assert isinstance(request, Publish)
            await request.accept(origin)

    task = asyncio.create_task(embedder())
    try:
        refused = procs.start(
            "refused", ffmpeg_publish_argv(server.port, "#!::r=live/busy", extra=["-t", "2"])
        )
        await poll_until(lambda: len(records) == 1, 15)
        assert records[0].outcome == "error"
        assert "already published" in records[0].error
        assert [e for e in stats.snapshot() if e.role == "ingress"] == []
        await refused.wait(15)
        # Once the path is free, the same caller's publish counts, once.
        busy.finish()
        accepted = procs.start(
            "accepted", ffmpeg_publish_argv(server.port, "#!::r=live/busy", extra=["-t", "2"])
        )
        assert await accepted.wait(30) == 0, accepted.stderr()
        await poll_until(lambda: len(records) == 2, 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.aclose()
    assert records[1].outcome == "eof"
    assert records[1].frames > 0
    (entry,) = [e for e in stats.snapshot() if e.role == "ingress"]
    assert (entry.announced, entry.announced_closed) == (1, 1)


def damage(data: bytes, *, pid: int, every: int) -> tuple[bytes, int]:
    """Drop one `pid` continuation packet (payload, no PES start) in every `every` packets,
    none within `every` packets of another: each drop is one continuity gap. Returns the
    damaged stream and the number of packets dropped."""
    out = bytearray()
    dropped = 0
    last = -every
    for i in range(0, len(data) - TS + 1, TS):
        packet = data[i : i + TS]
        n = i // TS
        continuation = (
            ((packet[1] & 0x1F) << 8 | packet[2]) == pid
            and not packet[1] & 0x40
            and packet[3] & 0x10
        )
        if continuation and n > 400 and n - last >= every:
            last = n
            dropped += 1
            continue
        out += packet
    return bytes(out), dropped


async def test_a_damaged_live_stream_has_its_problems_counted_and_logged_at_a_bounded_rate(
    tmp_path: Path,
) -> None:
    data, dropped = damage(FIXTURE.read_bytes(), pid=0x100, every=60)
    assert dropped > 5 * ProblemReporter.MAX_LINES
    async with gateway() as gw, SrtReactor() as client:
        with structlog.testing.capture_logs() as logs:
            async with asyncio.timeout(10):
                publisher = await client.connect(
                    HOST, gw.port, SrtOptions(stream_id="#!::r=live/bad,m=publish", linger_s=2)
                )
            await send_file(publisher, data, rate_bytes_s=len(data) / 2.5)
            publisher.close()
            (record,) = await gw.wait_records(1, 15)

    problems = dict(record.problems)
    assert problems.get("continuity_gap", 0) >= dropped  # each dropped packet, at least
    assert record.problem_total >= dropped
    assert record.as_dict()["problems_continuity_gap"] == problems["continuity_gap"]
    assert record.frames > 0  # problems never end a broadcast
    lines = [e for e in logs if e["event"] == "srt.publish_problem"]
    summaries = [e for e in logs if e["event"] == "srt.publish_problems_suppressed"]
    # At most MAX_LINES lines per interval of the session (and one last report at its end).
    intervals = int(record.duration_s / ProblemReporter.INTERVAL_S) + 2
    assert 0 < len(lines) <= ProblemReporter.MAX_LINES * intervals
    assert len(lines) < dropped
    assert summaries
    assert sum(e["suppressed"] for e in summaries) + len(lines) <= record.problem_total
    assert all(e["session"] == record.session for e in lines + summaries)
