"""The webhook sink: signed POSTs of session records from the ledger, in order, retried with
backoff until the receiver takes them, resumed from the ledger's cursor after a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.ledger import Ledger
from gateway.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSink, redact_url, sign, verify
from tests.unit.gateway.test_ledger import session

SECRET = b"s3cret-for-tests"


class Receiver:
    """An aiohttp receiver on 127.0.0.1 that fails the first `fail` requests with 503."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.valid: list[bool] = []
        self.deliveries: list[str] = []
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.fail:
            return web.Response(status=503)
        body = await request.read()
        self.valid.append(verify(SECRET, body, request.headers.get(SIGNATURE_HEADER)))
        self.deliveries.append(request.headers.get(DELIVERY_HEADER, ""))
        self.bodies.append(json.loads(body))
        self.got.set()
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rx = Receiver(fail=2)
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rx, f"http://127.0.0.1:{port}/hook?token=abc"
    finally:
        await runner.cleanup()


def test_signatures_verify_only_with_the_secret_and_the_exact_body() -> None:
    header = sign(SECRET, b'{"a":1}')
    assert header.startswith("sha256=")
    assert verify(SECRET, b'{"a":1}', header)
    assert not verify(SECRET, b'{"a":2}', header)
    assert not verify(b"other", b'{"a":1}', header)
    assert not verify(SECRET, b'{"a":1}', None)


def test_urls_are_redacted_and_the_secret_never_shows() -> None:
    assert redact_url("https://u:pw@example.com:8443/h?token=x") == "https://example.com:8443/h"


async def test_bad_urls_and_empty_secrets_are_refused(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.sqlite3") as ledger:
        with pytest.raises(ValueError, match="http"):
            WebhookSink(ledger, "ftp://example.com/", SECRET)
        with pytest.raises(ValueError, match="secret"):
            WebhookSink(ledger, "http://example.com/", b"")
        sink = WebhookSink(ledger, "http://example.com/h?token=t", SECRET)
        assert "token" not in repr(sink)
        assert SECRET.decode() not in repr(sink)


async def test_records_arrive_signed_in_order_once_after_retries_and_resume_after_restart(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rx, url = receiver
    db = tmp_path / "l.sqlite3"
    async with await Ledger.open(db) as ledger:
        sink = WebhookSink(ledger, url, SECRET, backoff_min_s=0.01, backoff_max_s=0.05)
        task = asyncio.create_task(sink.run())
        try:
            for i in range(3):
                ledger.record_session(session(f"s{i}"))
            await ledger.flush()
            async with asyncio.timeout(10):
                while len(rx.bodies) < 3:
                    rx.got.clear()
                    await rx.got.wait()
        finally:
            await sink.stop()
            async with asyncio.timeout(5):
                await task
    assert rx.requests == 2 + 3  # two refused, then each record once
    assert sink.attempts_failed == 2
    assert [b["session"] for b in rx.bodies] == ["s0", "s1", "s2"]
    assert [b["seq"] for b in rx.bodies] == sorted(b["seq"] for b in rx.bodies)
    assert all(rx.valid)
    assert rx.deliveries == ["gw-1/s0", "gw-1/s1", "gw-1/s2"]
    assert rx.bodies[0]["record"]["transport"] == "quic"  # the whole record travels
    assert rx.bodies[0]["frames"] == 10

    # A new process: the cursor lives in the ledger, so only the new record is sent.
    async with await Ledger.open(db) as ledger:
        sink = WebhookSink(ledger, url, SECRET, backoff_min_s=0.01, poll_s=0.05)
        task = asyncio.create_task(sink.run())
        try:
            ledger.record_session(session("s3"))
            await ledger.flush()
            async with asyncio.timeout(10):
                while len(rx.bodies) < 4:
                    rx.got.clear()
                    await rx.got.wait()
            await asyncio.sleep(0.2)  # a few polls: nothing else may come
        finally:
            await sink.stop()
            async with asyncio.timeout(5):
                await task
    assert [b["session"] for b in rx.bodies] == ["s0", "s1", "s2", "s3"]
