"""The webhook against real SRT sessions: a local aiohttp receiver gets every final session
record exactly once, signed, in ledger order, including records that ended while it was down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import Server, ServerConfig, SessionRecord
from gateway.ledger import Ledger
from gateway.ledger_db import LedgerReader
from gateway.webhook import SIGNATURE_HEADER, WebhookSink, verify
from model import Origin, StatsHandle
from tests.integration.conftest import (
    HOST,
    Procs,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    poll_until,
)

SECRET = b"integration-webhook-secret"


class Receiver:
    """An aiohttp app on a fixed port that can be stopped and started again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[dict[str, Any]] = []
        self.signed: list[bool] = []
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.signed.append(verify(SECRET, body, request.headers.get(SIGNATURE_HEADER)))
        self.bodies.append(json.loads(body))
        return web.Response(status=200, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/usage", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


async def publish_and_pull(procs: Procs, port: int, name: str, tmp_path: Path) -> None:
    """One whole ffmpeg publish of the fixture (faster than real time) with one ffmpeg viewer."""
    viewer = procs.start(
        f"pull-{name}",
        ffmpeg_pull_argv(port, f"#!::r=live/{name},m=request", tmp_path / f"{name}.ts"),
    )
    await asyncio.sleep(0.5)
    publisher = procs.start(
        f"publish-{name}",
        ffmpeg_publish_argv(port, f"#!::r=live/{name},m=publish", realtime=False),
    )
    assert await publisher.wait(30) == 0, publisher.stderr()
    assert await viewer.wait(20) == 0, viewer.stderr()


async def test_webhook_receiver_gets_every_session_record_once_even_those_ended_while_down(
    procs: Procs, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.sqlite3"
    receiver = Receiver(free_tcp_port())
    await receiver.start()
    origin, stats = Origin(), StatsHandle("hook-node")
    records: list[SessionRecord] = []
    ledger = await Ledger.open(db, stats, interval_s=0.2)
    url = f"http://{HOST}:{receiver.port}/usage"
    webhook = WebhookSink(ledger, url, SECRET, backoff_min_s=0.1, backoff_max_s=0.5, poll_s=0.5)
    tasks = [asyncio.create_task(ledger.run()), asyncio.create_task(webhook.run())]
    config = ServerConfig(
        listen=(HOST, 0), sinks=(records.append, ledger.record_session), peer_idle_timeout_ms=1500
    )
    server = await Server.bind(config=config, origin=origin)
    server.with_stats(stats)
    serving = asyncio.create_task(server.serve(origin))
    try:
        await publish_and_pull(procs, server.port, "up", tmp_path)
        await poll_until(lambda: len(receiver.bodies) == 2, 15)

        await receiver.stop()  # the receiver goes down; two more sessions end meanwhile
        await publish_and_pull(procs, server.port, "down", tmp_path)
        await poll_until(lambda: len(records) == 4, 10)
        await poll_until(lambda: webhook.attempts_failed >= 2, 10)  # it really tried
        assert len(receiver.bodies) == 2

        await receiver.start()  # back: the missed records arrive, then nothing more
        await poll_until(lambda: len(receiver.bodies) == 4, 15)
        await asyncio.sleep(1.5)
    finally:
        serving.cancel()
        async with asyncio.timeout(15):
            await asyncio.gather(serving, return_exceptions=True)
        await server.aclose()
        await webhook.stop()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks[1:], return_exceptions=True)
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        await ledger.aclose()
        await receiver.stop()

    assert all(receiver.signed)
    sessions = [b["session"] for b in receiver.bodies]
    assert sorted(sessions) == sorted(r.session for r in records)  # each once, none missing
    assert len(set(sessions)) == 4
    seqs = [b["seq"] for b in receiver.bodies]
    assert seqs == sorted(seqs)  # ledger order
    with LedgerReader(db) as reader:
        stored = reader.sessions()
    assert [s.seq for s in stored] == seqs
    by_session = {r.session: r for r in records}
    for body in receiver.bodies:
        record = by_session[body["session"]]
        assert (body["node"], body["path"], body["role"]) == ("hook-node", record.path, record.role)
        assert (body["groups"], body["frames"], body["bytes"]) == (
            record.groups,
            record.frames,
            record.bytes,
        )
        assert body["record"]["ts_bytes"] == record.ts_bytes
    assert {b["path"] for b in receiver.bodies} == {"live/up", "live/down"}


async def test_moqsrt_serve_posts_session_records_to_the_configured_webhook(
    procs: Procs, tmp_path: Path
) -> None:
    from tests.integration.test_ledger import start_serve

    receiver = Receiver(free_tcp_port())
    await receiver.start()
    key = tmp_path / "hook.key"
    key.write_text(SECRET.decode() + "\n")
    db = tmp_path / "ledger.sqlite3"
    url = f"http://{HOST}:{receiver.port}/usage?token=not-for-logs"
    extra = ["--webhook-url", url, "--webhook-secret-file", str(key)]
    server, port = await start_serve(tmp_path, db, "hooked", extra=extra)
    try:
        publisher = procs.start(
            "publish", ffmpeg_publish_argv(port, "#!::r=live/w,m=publish", realtime=False)
        )
        assert await publisher.wait(30) == 0, publisher.stderr()
        await poll_until(lambda: len(receiver.bodies) == 1, 15)
        os.killpg(server.pid, signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 20) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        await receiver.stop()
    (body,) = receiver.bodies
    assert receiver.signed == [True]
    assert (body["path"], body["role"], body["node"]) == ("live/w", "ingress", "kill-node")
    with LedgerReader(db) as reader:
        (stored,) = reader.sessions()
    assert body["session"] == stored.session
    assert body["frames"] == stored.counts["frames"] > 0
    logs = (tmp_path / "hooked.err").read_text()
    assert "not-for-logs" not in logs
    assert SECRET.decode() not in logs
