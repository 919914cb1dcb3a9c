"""The client role against a moq-rs Server, over raw QUIC and WebTransport: the gateway
publishes a broadcast of its origin to the server (a moq-rs client reads it there), and
discovers what the server announces, subscribing its catalog and tracks into the origin."""

from __future__ import annotations

import asyncio
import json

import moq
import pytest

from gateway.moq.client import connect
from gateway.moq.ingest import ingest_into
from model import BroadcastProducer, Origin, StatsHandle
from tests.integration.conftest import HOST
from tests.integration.test_moq_ingest_srt import fixture_video

CATALOG = json.dumps(
    {
        "video": {
            "renditions": {
                "video": {
                    "codec": "avc3.64001e",
                    "codedWidth": 640,
                    "codedHeight": 360,
                    "container": {"kind": "legacy"},
                }
            }
        }
    }
).encode()


def url(scheme: str, port: int) -> str:
    return f"moqt://{HOST}:{port}" if scheme == "moqt" else f"https://localhost:{port}/"


@pytest.mark.parametrize("scheme", ["moqt", "https"])
async def test_moq_upstream_client_publishes_the_origin_to_a_moq_rs_server(scheme: str) -> None:
    origin = Origin()
    broadcast = BroadcastProducer()
    origin.publish("live/pub", broadcast)
    catalog = broadcast.create_track("catalog.json")
    catalog.write_frame(CATALOG)
    frames = [bytes([i]) * (100 + i) for i in range(20)]
    async with moq.Server(f"{HOST}:0", tls_generate=["localhost"]) as server:
        port = int(server.local_addr.rsplit(":", 1)[1])
        (fingerprint,) = server.cert_fingerprints()
        serving = asyncio.create_task(server.serve())
        got: list[bytes] = []
        try:
            async with (
                asyncio.timeout(20),
                connect(
                    url(scheme, port),
                    origin=origin,
                    fingerprint=fingerprint,
                ),
                moq.Client(
                    f"moqt://{HOST}:{port}", tls_fingerprints=[fingerprint], reconnect=False
                ) as reader,
            ):
                remote = await reader.announced_broadcast("live/pub")
                track = await remote.subscribe_track("video")
                await asyncio.sleep(0.3)  # the subscription reaches the gateway
                video = broadcast.create_track("video")
                group = video.append_group()
                for frame in frames:
                    group.write_frame(frame)
                group.finish()
                async for received in track:
                    async for frame in received:
                        got.append(frame.payload)
                    break
                video.finish()
        finally:
            serving.cancel()
            catalog.finish()
            broadcast.finish()
    assert got == frames


@pytest.mark.parametrize("scheme", ["moqt", "https"])
async def test_moq_upstream_client_ingests_what_a_moq_rs_server_announces(scheme: str) -> None:
    aus = fixture_video(40)
    origin = Origin()
    stats = StatsHandle("n")
    async with moq.Server(f"{HOST}:0", tls_generate=["localhost"]) as server:
        port = int(server.local_addr.rsplit(":", 1)[1])
        (fingerprint,) = server.cert_fingerprints()
        serving = asyncio.create_task(server.serve())
        published = server.create_broadcast("live/remote")
        video = published.publish_video(moq.VideoFormat.AVC3, track="video")
        published.announce()
        video.write_frame(aus[0].data, aus[0].timestamp_us)
        try:
            async with (
                asyncio.timeout(20),
                connect(
                    url(scheme, port),
                    ingest=ingest_into(origin, stats, tier="relay"),
                    fingerprint=fingerprint,
                ),
            ):
                consumer = await origin.announced_broadcast("live/remote")
                while "video" not in consumer.track_names():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                await video.used()
                track = consumer.subscribe_track("video")
                for au in aus[1:]:
                    video.write_frame(au.data, au.timestamp_us)
                    await asyncio.sleep(0.01)
                group = await track.next_group()
                assert group is not None
                count = 0
                while count < len(aus) and await group.next_frame() is not None:
                    count += 1
        finally:
            video.finish()
            published.close()
            serving.cancel()
    assert count == len(aus)  # one GOP: the fixture's keyframe interval is 60 frames
    (entry,) = stats.snapshot()
    assert (entry.path, entry.tier, entry.role) == ("live/remote", "relay", "ingress")
    assert entry.frames >= len(aus)
