"""`moqsrt probe URL` reads a live source for a few seconds and reports its catalog and, per
track, what arrived: a moq-rs server's broadcast (nobody's code here) over `moqt://`, and an
SRT broadcast pulled with `m=request` over `srt://`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import moq

from tests.integration.conftest import (
    FIXTURE,
    HOST,
    ROOT,
    Procs,
    decode_video,
    ffmpeg_publish_argv,
    run_gateway,
)
from tests.integration.test_moq_ingest_srt import fixture_video

PATH = "live/probe"


async def test_moq_serve_probe_reports_a_live_moq_rs_broadcast() -> None:
    frames = fixture_video(90)  # 3 s, two GOPs
    async with moq.Server(f"{HOST}:0", tls_generate=["localhost"]) as server:
        port = int(server.local_addr.rsplit(":", 1)[1])
        (fingerprint,) = server.cert_fingerprints()
        serving = asyncio.create_task(server.serve())
        broadcast = server.create_broadcast(PATH)
        video = broadcast.publish_video(moq.VideoFormat.AVC3, track="video")
        broadcast.announce()
        video.write_frame(frames[0].data, frames[0].timestamp_us)  # the catalog is out now
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "probe",
            f"moqt://{HOST}:{port}/{PATH}",
            "--seconds",
            "6",
            "--json",
            "--fingerprint",
            fingerprint,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(10):
                await video.used()  # the probe subscribed to the video track
            for au in frames[1:]:
                video.write_frame(au.data, au.timestamp_us)
                await asyncio.sleep(1 / 30)
            async with asyncio.timeout(20):
                out, err = await probe.communicate()
        finally:
            if probe.returncode is None:
                probe.kill()
                await probe.wait()
            video.finish()
            broadcast.close()
            serving.cancel()
    assert probe.returncode == 0, err.decode(errors="replace")
    report = json.loads(out)
    assert report["broadcast"] == PATH
    (rendition,) = report["catalog"]["video"]["renditions"].values()
    assert rendition["codec"].startswith("avc3.")
    # The probe subscribed inside the first GOP, so it got every frame moq-rs published.
    assert report["tracks"]["video"]["frames"] == len(frames)
    assert report["tracks"]["video"]["groups"] == 2
    assert report["tracks"]["video"]["bytes"] > sum(len(au.data) for au in frames)


async def test_moq_serve_probe_pulls_an_srt_broadcast_with_m_request(procs: Procs) -> None:
    expected = decode_video(FIXTURE)
    async with run_gateway() as gw:
        procs.start("ffmpeg-publish", ffmpeg_publish_argv(gw.port, "#!::r=live/srtprobe,m=publish"))
        await gw.wait_live("live/srtprobe", 10)
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "probe",
            f"srt://{HOST}:{gw.port}?streamid=#!::r=live/srtprobe,m=request",
            "--seconds",
            "4",
            "--json",
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await probe.communicate()
    assert probe.returncode == 0, err.decode(errors="replace")
    report = json.loads(out)
    codecs = sorted(
        r["codec"].split(".")[0]
        for kind in ("video", "audio")
        for r in report["catalog"][kind]["renditions"].values()
    )
    assert codecs == ["avc3", "mp4a"]
    (video,) = report["catalog"]["video"]["renditions"]
    # About 4 s of a 30 fps stream (the pull starts at a keyframe; the fixture has 300 frames).
    assert 60 <= report["tracks"][video]["frames"] <= expected.frames
    assert report["input_bytes"] > 0
