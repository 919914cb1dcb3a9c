"""SRT encryption: the server's passphrase, and a per-stream one chosen by the hook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import AuthDecision, StreamRequest
from gateway.srt import SrtOptions, SrtReactor
from tests.integration.conftest import (
    HOST,
    Procs,
    decode_video,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    run_gateway,
)
from tests.integration.test_srt_rejections import reject_code

SECRET = "s3cret-pass-123"


@pytest.fixture
async def client() -> AsyncIterator[SrtReactor]:
    async with SrtReactor() as reactor:
        yield reactor


async def test_right_passphrase_plays_wrong_and_missing_ones_are_refused(
    client: SrtReactor, procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "pulled.ts"
    async with run_gateway(passphrase=SECRET) as gw:
        publisher = procs.start(
            "publish",
            ffmpeg_publish_argv(
                gw.port,
                "#!::r=live/enc,m=publish",
                extra=["-t", "5"],
                passphrase=SECRET,
                pbkeylen=16,
            ),
        )
        await gw.wait_live("live/enc", 10)
        viewer = procs.start(
            "pull",
            ffmpeg_pull_argv(
                gw.port, "#!::r=live/enc,m=request", out, passphrase=SECRET, pbkeylen=16
            ),
        )
        request = "#!::r=live/enc,m=request"
        wrong = await reject_code(client, gw.port, request, passphrase="not-the-secret")
        missing = await reject_code(client, gw.port, request)
        assert await publisher.wait(20) == 0, publisher.stderr()
        assert await viewer.wait(15) == 0, viewer.stderr()
        wrong_ffmpeg = procs.start(
            "pull-wrong",
            ffmpeg_pull_argv(gw.port, request, tmp_path / "wrong.ts", passphrase="wrong-secret-1"),
        )
        assert await wrong_ffmpeg.wait(15) != 0
    # libsrt refuses these itself (after our callback): 10 = BADSECRET, 11 = UNSECURE.
    assert wrong == 10
    assert missing == 11
    decoded = decode_video(out)
    assert decoded.first_is_keyframe
    assert decoded.errors == 0
    assert decoded.frames > 60


async def test_hook_chooses_the_passphrase_per_stream(client: SrtReactor, procs: Procs) -> None:
    async def auth(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        if request.resource.startswith("vip/"):
            return AuthDecision(tier="vip", passphrase=f"key-for-{request.resource}")
        return AuthDecision()

    async with run_gateway(auth=auth) as gw:  # the server itself has no passphrase
        assert await reject_code(client, gw.port, "#!::r=vip/a,m=publish") == 11
        assert await reject_code(client, gw.port, "#!::r=vip/a,m=publish", "key-for-vip/b") == 10
        async with asyncio.timeout(10):
            conn = await client.connect(
                HOST,
                gw.port,
                SrtOptions(stream_id="#!::r=vip/a,m=publish", passphrase="key-for-vip/a"),
            )
            plain = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=free/a,m=publish")
            )
        conn.close()
        plain.close()
        publisher = procs.start(
            "publish",
            ffmpeg_publish_argv(
                gw.port, "#!::r=vip/cam,m=publish", realtime=False, passphrase="key-for-vip/cam"
            ),
        )
        assert await publisher.wait(20) == 0, publisher.stderr()
        records = await gw.wait_records(
            1, 10, lambda r: r.path == "vip/cam" and r.role == "ingress"
        )
    assert records[0].tier == "vip"
    assert records[0].frames > 0
