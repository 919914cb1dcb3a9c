"""The embedding API with our own SRT callers: `run()`, takeover, and closing the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from gateway import Server, ServerConfig, SessionRecord, run
from gateway.srt import SrtConnection, SrtOptions, SrtReactor, SrtRejected
from model import Origin, PublisherPolicy, StatsHandle
from tests.integration.conftest import (
    FIXTURE,
    HOST,
    assert_arrived,
    decode_video,
    poll_until,
    run_gateway,
)
from tests.media import expected_counts

CHUNK = 1316


@pytest.fixture
async def client() -> AsyncIterator[SrtReactor]:
    async with SrtReactor() as reactor:
        yield reactor


async def send_file(conn: SrtConnection, data: bytes, rate_bytes_s: float) -> None:
    """Send `data` in 1316-byte messages at about `rate_bytes_s` (retrying a full buffer)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for offset in range(0, len(data), CHUNK):
        message = data[offset : offset + CHUNK]
        await poll_until(lambda: conn.send(message), 5, every_s=0.005)  # noqa: B023
        due = start + (offset + CHUNK) / rate_bytes_s
        if due > loop.time():
            await asyncio.sleep(due - loop.time())


async def receive_all(conn: SrtConnection, timeout_s: float) -> bytes:
    received = bytearray()
    async with asyncio.timeout(timeout_s):
        while batch := await conn.recv_batch():
            received += b"".join(batch)
    return bytes(received)


async def test_run_serves_a_publisher_and_a_viewer(client: SrtReactor, tmp_path: Path) -> None:
    origin = Origin()
    stats = StatsHandle("embedded")
    records: list[SessionRecord] = []
    servers: list[Server] = []
    config = ServerConfig(listen=(HOST, 0), sinks=(records.append,), latency_ms=80)
    task = asyncio.create_task(run(origin, config, stats=stats, ready=servers.append))
    try:
        await poll_until(lambda: bool(servers), 5)
        port = servers[0].port
        async with asyncio.timeout(10):
            viewer = await client.connect(
                HOST, port, SrtOptions(stream_id="#!::r=live/e,m=request")
            )
            publisher = await client.connect(
                HOST, port, SrtOptions(stream_id="#!::r=live/e,m=publish", linger_s=2)
            )
        data = FIXTURE.read_bytes()
        receiving = asyncio.create_task(receive_all(viewer, 30))
        await send_file(publisher, data, rate_bytes_s=len(data) / 2.5)  # 4x real time
        publisher.close()
        received = await receiving
        viewer.close()
        await poll_until(lambda: len(records) == 2, 10)
    finally:
        task.cancel()
        async with asyncio.timeout(15):
            await asyncio.gather(task, return_exceptions=True)

    ingress = next(r for r in records if r.role == "ingress")
    egress = next(r for r in records if r.role == "egress")
    counts = expected_counts(FIXTURE)
    assert ingress.frames == sum(c.frames for c in counts.values()) + 1
    assert ingress.groups == sum(c.groups for c in counts.values()) + 1
    assert ingress.ts_bytes == len(data)
    assert ingress.node == egress.node == "embedded"
    assert len(received) > 0
    assert_arrived(len(received), egress)
    snapshot = {(e.path, e.role): e for e in stats.snapshot()}
    assert snapshot[("live/e", "ingress")].frames == ingress.frames
    assert snapshot[("live/e", "egress")].bytes == egress.bytes
    out = tmp_path / "received.ts"
    out.write_bytes(received)
    decoded = decode_video(out)
    assert decoded.first_is_keyframe
    assert decoded.errors == 0
    assert decoded.frames > 0


async def test_takeover_policy_replaces_and_disconnects_the_old_publisher(
    client: SrtReactor,
) -> None:
    async with run_gateway(publisher_policy=PublisherPolicy.TAKEOVER) as gw:
        options = SrtOptions(stream_id="#!::r=live/t,m=publish")
        async with asyncio.timeout(10):
            old = await client.connect(HOST, gw.port, options)
            await gw.wait_live("live/t", 5)
            first = gw.origin.get("live/t")
            new = await client.connect(HOST, gw.port, options)
        try:
            records = await gw.wait_records(1, 10)
            assert records[0].outcome == "closed"
            assert records[0].role == "ingress"
            async with asyncio.timeout(10):
                await old.wait_closed()
            current = gw.origin.get("live/t")
            assert first is not None
            assert current is not None
            assert not current.same_broadcast(first)
        finally:
            old.close()
            new.close()


async def test_closing_the_server_ends_every_session_with_a_record(client: SrtReactor) -> None:
    async with run_gateway() as gw:
        async with asyncio.timeout(10):
            publisher = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=live/c,m=publish")
            )
            viewer = await client.connect(
                HOST, gw.port, SrtOptions(stream_id="#!::r=live/c,m=request")
            )
        try:
            publisher.send(FIXTURE.read_bytes()[:CHUNK])
            await poll_until(lambda: gw.server.sessions == 2, 10)
            async with asyncio.timeout(10):
                await gw.server.aclose()
            assert sorted(r.outcome for r in gw.records) == ["closed", "closed"]
            assert gw.server.sessions == 0
            assert not gw.origin.is_live("live/c")
            async with asyncio.timeout(10):
                await viewer.wait_closed()
                await publisher.wait_closed()
        finally:
            publisher.close()
            viewer.close()


async def test_embedder_loop_accepts_into_its_own_path_and_rejects_after_the_handshake(
    client: SrtReactor,
) -> None:
    origin = Origin()
    stats = StatsHandle("loop")
    results: list[SessionRecord] = []
    async with await Server.bind((HOST, 0), latency_ms=80, prefix="live") as server:
        server.with_stats(stats)

        async def embedder() -> None:
            async with asyncio.TaskGroup() as tasks:
                async for request in server:
                    assert request.path == "live/" + request.resource
                    if request.user == "banned":
                        request.reject(1403)
                        continue
                    target = f"tenant-a/{request.resource}"
                    tasks.create_task(_collect(request.accept(origin, target), results))

        loop_task = asyncio.create_task(embedder())
        try:
            async with asyncio.timeout(10):
                try:
                    banned = await client.connect(
                        HOST, server.port, SrtOptions(stream_id="#!::r=cam,m=request,u=banned")
                    )
                except SrtRejected:
                    pass  # our close overtook the caller's last handshake step (a loaded host)
                else:
                    assert await banned.recv_batch() == []  # closed right after the handshake
                    banned.close()
                publisher = await client.connect(
                    HOST, server.port, SrtOptions(stream_id="#!::r=cam,m=publish")
                )
                await poll_until(lambda: origin.is_live("tenant-a/cam"), 5)
            publisher.close()
            await poll_until(lambda: len(results) == 1, 10)
        finally:
            await server.aclose()
            async with asyncio.timeout(10):
                await asyncio.gather(loop_task, return_exceptions=True)
    assert results[0].path == "tenant-a/cam"
    assert results[0].role == "ingress"
    assert [e.path for e in stats.snapshot()] == ["tenant-a/cam"]


async def _collect(record: Awaitable[SessionRecord], into: list[SessionRecord]) -> None:
    into.append(await record)
