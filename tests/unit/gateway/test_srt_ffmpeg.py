"""ffmpeg (Debian, libsrt 1.5.1 GnuTLS) as a real SRT peer of the reactor on 127.0.0.1:
publishing into our listener, reading what our listener side sends, and being refused."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from gateway.srt import (
    Accept,
    HandshakeInfo,
    Reject,
    SrtListener,
    SrtOptions,
    SrtReactor,
    open_socket_count,
)

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
TS_PACKET = 188


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3 s H.264 + AAC TS made by ffmpeg, and ffmpeg's own `-c copy` remux of it (what an
    ffmpeg peer re-muxing the same input produces, byte for byte)."""
    folder = tmp_path_factory.mktemp("srt_media")
    source = folder / "source.ts"
    remux = folder / "remux.ts"
    run(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
        "-t", "3", "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac", "-b:a", "64k",
        "-f", "mpegts", str(source),
    )  # fmt: skip
    run(FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
        "-map", "0", "-c", "copy", "-f", "mpegts", str(remux))  # fmt: skip
    assert source.stat().st_size > 100_000
    return source, remux


def run(*argv: str) -> None:
    import subprocess

    subprocess.run(argv, check=True, timeout=60)


async def ffmpeg(*argv: str, limit_s: int = 30) -> asyncio.subprocess.Process:
    """ffmpeg under `timeout -s INT` (an SRT reader may otherwise hang after its peer left)."""
    return await asyncio.create_subprocess_exec(
        "timeout", "-s", "INT", str(limit_s), FFMPEG, "-hide_banner", "-loglevel", "error",
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def listen(reactor: SrtReactor, seen: list[HandshakeInfo], **hook_kw: object) -> SrtListener:
    async def hook(info: HandshakeInfo) -> Accept | Reject:
        seen.append(info)
        if "reject" in hook_kw:
            return Reject(int(str(hook_kw["reject"])))
        return Accept(passphrase=hook_kw.get("passphrase"))  # type: ignore[arg-type]

    return await reactor.listen("127.0.0.1", 0, SrtOptions(), hook)


@pytest.fixture
def no_leaks() -> object:
    before = open_socket_count()
    yield before
    assert open_socket_count() == before


async def test_ffmpeg_publishes_and_every_byte_arrives(
    media: tuple[Path, Path], no_leaks: object
) -> None:
    source, remux = media
    seen: list[HandshakeInfo] = []
    async with SrtReactor() as reactor:
        listener = await listen(reactor, seen)
        url = (
            f"srt://127.0.0.1:{listener.port}?mode=caller&linger=2&streamid=#!::r=live/x,m=publish"
        )
        proc = await ffmpeg("-i", str(source), "-map", "0", "-c", "copy", "-f", "mpegts", url)
        messages: list[bytes] = []
        async with asyncio.timeout(30):
            conn = await listener.accept()
            while batch := await conn.recv_batch():
                messages.extend(batch)
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        assert b"".join(messages) == remux.read_bytes()
        assert all(len(m) % TS_PACKET == 0 and 0 < len(m) <= 1316 for m in messages)
        assert [i.stream_id for i in seen] == ["#!::r=live/x,m=publish"]
        assert conn.stream_id == "#!::r=live/x,m=publish"
        stats = conn.stats()  # the link is gone: the last snapshot
        assert stats.pkt_recv_unique == len(messages)
        assert stats.bytes_recv >= remux.stat().st_size
        conn.close()
        await listener.aclose()


async def test_ffmpeg_reads_what_the_listener_side_sends(
    media: tuple[Path, Path], no_leaks: object
) -> None:
    source, remux = media
    seen: list[HandshakeInfo] = []
    out = source.parent / "pulled.ts"
    async with SrtReactor() as reactor:
        listener = await listen(reactor, seen)
        url = (
            f"srt://127.0.0.1:{listener.port}?mode=caller&timeout=3000000"
            "&streamid=#!::r=live/x,m=request"
        )
        proc = await ffmpeg("-y", "-i", url, "-map", "0", "-c", "copy", "-f", "mpegts", str(out))
        data = source.read_bytes()
        async with asyncio.timeout(30):
            conn = await listener.accept()
            for offset in range(0, len(data), 1316):
                # 330 kB fit libsrt's send buffer: a full one would be a failure here.
                assert conn.send(data[offset : offset + 1316])
                if offset % (1316 * 50) == 0:
                    await asyncio.sleep(0.01)  # roughly paced, like a live source
            assert await conn.flush()  # acknowledged and played before our SHUTDOWN
            conn.close()
            _, stderr = await proc.communicate()
        assert out.exists(), stderr.decode()
        assert out.read_bytes() == remux.read_bytes()
        assert [i.stream_id for i in seen] == ["#!::r=live/x,m=request"]
        await listener.aclose()


async def test_ffmpeg_refused_by_the_hook_exits_with_an_error(
    media: tuple[Path, Path], no_leaks: object
) -> None:
    source, _ = media
    seen: list[HandshakeInfo] = []
    async with SrtReactor() as reactor:
        listener = await listen(reactor, seen, reject=1403)
        url = f"srt://127.0.0.1:{listener.port}?mode=caller&streamid=#!::r=live/x,m=publish"
        proc = await ffmpeg("-i", str(source), "-c", "copy", "-f", "mpegts", url)
        async with asyncio.timeout(30):
            await proc.communicate()
        assert proc.returncode not in (0, 124)  # failed, and not by timeout(1)
        assert len(seen) == 1
        await listener.aclose()


async def test_ffmpeg_with_the_hooks_passphrase_publishes_and_a_wrong_one_is_refused(
    media: tuple[Path, Path], no_leaks: object
) -> None:
    source, remux = media
    seen: list[HandshakeInfo] = []
    async with SrtReactor() as reactor:
        listener = await listen(reactor, seen, passphrase="stream-secret-42")
        base = f"srt://127.0.0.1:{listener.port}?mode=caller&linger=2&streamid=live/enc"
        wrong = await ffmpeg(
            "-i", str(source), "-c", "copy", "-f", "mpegts", base + "&passphrase=not-the-secret"
        )
        async with asyncio.timeout(30):
            await wrong.communicate()
        assert wrong.returncode not in (0, 124)
        right = await ffmpeg(
            "-i", str(source), "-map", "0", "-c", "copy", "-f", "mpegts",
            base + "&passphrase=stream-secret-42",
        )  # fmt: skip
        messages: list[bytes] = []
        async with asyncio.timeout(30):
            conn = await listener.accept()
            while batch := await conn.recv_batch():
                messages.extend(batch)
            await right.communicate()
        assert right.returncode == 0
        assert b"".join(messages) == remux.read_bytes()
        conn.close()
        await listener.aclose()
