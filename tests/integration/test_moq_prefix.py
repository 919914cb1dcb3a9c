"""`moqsrt serve --prefix acme` with no authorization configured scopes MoQ connections to the
prefix as it places SRT callers under it: a MoQ client reads and publishes only at paths under
`acme` (the root a hook admitting everyone would give it), so an SRT caller's `r=cam` is the MoQ
path `acme/cam`, a MoQ broadcast `acme/cam2` is what an SRT caller's `r=cam2` reads, and a MoQ
announce outside the prefix is refused instead of landing at the origin's top level.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import av
import moq

from tests.integration.conftest import (
    FIXTURE,
    HOST,
    Proc,
    Procs,
    decode_video,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    poll_until,
)

PREFIX = "acme"


def start_serve(procs: Procs, tmp_path: Path) -> tuple[Proc, Path]:
    """`moqsrt serve --prefix acme`, no users table, no auth URL; SRT, MoQ, HTTP on port 0."""
    out = tmp_path / "serve.stdout"
    with out.open("wb") as stdout:
        proc = procs.start(
            "serve",
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                *("--srt", f"{HOST}:0", "--moq", f"{HOST}:0", "--http", f"{HOST}:0"),
                *("--prefix", PREFIX, "--var-dir", str(tmp_path / "var")),
                *("--log-format", "json"),
            ],
            stdout=stdout,
            limit_s=60,
        )
    return proc, out


async def ports(proc: Proc, out: Path) -> tuple[int, int, int, str]:
    """(SRT, MoQ, HTTP port, certificate sha256) once serve printed all its banners."""
    patterns = (
        r"srt://127\.0\.0\.1:(\d+)\?streamid",
        r"serving MoQ on udp/(\d+)",
        r"serving HTTP: curl http://127\.0\.0\.1:(\d+)/",
        r"certificate sha256: ([0-9a-f]{64})",
    )
    found: list[str] = []

    def printed() -> bool:
        nonlocal found
        assert proc.running(), proc.stderr()
        text = out.read_text()
        matches = [re.search(p, text) for p in patterns]
        found = [m.group(1) for m in matches if m is not None]
        return len(found) == len(patterns)

    await poll_until(printed, 20)
    return int(found[0]), int(found[1]), int(found[2]), found[3]


async def broadcasts(http_port: int) -> dict[str, Any]:
    """`/api/v1/broadcasts` by path."""
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{HOST}:{http_port}/api/v1/broadcasts") as response,
    ):
        assert response.status == 200, await response.text()
        return {b["path"]: b for b in (await response.json())["broadcasts"]}


def fixture_video(limit: int) -> list[tuple[bytes, int]]:
    """The fixture's first `limit` H.264 access units (Annex-B) with their PTS in microseconds."""
    out: list[tuple[bytes, int]] = []
    with av.open(str(FIXTURE)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size and packet.pts is not None:
                out.append((bytes(packet), packet.pts * 1_000_000 // 90_000))
            if len(out) == limit:
                break
    return out


async def test_moq_readers_and_publishers_are_scoped_to_the_prefix_without_authorization(
    procs: Procs, tmp_path: Path
) -> None:
    serve, out = start_serve(procs, tmp_path)
    srt_port, moq_port, http_port, fingerprint = await ports(serve, out)
    seen: list[str] = []  # every path announced to the MoQ reader, in order

    def client() -> moq.Client:
        return moq.Client(
            f"moqt://{HOST}:{moq_port}", tls_fingerprints=[fingerprint], reconnect=False
        )

    async def watch(reader: moq.Client) -> None:
        async for announced in reader.announced():
            seen.append(announced.prefix.strip("/"))

    async with asyncio.timeout(30), client() as reader, client() as publisher:
        watcher = asyncio.create_task(watch(reader))
        # A MoQ publisher announces one broadcast outside the prefix and one under it.
        outside = publisher.create_broadcast("cam2")
        outside.announce()
        inside = publisher.create_broadcast(f"{PREFIX}/cam2")
        video = inside.publish_video(moq.VideoFormat.AVC3, track="video")
        inside.announce()
        frames = fixture_video(150)  # 5 s

        async def write() -> None:
            for data, timestamp_us in frames:
                video.write_frame(data, timestamp_us)
                await asyncio.sleep(1 / 30)
            video.finish()

        writer = asyncio.create_task(write())
        listed: dict[str, Any] = {}

        async def listed_with_tracks() -> None:
            nonlocal listed
            while not listed.get(f"{PREFIX}/cam2", {}).get("tracks"):
                await asyncio.sleep(0.1)
                listed = await broadcasts(http_port)

        await listed_with_tracks()
        assert "cam2" not in listed, listed  # refused: outside the connection's root
        # An SRT reader names it as the MoQ publisher's path under the prefix, and plays it.
        pulled = tmp_path / "pulled.ts"
        pull = procs.start(
            "ffmpeg-pull", ffmpeg_pull_argv(srt_port, "#!::r=cam2,m=request", pulled, silence_s=3)
        )

        # An SRT publisher's `r=cam` is the MoQ path `acme/cam`: the reader is told of it there.
        procs.start("ffmpeg-publish", ffmpeg_publish_argv(srt_port, "#!::r=cam,m=publish"))
        await poll_until(lambda: f"{PREFIX}/cam" in seen, 10)
        broadcast = await reader.request_broadcast(f"{PREFIX}/cam")
        (rendition,) = list((await broadcast.catalog()).video)
        track = await broadcast.subscribe_track(rendition)
        got = 0
        async for group in track:
            async for _frame in group:
                got += 1
            if got >= 30:
                break
        assert got >= 30

        await writer
        assert await pull.wait(15) == 0, pull.stderr()
        decoded = decode_video(pulled)
        # It joined within the 5 s the publisher ran, at a keyframe: at least its last GOP (1 s).
        assert decoded.first_is_keyframe, decoded
        assert decoded.frames >= 30, decoded
        inside.close()
        outside.close()
        # The reader was never told of anything outside the prefix.
        assert seen
        assert all(path.startswith(f"{PREFIX}/") for path in seen), seen
        assert "cam2" not in await broadcasts(http_port)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
