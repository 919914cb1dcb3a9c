"""A slow MoQ subscriber (its link passes a fifth of the stream's rate)
beside a normal one: the normal one and the publisher are unaffected, the slow one skips ahead,
and what the server holds for it stays under its cap."""

from __future__ import annotations

import asyncio

import moq
import pytest

from tests.integration.conftest import FIXTURE, Procs, ffmpeg_publish_argv, run_gateway
from tests.integration.moq_helpers import (
    HOST,
    ThrottledRelay,
    collect_media,
    fixture_packets,
    gops,
    run_moq,
)
from tests.media import expected_counts

PATH = "live/slow"
CAP = 128 * 1024


# Measures what the server holds and the pace of the others: never beside another CPU-heavy
# test under xdist.
@pytest.mark.xdist_group("cpu_heavy")
async def test_a_slow_subscriber_skips_ahead_without_holding_memory_or_the_others(
    procs: Procs,
) -> None:
    expected = expected_counts(FIXTURE)
    video_pid = next(int(k, 16) for k, c in expected.items() if c.kind == "video")
    video_fixture = gops(fixture_packets(FIXTURE, video_pid))
    # What may go over the cap: the frames already in the newest group when a skipped-ahead
    # subscription resumes (read and handed over together), at most a whole GOP.
    largest_gop = max(sum(len(p.data) for p in gop) for gop in video_fixture)
    bound = CAP + largest_gop + 4096
    total_frames = sum(c.frames for c in expected.values())

    async with run_gateway() as gw, run_moq(gw.origin, gw.stats, backlog_cap_bytes=CAP) as mq:
        relay = ThrottledRelay(mq.port, rate_bytes_s=12_000)
        relay_port = await relay.start()
        publisher = procs.start(
            "ffmpeg-pub", ffmpeg_publish_argv(gw.port, f"#!::r={PATH},m=publish")
        )
        await gw.wait_live(PATH, 10)
        peak_backlog = 0
        try:
            slow = moq.Client(
                f"moqt://{HOST}:{relay_port}",
                tls_fingerprints=[mq.certificate.fingerprint],
                reconnect=False,
                websocket_enabled=False,
            )
            async with asyncio.timeout(40), slow, mq.client("quic") as normal:
                held = []
                for client in (slow, normal):
                    announced = client.announced()
                    async for update in announced:
                        if update.active and update.prefix == PATH:
                            break
                    announced.cancel()
                slow_broadcast = await slow.request_broadcast(PATH)
                catalog = await slow_broadcast.catalog()
                for name, rendition in [*catalog.video.items(), *catalog.audio.items()]:
                    held.append(
                        asyncio.ensure_future(collect_media(slow_broadcast, name, rendition))
                    )
                broadcast = await normal.request_broadcast(PATH)
                (video_name, video), *_ = catalog.video.items()
                reading = asyncio.ensure_future(collect_media(broadcast, video_name, video))
                while not reading.done():
                    for info in mq.server.sessions():
                        peak_backlog = max(peak_backlog, info.backlog_bytes)
                    await asyncio.wait([reading], timeout=0.05)
                received = reading.result()
                for task in held:  # the slow one may still be behind: hang up on it
                    task.cancel()
                await asyncio.gather(*held, return_exceptions=True)
            assert await publisher.wait(20) == 0
            async with asyncio.timeout(15):
                while len(mq.records) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            records = mq.records
            (ingress,) = await gw.wait_records(1, 10, lambda r: r.role == "ingress")
            slow_port = relay.server_side_port
        finally:
            relay.close()

    # The publisher lost nothing: every frame of the fixture was imported (plus the catalog).
    assert ingress.outcome == "eof"
    assert ingress.frames == total_frames + 1
    # The normal viewer got whole GOPs from its join point to the end, none skipped.
    keyframes = sum(received.keyframes)
    joined = video_fixture[len(video_fixture) - keyframes :]
    assert received.frames == sum(len(gop) for gop in joined)
    # The slow one was skipped ahead, and the server never held much more than the cap for it.
    slow_record = next(r for r in records if r.peer == f"{HOST}:{slow_port}")
    normal_record = next(r for r in records if r is not slow_record)
    assert normal_record.skipped_groups == 0
    assert slow_record.skipped_groups > 0
    assert relay.delivered_bytes < normal_record.quic.bytes_sent / 2  # it really was slow
    assert peak_backlog <= bound
    assert slow_record.quic.peak_backlog_bytes <= bound
    # Billed is at most what was handed to its connection; of that, what was not dropped with
    # a skipped group crossed its link or was still held (under the cap) at the end.
    quic = slow_record.quic
    assert slow_record.bytes <= quic.stream_bytes_sent
    assert quic.dropped_bytes > 0
    assert quic.stream_bytes_sent - quic.dropped_bytes <= relay.delivered_bytes + bound
