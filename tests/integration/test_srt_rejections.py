"""Callers refused at handshake see the SRT rejection code; late refusals close the link."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import AuthDecision, StreamRequest
from gateway.srt import SrtOptions, SrtReactor, SrtRejected
from tests.integration.conftest import (
    HOST,
    Procs,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    run_gateway,
)


@pytest.fixture
async def client() -> AsyncIterator[SrtReactor]:
    """An SRT caller side of our own, to read the rejection code libsrt reports."""
    async with SrtReactor() as reactor:
        yield reactor


async def reject_code(
    client: SrtReactor, port: int, stream_id: str, passphrase: str | None = None
) -> int:
    """Connect as a caller and return the code the listener refused us with."""
    options = SrtOptions(stream_id=stream_id, passphrase=passphrase)
    try:
        async with asyncio.timeout(10):
            conn = await client.connect(HOST, port, options)
    except SrtRejected as exc:
        return exc.reject_code
    conn.close()
    raise AssertionError(f"{stream_id!r} was accepted")


@pytest.mark.parametrize(
    "stream_id",
    ["", "#!::", "#!::m=publish", "#!::r=live/../../x,m=publish", "#!::r=a,m=play", "a//b"],
)
async def test_bad_stream_id_is_refused_with_1400(client: SrtReactor, stream_id: str) -> None:
    async with run_gateway() as gw:
        assert await reject_code(client, gw.port, stream_id) == 1400
        assert gw.server.rejected == 1
    assert gw.records == []


async def test_ffmpeg_publisher_with_a_bad_stream_id_fails(procs: Procs) -> None:
    async with run_gateway() as gw:
        publisher = procs.start(
            "publish", ffmpeg_publish_argv(gw.port, "#!::r=../escape,m=publish", realtime=False)
        )
        assert await publisher.wait(15) != 0
        assert gw.server.rejected == 1
        assert gw.origin.paths() == []


async def test_authorization_hook_refusal_reaches_the_caller(client: SrtReactor) -> None:
    async def auth(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        if request.user == "":
            return AuthDecision(accept=False, code=1401)
        return AuthDecision(accept=request.user == "alice")  # 1403 otherwise

    async with run_gateway(auth=auth) as gw:
        assert await reject_code(client, gw.port, "#!::r=live/a,m=publish") == 1401
        assert await reject_code(client, gw.port, "#!::r=live/a,m=publish,u=eve") == 1403
        async with asyncio.timeout(10):
            conn = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=live/a,m=publish,u=alice")
            )
        conn.close()


async def test_second_publisher_on_a_live_path_is_refused_with_1409(
    client: SrtReactor, procs: Procs
) -> None:
    async with run_gateway() as gw:
        async with asyncio.timeout(10):
            first = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=live/one,m=publish")
            )
        try:
            await gw.wait_live("live/one", 5)
            assert await reject_code(client, gw.port, "#!::r=live/one,m=publish") == 1409
            assert await reject_code(client, gw.port, "publish:live/one") == 1409
            second = procs.start(
                "publish", ffmpeg_publish_argv(gw.port, "#!::r=live/one,m=publish")
            )
            assert await second.wait(15) != 0
            # Viewers are welcome, and another path is free.
            async with asyncio.timeout(10):
                viewer = await client.connect(
                    HOST, gw.port, SrtOptions(stream_id="#!::r=live/one,m=request")
                )
                other = await client.connect(
                    HOST, gw.port, SrtOptions(stream_id="#!::r=live/two,m=publish")
                )
            viewer.close()
            other.close()
        finally:
            first.close()
        # Once the first publisher has gone, the path is free again.
        await gw.wait_records(1, 10, lambda r: r.role == "ingress" and r.path == "live/one")
        async with asyncio.timeout(10):
            again = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=live/one,m=publish")
            )
        again.close()


async def test_request_for_a_missing_path_is_refused_with_1404_when_not_waiting(
    client: SrtReactor,
) -> None:
    async with run_gateway(request_timeout_s=0) as gw:
        assert await reject_code(client, gw.port, "#!::r=live/none,m=request") == 1404


async def test_request_for_a_missing_path_is_closed_after_the_timeout(
    client: SrtReactor, procs: Procs, tmp_path: Path
) -> None:
    async with run_gateway(request_timeout_s=1.0) as gw:
        async with asyncio.timeout(10):
            conn = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=live/none,m=request")
            )
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(6):
                assert await conn.recv_batch() == []
            assert 0.8 <= loop.time() - started <= 5
        finally:
            conn.close()
        out = tmp_path / "none.ts"
        viewer = procs.start("pull", ffmpeg_pull_argv(gw.port, "#!::r=live/none,m=request", out))
        assert await viewer.wait(15) != 0
        records = await gw.wait_records(2, 10)
    assert [r.outcome for r in records] == ["timeout", "timeout"]
    assert all(r.frames == 0 and r.path == "live/none" for r in records)


async def test_publisher_above_the_bitrate_cap_is_disconnected(procs: Procs) -> None:
    # The fixture runs at about 580 kbit/s; the cap is a third of that.
    async with run_gateway(publish_cap_bps=200_000) as gw:
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, "#!::r=live/fat"))
        records = await gw.wait_records(1, 15)
        assert await publisher.wait(15) != 0
    assert records[0].outcome == "error"
    assert "cap" in records[0].error
    # Two seconds of burst plus the sustained rate, not the whole file.
    assert 0 < records[0].ts_bytes < 300_000


async def test_viewer_hanging_up_while_waiting_for_its_broadcast_is_noticed(
    client: SrtReactor,
) -> None:
    async with run_gateway(request_timeout_s=30) as gw:
        async with asyncio.timeout(10):
            conn = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=live/later,m=request")
            )
        await asyncio.sleep(0.3)
        conn.close()
        loop = asyncio.get_running_loop()
        hung_up = loop.time()
        records = await gw.wait_records(1, 10)
        assert loop.time() - hung_up < 5  # not the 30 s request timeout
    assert records[0].outcome == "eof"
    assert "left" in records[0].error
