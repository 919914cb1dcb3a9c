"""The gateway survives a publisher that vanishes and a crowd of garbage callers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.srt import SrtOptions, SrtReactor, SrtRejected
from tests.integration.conftest import (
    HOST,
    Procs,
    decode_video,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    frames_in_last,
    poll_until,
    run_gateway,
)

PUBLISH = "#!::r=live/r1,m=publish"
REQUEST = "#!::r=live/r1,m=request"


@pytest.fixture
async def client() -> AsyncIterator[SrtReactor]:
    async with SrtReactor() as reactor:
        yield reactor


async def test_publisher_killed_mid_gop_ends_viewers_cleanly_and_the_gateway_keeps_serving(
    procs: Procs, tmp_path: Path
) -> None:
    async with run_gateway(peer_idle_timeout_ms=1500) as gw:
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, PUBLISH))
        await gw.wait_live("live/r1", 10)
        # Viewers wait for data longer than libsrt takes to declare the publisher lost (about
        # 5 s: its peer-idle check needs 16 expiry rounds too), so the gateway ends them.
        viewers = [
            procs.start(
                f"pull{i}",
                ffmpeg_pull_argv(gw.port, REQUEST, tmp_path / f"v{i}.ts", silence_s=15),
            )
            for i in range(2)
        ]
        await poll_until(lambda: gw.server.sessions == 3, 10)
        # Keyframes every 2 s of media: 3.1 s in is the middle of the second GOP.
        await asyncio.sleep(3.1)
        assert publisher.running()
        publisher.kill()  # SIGKILL: no SRT shutdown, the gateway finds out by silence
        records = await gw.wait_records(3, 15)
        ingress = next(r for r in records if r.role == "ingress")
        assert ingress.outcome == "error"
        assert "lost" in ingress.error
        assert not gw.origin.is_live("live/r1")
        egress = [r for r in records if r.role == "egress"]
        assert [r.outcome for r in egress] == ["error", "error"]  # the broadcast aborted
        for viewer in viewers:
            await viewer.wait(10)  # the gateway closed them: they end by themselves

        # Same path, new publisher and viewer: served as if nothing happened.
        again = procs.start(
            "publish-again", ffmpeg_publish_argv(gw.port, PUBLISH, extra=["-t", "3"])
        )
        await gw.wait_live("live/r1", 10)
        viewer = procs.start("pull-again", ffmpeg_pull_argv(gw.port, REQUEST, tmp_path / "a.ts"))
        assert await again.wait(20) == 0, again.stderr()
        assert await viewer.wait(15) == 0, viewer.stderr()

    for i in range(2):
        decoded = decode_video(tmp_path / f"v{i}.ts")
        assert decoded.first_is_keyframe
        assert decoded.errors == 0
        assert decoded.frames > 0
    again_decoded = decode_video(tmp_path / "a.ts")
    assert again_decoded.first_is_keyframe
    assert again_decoded.errors == 0
    assert again_decoded.frames > 30


def garbage_ids(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    fixed = [
        "",
        "#!::",
        "#!::m=publish",
        "#!::r=..,m=request",
        "a//b",
        "#!::r=x,m=nope",
        "publish:",
        "read::u:p",
        "#!::r=a/./b",
        "#!::r,m=publish",
        "#!::" + "x" * 508,  # 512 characters, no resource
    ]
    out = list(fixed)
    while len(out) < count:
        junk = "".join(rng.choice("#!:=,/.\x01\x7f ab") for _ in range(rng.randint(1, 40)))
        out.append(junk if "\x01" in junk or "\x7f" in junk else "#!::r=" + junk + ",m=x")
    return out[:count]


# CPU-heavy (a hundred callers at once): never beside another such test under xdist.
@pytest.mark.xdist_group("cpu_heavy")
async def test_a_hundred_garbage_callers_are_refused_while_a_stream_keeps_flowing(
    client: SrtReactor, procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "pulled.ts"
    ids = garbage_ids(100)
    async with run_gateway() as gw:
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, PUBLISH, extra=["-t", "6"]))
        await gw.wait_live("live/r1", 10)
        viewer = procs.start("pull", ffmpeg_pull_argv(gw.port, REQUEST, out))
        await poll_until(lambda: gw.server.sessions == 2, 10)

        async def attempt(n: int, stream_id: str) -> int:
            # From 25 addresses: one address may start 40 handshakes at once (then 1402).
            local = (f"127.0.9.{n % 25 + 1}", 0)
            try:
                async with asyncio.timeout(15):
                    conn = await client.connect(
                        HOST, gw.port, SrtOptions(stream_id=stream_id), local=local
                    )
            except SrtRejected as exc:
                return exc.reject_code
            conn.close()
            return 0

        codes = await asyncio.gather(*(attempt(n, i) for n, i in enumerate(ids)))
        assert codes == [1400] * len(ids)
        assert gw.server.rejected == len(ids)
        assert await publisher.wait(20) == 0, publisher.stderr()
        assert await viewer.wait(15) == 0, viewer.stderr()
        records = await gw.wait_records(2, 10)

    assert {r.outcome for r in records} == {"eof"}
    egress = next(r for r in records if r.role == "egress")
    assert egress.skipped_bytes == 0
    decoded = decode_video(out)
    assert decoded.first_is_keyframe
    assert decoded.errors == 0
    # The viewer joined at once and stayed to the end of a 6 s publish (180 frames at 30 fps).
    expected = frames_in_last(decoded.span())
    assert decoded.frames >= 0.9 * min(expected, 180)
    assert decoded.frames >= 0.9 * 150
