"""srt-live-transmit (libsrt's own tool) as an independent SRT client: publish and pull."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from tests.integration.conftest import (
    FIXTURE,
    HOST,
    Gateway,
    Procs,
    assert_arrived,
    decode_video,
    frames_in_last,
    poll_until,
    remux_size,
    run_gateway,
)

CHUNK = 1316


def ingress_frames(gw: Gateway) -> int:
    """Frames the gateway has imported so far, over every ingress entry."""
    return sum(e.frames for e in gw.stats.snapshot() if e.role == "ingress")


async def test_srt_live_transmit_publishes_and_pulls(procs: Procs, tmp_path: Path) -> None:
    out_path = tmp_path / "pulled.ts"
    async with run_gateway() as gw:
        source = procs.start(
            "ffmpeg-source",
            [
                "ffmpeg",
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-i",
                str(FIXTURE),
                "-map",
                "0",
                "-c",
                "copy",
                "-f",
                "mpegts",
                "-",
            ],
            stdout=subprocess.PIPE,
        )
        assert source.proc.stdout is not None
        publisher = procs.start(
            "slt-publish",
            [
                "srt-live-transmit",
                "-q",
                "-chunk:1316",
                "-a:no",
                "file://con",
                f"srt://{HOST}:{gw.port}?linger=2&streamid=#!::r=live/slt,m=publish",
            ],
            stdin=source.proc.stdout,
        )
        source.proc.stdout.close()  # the pipe now belongs to the two processes
        await gw.wait_live("live/slt", 10)
        # Join mid-stream: once 2.5 s of the fixture's media (30 fps video + ~43 fps audio)
        # is in, whatever pace a loaded machine gives the real-time source.
        await poll_until(lambda: ingress_frames(gw) >= 180, 20)
        with out_path.open("wb") as out:
            viewer = procs.start(
                "slt-pull",
                [
                    "srt-live-transmit",
                    "-q",
                    "-a:no",
                    f"srt://{HOST}:{gw.port}?streamid=#!::r=live/slt,m=request",
                    "file://con",
                ],
                stdout=out,
            )
        assert await source.wait(30) == 0, source.stderr()
        # srt-live-transmit does not end at the end of its input: stop it once it has sent all
        # (SIGINT closes its socket, with linger, which the gateway sees as a clean end).
        await asyncio.sleep(1.0)
        publisher.stop()
        assert publisher.proc.returncode == 0, publisher.stderr()
        assert await viewer.wait(15) == 0, viewer.stderr()
        records = await gw.wait_records(2, 10)

    ingress = next(r for r in records if r.role == "ingress")
    egress = next(r for r in records if r.role == "egress")
    assert ingress.outcome == egress.outcome == "eof"
    # srt-live-transmit drops its last 1316-byte read at end of input (it does so towards its
    # own listener too): everything else arrived.
    assert 0 <= remux_size() - ingress.ts_bytes <= CHUNK
    # srt-live-transmit writes what it receives verbatim: every byte the gateway sent arrived,
    # except whole packets libsrt's sender reports it dropped as too late (loaded machines).
    assert_arrived(out_path.stat().st_size, egress)
    decoded = decode_video(out_path)
    assert decoded.first_is_keyframe
    assert decoded.errors == 0
    expected = frames_in_last(decoded.span())
    assert expected < 300
    assert decoded.frames >= 0.9 * expected
