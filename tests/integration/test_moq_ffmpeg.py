"""ffmpeg publishes the fixture over SRT; moq-rs clients read it back over MoQ (raw QUIC and
WebTransport, certificate pinned by fingerprint): discovery, catalog, media frames with their
keyframe flags and microsecond timestamps, and the egress usage billed for exactly that."""

from __future__ import annotations

import asyncio
import json

import moq
import pytest

from gateway.moq.record import MoqSessionRecord
from tests.integration.conftest import (
    FIXTURE,
    Procs,
    ffmpeg_publish_argv,
    run_gateway,
)
from tests.integration.moq_helpers import (
    collect_media,
    fixture_packets,
    gops,
    relative_us,
    run_moq,
)
from tests.media import expected_counts

PATH = "live/cam1"


@pytest.mark.parametrize("transport", ["quic", "webtransport"])
async def test_a_moq_rs_client_receives_the_ffmpeg_broadcast_and_is_billed_for_it(
    procs: Procs, transport: str
) -> None:
    expected = expected_counts(FIXTURE)
    video_pid = next(int(k, 16) for k, c in expected.items() if c.kind == "video")
    audio_pid = next(int(k, 16) for k, c in expected.items() if c.kind == "audio")
    video_fixture = gops(fixture_packets(FIXTURE, video_pid))
    audio_fixture = fixture_packets(FIXTURE, audio_pid)

    async with run_gateway() as gw, run_moq(gw.origin, gw.stats) as mq:
        publisher = procs.start(
            "ffmpeg-pub", ffmpeg_publish_argv(gw.port, f"#!::r={PATH},m=publish")
        )
        await gw.wait_live(PATH, 10)
        await asyncio.sleep(3)  # join mid-stream: the client starts at the latest group
        # moq-rs parses the catalog (a client of its own: moq-rs may or may not share a
        # catalog() subscription with another one on the same session, which would blur
        # the billing check below).
        async with asyncio.timeout(40), mq.client(transport) as reader:
            await _announced(reader)
            catalog = await (await reader.request_broadcast(PATH)).catalog()
        (video_name,) = catalog.video
        (audio_name,) = catalog.audio
        video, audio = catalog.video[video_name], catalog.audio[audio_name]
        vexp, aexp = expected[f"0x{video_pid:x}"], expected[f"0x{audio_pid:x}"]
        assert video.codec.startswith("avc3.")  # H.264, parameter sets in band
        assert video.coded is not None
        assert (video.coded.width, video.coded.height) == (vexp.width, vexp.height)
        assert audio.codec == "mp4a.40.2"
        assert (audio.sample_rate, audio.channel_count) == (aexp.sample_rate, aexp.channels)

        async with asyncio.timeout(40), mq.client(transport, "watch?jwt=secret") as client:
            await _announced(client)
            broadcast = await client.request_broadcast(PATH)
            raw_catalog = await broadcast.subscribe_track("catalog.json")  # the bytes as sent
            catalog_group = await raw_catalog.recv_group()
            assert catalog_group is not None
            (catalog_json,) = [frame.payload async for frame in catalog_group]
            raw_catalog.cancel()
            parsed = json.loads(catalog_json)
            assert parsed["video"]["renditions"][video_name]["codec"] == video.codec
            assert parsed["audio"]["renditions"][audio_name]["sampleRate"] == aexp.sample_rate
            received_video, received_audio = await asyncio.gather(
                collect_media(broadcast, video_name, video),
                collect_media(broadcast, audio_name, audio),
            )
        assert await publisher.wait(20) == 0
        records = await _records(mq.records, 2, 10)
        (record,) = [r for r in records if r.subscriptions == 3]  # not the catalog reader

    # Video: whole GOPs from the join point to the end, keyframe first in each, timestamps
    # exactly the fixture's (relative to the join keyframe; ffmpeg shifts the origin).
    keyframes = sum(received_video.keyframes)
    assert received_video.keyframes[0]
    assert 1 <= keyframes < len(video_fixture)  # joined after the first GOP
    joined = [p for gop in video_fixture[len(video_fixture) - keyframes :] for p in gop]
    assert received_video.frames == len(joined)
    assert received_video.keyframes == [p.keyframe for p in joined]
    expected_video_us = relative_us([p.pts_90k for p in joined if p.pts_90k is not None])
    got_video_us = [t - received_video.timestamps_us[0] for t in received_video.timestamps_us]
    assert all(abs(a - b) <= 1 for a, b in zip(got_video_us, expected_video_us, strict=True))

    # Audio: one frame per group, every frame from the join point to the end.
    assert 1 <= received_audio.frames < len(audio_fixture)
    joined_audio = audio_fixture[len(audio_fixture) - received_audio.frames :]
    expected_audio_us = relative_us([p.pts_90k for p in joined_audio if p.pts_90k is not None])
    got_audio_us = [t - received_audio.timestamps_us[0] for t in received_audio.timestamps_us]
    assert all(abs(a - b) <= 25 for a, b in zip(got_audio_us, expected_audio_us, strict=True))

    # Billing: the session's egress is what this client received (model frames: timestamp
    # varint + payload), plus the catalog frame it read.
    assert record.transport == transport
    assert record.path == ("" if transport == "quic" else "watch")  # raw QUIC carries none
    assert record.frames == received_video.frames + received_audio.frames + 1
    assert record.groups == keyframes + received_audio.frames + 1
    media_bytes = received_video.legacy_bytes + received_audio.legacy_bytes
    assert record.bytes == media_bytes + len(catalog_json)
    assert record.subscriptions == 3  # catalog, video, audio
    assert record.quic.bytes_sent > record.bytes  # QUIC framing and headers on top
    egress = [e for e in gw.stats.snapshot() if e.role == "egress" and e.path == PATH]
    assert sum(e.bytes for e in egress) == sum(r.bytes for r in records)  # no SRT viewers
    assert "secret" not in json.dumps(record.as_dict())


async def _records(
    records: list[MoqSessionRecord], count: int, timeout_s: float
) -> list[MoqSessionRecord]:
    async with asyncio.timeout(timeout_s):
        while len(records) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return records


async def _announced(client: moq.Client) -> None:
    announced = client.announced()
    async for update in announced:
        if update.active and update.prefix == PATH:
            break
    announced.cancel()
