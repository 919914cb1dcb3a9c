"""The operator's HTTP surface against a real gateway: ffmpeg publishes and pulls over SRT,
`/metrics` (parsed by prometheus_client) equals the stats snapshot and PyAV's counts, the API
lists the broadcast with its catalog tracks and viewer, DELETE ends a real ffmpeg viewer, and
`moqsrt serve` bound to 0.0.0.0 requires its bearer token (clients connect to 127.0.0.1 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import av
import moq
from prometheus_client.parser import text_string_to_metric_families

from gateway.http import GatewaySources, HttpService
from tests.integration.conftest import (
    FIXTURE,
    HOST,
    ROOT,
    Gateway,
    Procs,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    poll_until,
    run_gateway,
)
from tests.integration.moq_helpers import run_moq
from tests.media import expected_counts

PUBLISH = "#!::r=live/h1,m=publish"
REQUEST = "#!::r=live/h1,m=request"
TOKEN = "integration-token-0123456789"


@contextlib.asynccontextmanager
async def http_for(gw: Gateway, *, path_labels: bool = True) -> AsyncIterator[HttpService]:
    """The HTTP surface of `gw` on a free loopback port; its records also reach the API."""
    sources = GatewaySources(gw.origin, gw.stats)
    sources.add_srt(gw.server)
    # As `moqsrt serve` does, the sources keep the servers' records (for the recent sessions).
    config = gw.server.config
    gw.server.config = replace(config, sinks=(*config.sinks, sources.record_session))
    async with await HttpService.bind(HOST, 0, sources, path_labels=path_labels) as service:
        yield service


async def request(method: str, port: int, path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        asyncio.timeout(10),
        aiohttp.ClientSession() as client,
        client.request(method, f"http://{HOST}:{port}{path}", headers=headers) as response,
    ):
        return response.status, await response.text()


async def get_json(port: int, path: str, token: str | None = None) -> Any:
    status, text = await request("GET", port, path, token)
    assert status == 200, (status, text)
    return json.loads(text)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def media_packets(path: Path) -> int:
    """Audio and video packets PyAV demuxes from `path` (what a viewer received)."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        return sum(1 for p in container.demux(*streams) if p.size)


async def test_metrics_equal_the_snapshot_and_pyav_counts_after_an_ffmpeg_publish_and_pull(
    procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "pulled.ts"
    async with run_gateway() as gw, http_for(gw) as http:
        viewer = procs.start("pull", ffmpeg_pull_argv(gw.port, REQUEST, out))
        await poll_until(lambda: gw.server.sessions == 1, 10)
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, PUBLISH))
        await gw.wait_live("live/h1", 10)

        # While live: the API lists the broadcast, its catalog tracks, publisher and viewer.
        async def catalog_listed() -> dict[str, Any]:
            while True:
                listed = (await get_json(http.port, "/api/v1/broadcasts"))["broadcasts"]
                if listed and listed[0]["tracks"] and listed[0]["bitrate_bps"]:
                    return dict(listed[0])
                await asyncio.sleep(0.2)

        async with asyncio.timeout(10):
            broadcast = await catalog_listed()
        sessions = (await get_json(http.port, "/api/v1/sessions"))["live"]
        assert publisher.running()

        assert await publisher.wait(30) == 0, publisher.stderr()
        assert await viewer.wait(15) == 0, viewer.stderr()
        await gw.wait_records(2, 10)
        _, text = await request("GET", http.port, "/metrics")
        snapshot = gw.stats.snapshot()

    counts = expected_counts(FIXTURE)  # PyAV, independent of mux/
    kinds = sorted(c.kind for c in counts.values())
    assert broadcast["path"] == "live/h1"
    assert len(broadcast["tracks"]) == len(kinds) == 2
    renditions = broadcast["catalog"]
    assert [r["codec"][:4] for r in renditions["video"]["renditions"].values()] == ["avc3"]
    assert [r["codec"][:4] for r in renditions["audio"]["renditions"].values()] == ["mp4a"]
    assert set(broadcast["tracks"]) == set(renditions["video"]["renditions"]) | set(
        renditions["audio"]["renditions"]
    )
    assert broadcast["publisher"]["protocol"] == "srt"
    assert broadcast["viewers"] == {"srt": 1, "moq": 0}
    # The fixture is ~0.6 Mbit/s of payload; played in real time the rate is of that order.
    assert 100_000 < broadcast["bitrate_bps"] < 5_000_000
    assert sorted(s["role"] for s in sessions) == ["egress", "ingress"]

    metrics = metric_samples(text)
    assert len(snapshot) == 2
    for entry in snapshot:
        labels = {"node": "test-node", "path": entry.path, "tier": entry.tier, "role": entry.role}
        for name in ("groups", "frames", "bytes"):
            key = (f"moqsrt_{name}_total", tuple(sorted(labels.items())))
            assert metrics[key] == getattr(entry, name), (name, entry)
    by_role = {e.role: e for e in snapshot}
    # Ingress: every frame of the file once (PyAV's count) plus the catalog's one frame/group.
    assert by_role["ingress"].frames == sum(c.frames for c in counts.values()) + 1
    assert by_role["ingress"].groups == sum(c.groups for c in counts.values()) + 1
    # Egress: what the viewer received, demuxed by PyAV, is what it was billed for, give or
    # take the catalog (not carried in TS) and a live link's last few frames.
    received = media_packets(out)
    egress_frames = by_role["egress"].frames
    assert received <= egress_frames
    assert received >= 0.95 * egress_frames


