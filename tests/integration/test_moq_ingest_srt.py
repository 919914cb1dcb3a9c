"""A moq-rs client publishes into the gateway over MoQ; ffmpeg pulls it back out over SRT.

The gateway's MoQ listener asks the client what it announces, subscribes its catalog and
tracks and writes them into the origin, where the SRT side serves them to an `m=request`
caller. Usage is checked against what moq-rs itself holds for the broadcast (a local moq-rs
consumer of the publishing broadcast), never against the gateway's own counts: in the stats,
in the connection's ingress `session.closed` record and in the ledger row a sink made of it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import av
import moq
import pytest

from gateway.ledger import Ledger
from gateway.moq.cert import generate_certificate
from gateway.moq.record import MoqSessionRecord
from gateway.moq.server import MoqAuthDecision, MoqServer
from gateway.moq.webtransport import ConnectRequest
from tests.integration.conftest import (
    FIXTURE,
    HOST,
    Procs,
    decode_video,
    ffmpeg_pull_argv,
    poll_until,
    run_gateway,
)

PATH = "live/moqcam"


@dataclass(frozen=True, slots=True)
class Au:
    """One H.264 access unit of the fixture (Annex-B, parameter sets on keyframes)."""

    timestamp_us: int
    keyframe: bool
    data: bytes


def fixture_video(limit: int) -> list[Au]:
    out = []
    with av.open(str(FIXTURE)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            out.append(Au(packet.pts * 1_000_000 // 90_000, packet.is_keyframe, bytes(packet)))
            if len(out) == limit:
                break
    return out


@dataclass
class Tally:
    """Groups, frames and payload bytes a moq-rs consumer read from one track."""

    groups: int = 0
    frames: int = 0
    bytes: int = 0


async def tally_track(broadcast: moq.BroadcastConsumer, name: str, into: Tally) -> None:
    track = await broadcast.subscribe_track(name)
    async for group in track:
        into.groups += 1
        async for frame in group:
            into.frames += 1
            into.bytes += len(frame.payload)


@pytest.mark.parametrize("scheme", ["moqt", "https"])
async def test_moq_ingest_moq_rs_publisher_is_pulled_over_srt_and_metered(
    scheme: str, procs: Procs, tmp_path: Path
) -> None:
    frames = fixture_video(150)  # 5 s, three GOPs
    cert = generate_certificate()
    seen: list[ConnectRequest] = []

    def auth(request: ConnectRequest) -> MoqAuthDecision:
        seen.append(request)
        return MoqAuthDecision(tier="pro", publish=True)

    records: list[MoqSessionRecord] = []
    async with (
        await Ledger.open(tmp_path / "ledger.sqlite3", node="gw-t") as ledger,
        run_gateway() as gw,
        await MoqServer.bind(
            (HOST, 0),
            certificate=cert,
            origin=gw.origin,
            auth=auth,
            sinks=[records.append, ledger.record_session],
        ) as moq_server,
    ):
        moq_server.with_stats(gw.stats)
        host = HOST if scheme == "moqt" else "localhost"
        url = f"{scheme}://{host}:{moq_server.port}/"
        async with moq.Client(
            url, tls_fingerprints=[cert.fingerprint], websocket_enabled=False
        ) as client:
            broadcast = client.create_broadcast(PATH)
            local = broadcast.consume()
            catalog_tally, video_tally = Tally(), Tally()
            # moq-rs' own reading of what it publishes, subscribed before anything is written.
            catalog_task = asyncio.create_task(tally_track(local, "catalog.json", catalog_tally))
            broadcast.announce()
            await gw.wait_live(PATH, 10)
            await asyncio.sleep(0.5)  # the gateway's catalog subscription reaches moq-rs
            video = broadcast.publish_video(moq.VideoFormat.AVC3, track="video")
            video_task = asyncio.create_task(tally_track(local, "video", video_tally))
            consumer = gw.origin.get(PATH)
            assert consumer is not None
            # Nothing is written before the gateway subscribed to the video rendition.
            async with asyncio.timeout(10):
                video.write_frame(frames[0].data, frames[0].timestamp_us)
                while "video" not in consumer.track_names():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            out = tmp_path / "pulled.ts"
            pull = procs.start(
                "ffmpeg-pull", ffmpeg_pull_argv(gw.port, f"#!::r={PATH},m=request", out)
            )
            # The SRT viewer joins inside the first GOP (2 s long), so it gets every frame.
            await poll_until(
                lambda: any(e.role == "egress" and e.viewers for e in gw.stats.snapshot()), 1.5
            )
            for au in frames[1:]:
                video.write_frame(au.data, au.timestamp_us)
                await asyncio.sleep(1 / 30)
            video.finish()
            await asyncio.sleep(1.0)
            broadcast.close()
            await poll_until(lambda: not gw.origin.is_live(PATH), 10)
            assert await pull.wait(20) == 0, pull.stderr()
            for task in (catalog_task, video_task):
                task.cancel()
            await asyncio.gather(catalog_task, video_task, return_exceptions=True)
        await moq_server.aclose()  # drains the records
        await ledger.flush()
        rows = {r.session: r for r in await ledger.read_since(0)}

    assert seen
    assert seen[0].transport == ("quic" if scheme == "moqt" else "webtransport")
    # Ingress: exactly what moq-rs wrote (its own consumer's counts), under the hook's tier.
    ingress = [e for e in gw.stats.snapshot() if e.role == "ingress"]
    assert [(e.path, e.tier) for e in ingress] == [(PATH, "pro")]
    assert video_tally.frames == len(frames)
    expected = (
        catalog_tally.groups + video_tally.groups,
        catalog_tally.frames + video_tally.frames,
        catalog_tally.bytes + video_tally.bytes,
    )
    assert (ingress[0].groups, ingress[0].frames, ingress[0].bytes) == expected
    assert ingress[0].announced == ingress[0].announced_closed == 1
    # The connection's records: its egress one (it read nothing), then its publish's ingress.
    egress_rec, ingress_rec = records
    assert (egress_rec.role, egress_rec.bytes) == ("egress", 0)
    assert ingress_rec.role == "ingress"
    assert (ingress_rec.path, ingress_rec.tier) == (PATH, "pro")
    assert (ingress_rec.groups, ingress_rec.frames, ingress_rec.bytes) == expected
    assert ingress_rec.connection == egress_rec.session != ingress_rec.session
    assert ingress_rec.transport == egress_rec.transport
    assert ingress_rec.outcome == "closed"
    assert 5.0 < ingress_rec.duration_s <= egress_rec.duration_s  # 150 frames at 30/s
    assert ingress_rec.quic == egress_rec.quic
    assert ingress_rec.wire_bytes > ingress_rec.bytes  # QUIC framing on top of the payload
    # The ledger sink stored both, under distinct keys.
    assert rows[egress_rec.session].role == "egress"
    row = rows[ingress_rec.session]
    assert (row.role, row.path, row.tier) == ("ingress", PATH, "pro")
    assert (row.counts["groups"], row.counts["frames"], row.counts["bytes"]) == expected
    # The SRT viewer got every frame moq-rs published, and they decode.
    decoded = decode_video(out)
    assert decoded.errors == 0
    assert decoded.first_is_keyframe
    assert decoded.frames == len(frames), decoded