async def test_delete_kicks_a_real_ffmpeg_viewer_which_sees_the_end(
    procs: Procs, tmp_path: Path
) -> None:
    async with run_gateway() as gw, http_for(gw) as http:
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, PUBLISH))
        await gw.wait_live("live/h1", 10)
        # It would wait 30 s for data that stops coming; only a closed connection ends it soon.
        viewer = procs.start(
            "pull", ffmpeg_pull_argv(gw.port, REQUEST, tmp_path / "v.ts", silence_s=30)
        )
        await poll_until(lambda: gw.server.sessions == 2, 10)

        async def viewer_session() -> str:
            while True:
                live = (await get_json(http.port, "/api/v1/sessions"))["live"]
                for s in live:
                    if s["role"] == "egress" and s["path"] == "live/h1" and s["frames"] > 0:
                        return str(s["session"])
                await asyncio.sleep(0.1)

        async with asyncio.timeout(10):
            session = await viewer_session()
        status, _ = await request("DELETE", http.port, f"/api/v1/sessions/{session}")
        assert status == 204
        await viewer.wait(10)  # the ffmpeg process saw its input end
        assert publisher.running()  # it was the kick, not the broadcast's end
        (record,) = await gw.wait_records(1, 10, where=lambda r: r.session == session)
        assert (record.outcome, record.error) == ("closed", "closed by operator")
        recent = (await get_json(http.port, "/api/v1/sessions"))["recent"]
        assert session in [r["session"] for r in recent]
        live = (await get_json(http.port, "/api/v1/sessions"))["live"]
        assert session not in [s["session"] for s in live]
        status, _ = await request("DELETE", http.port, f"/api/v1/sessions/{session}")
        assert status == 404
        publisher.stop()


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def test_serve_bound_to_0_0_0_0_requires_the_bearer_token(
    procs: Procs, tmp_path: Path
) -> None:
    srt_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--srt",
        f"{HOST}:{srt_port}",
        "--http",
        f"0.0.0.0:{http_port}",
        "--moq",
        "off",  # its default 0.0.0.0:4443 may be taken on a shared machine
        "--log-format",
        "json",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MOQSRT_HTTP_TOKEN"}
    refused = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _, refusal = await refused.communicate()
    assert refused.returncode == 2
    assert b"http_token" in refusal

    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        server = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env={**env, "MOQSRT_HTTP_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        async def listening() -> None:
            while True:
                with contextlib.suppress(OSError):
                    await request("GET", http_port, "/metrics")
                    return
                await asyncio.sleep(0.1)

        async with asyncio.timeout(20):
            await listening()
        for path in ("/metrics", "/api/v1/broadcasts", "/api/v1/sessions"):
            status, _ = await request("GET", http_port, path)
            assert status == 401, path
            status, _ = await request("GET", http_port, path, token="not-" + TOKEN)
            assert status == 401, path
        publisher = procs.start("publish", ffmpeg_publish_argv(srt_port, PUBLISH))

        async def broadcast_listed() -> list[Any]:
            while True:
                listed = (await get_json(http_port, "/api/v1/broadcasts", TOKEN))["broadcasts"]
                if listed:
                    return list(listed)
                await asyncio.sleep(0.2)

        async with asyncio.timeout(15):
            listed = await broadcast_listed()
        assert listed[0]["path"] == "live/h1"
        status, text = await request("GET", http_port, "/metrics", TOKEN)
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"moqsrt_bytes", "moqsrt_live_sessions"} <= names
        assert TOKEN not in stderr_path.read_text()
        publisher.stop()
    finally:
        if server.returncode is None:
            server.terminate()  # SIGTERM: serve closes its sessions and exits 0
        try:
            async with asyncio.timeout(15):
                await server.wait()
        except TimeoutError:
            server.kill()
            await server.wait()
    assert server.returncode == 0, stderr_path.read_text()[-2000:]


async def test_a_moq_rs_viewer_is_listed_counted_and_kicked(procs: Procs) -> None:
    async with run_gateway() as gw, run_moq(gw.origin, gw.stats) as mq, http_for(gw) as http:
        http.sources.add_moq(mq.server)
        publisher = procs.start("publish", ffmpeg_publish_argv(gw.port, PUBLISH))
        await gw.wait_live("live/h1", 10)
        received = 0

        async with asyncio.timeout(30), mq.client("quic") as client:
            announced = client.announced()
            async for update in announced:
                if update.active and update.prefix == "live/h1":
                    break
            announced.cancel()
            broadcast = await client.request_broadcast("live/h1")
            catalog = await broadcast.catalog()
            (name,) = catalog.video
            consumer = await broadcast.subscribe_media(
                name, catalog.video[name], moq.Subscription(max_age_us=60_000_000)
            )

            async def watch() -> None:
                nonlocal received
                with contextlib.suppress(Exception):  # a closed session may end it either way
                    async for _ in consumer:
                        received += 1

            watcher = asyncio.create_task(watch())

            async def moq_session() -> dict[str, Any]:
                while True:
                    live = (await get_json(http.port, "/api/v1/sessions"))["live"]
                    for s in live:
                        if s["protocol"] == "moq" and s["frames"] > 0:
                            return dict(s)
                    await asyncio.sleep(0.1)

            session = await moq_session()
            listed = (await get_json(http.port, "/api/v1/broadcasts"))["broadcasts"]
            assert listed[0]["viewers"] == {"srt": 0, "moq": 1}
            assert session["paths"] == ["live/h1"]
            _, text = await request("GET", http.port, "/metrics")
            sessions_metric = (
                "moqsrt_moq_sessions",
                (("node", "test-node"), ("transport", "quic")),
            )
            assert metric_samples(text)[sessions_metric] == 1
            status, _ = await request("DELETE", http.port, f"/api/v1/sessions/{session['session']}")
            assert status == 204
            await watcher  # the client's subscription ends with the session
            assert publisher.running()  # it was the kick, not the broadcast's end
        assert received > 0
        async with asyncio.timeout(10):
            while not mq.records:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert mq.records[0].session == session["session"]
        assert mq.records[0].frames >= received
        publisher.stop()
