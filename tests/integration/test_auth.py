"""Authorization from configuration, end to end: `moqsrt serve` (a subprocess) with a users
table and an HTTP hook (a real aiohttp endpoint in this process) decides SRT callers (libsrt
callers see the rejection code; ffmpeg publishes and plays) and MoQ WebTransport clients
(moq-rs, `?jwt=`), including a hook that is slow or down (fails closed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import moq
import pytest
from aiohttp import web

from gateway.srt import SrtOptions, SrtReactor, SrtRejected
from tests.integration.conftest import (
    HOST,
    Proc,
    Procs,
    decode_video,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    poll_until,
)
from tests.integration.test_moq_serve_cli import find

ALICE_PW = "alice-password-1"
ALICE_KEY = "alice-srt-secret"
VIEWER = "viewer-token-1"
HOOK_TOKEN = "hook-token-1"
SECRETS = (ALICE_PW, ALICE_KEY, VIEWER, HOOK_TOKEN)
USERS = f"""
[[users]]
user = "alice"
password = "{ALICE_PW}"
paths = ["live/alice"]
actions = ["publish"]
tier = "pro"
passphrase = "{ALICE_KEY}"

[[users]]
token = "{VIEWER}"
paths = ["live"]
actions = ["read"]
tier = "viewers"
"""


@dataclass
class Hook:
    """The HTTP authorization endpoint: accepts `HOOK_TOKEN` (tier `hooked`), 1401 otherwise;
    `delay_s` makes it slow."""

    url: str = ""
    delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        if self.delay_s:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delay_s):
                    await self.release.wait()
        if HOOK_TOKEN in (body["session"], body["password"], body["params"].get("jwt")):
            return web.json_response({"accept": True, "tier": "hooked"})
        return web.json_response({"accept": False, "code": 1401})


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, web.AppRunner]]:
    state = Hook()
    app = web.Application()
    app.router.add_post("/auth", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    state.url = f"http://{HOST}:{runner.addresses[0][1]}/auth"
    try:
        yield state, runner
    finally:
        state.release.set()
        await runner.cleanup()


@dataclass
class Serve:
    proc: Proc
    srt_port: int
    moq_port: int
    fingerprint: str


async def start_serve(procs: Procs, tmp_path: Path, hook_url: str) -> Serve:
    (tmp_path / "users.toml").write_text(USERS)
    config = tmp_path / "moqsrt.toml"
    config.write_text(
        f'srt = "{HOST}:0"\nmoq = "{HOST}:0"\nhttp = "off"\nledger = "off"\n'
        f'var_dir = "{tmp_path / "var"}"\n'
        f'users = "users.toml"\nauth_http_url = "{hook_url}"\n'
        'auth_http_timeout_ms = 500\nauth_cache_ms = 0\nlog_format = "json"\n'
    )
    out = tmp_path / "serve.stdout"
    with out.open("wb") as stdout:
        proc = procs.start(
            "serve",
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
            stdout=stdout,
            limit_s=120,
        )
    text = ""

    def ready() -> bool:
        nonlocal text
        assert proc.running(), proc.stderr()
        text = out.read_text()
        return "asyncio.run(main())" in text and "srt://" in text

    await poll_until(ready, 20)
    return Serve(
        proc,
        int(find(r"srt://[\d.]+:(\d+)", text)),
        int(find(r"serving MoQ on udp/(\d+)", text)),
        find(r"certificate sha256: ([0-9a-f]{64})", text),
    )


async def srt_code(port: int, stream_id: str, passphrase: str | None = None) -> int:
    """Connect with libsrt as a caller: 0 when accepted, else the code it was refused with."""
    async with SrtReactor() as client:
        try:
            async with asyncio.timeout(10):
                conn = await client.connect(
                    HOST, port, SrtOptions(stream_id=stream_id, passphrase=passphrase)
                )
        except SrtRejected as exc:
            return exc.reject_code
        conn.close()
        return 0


def records(proc: Proc) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in proc.stderr().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == "session.closed"]


async def test_srt_callers_are_decided_by_the_users_table_and_the_http_hook(
    procs: Procs, tmp_path: Path, hook: tuple[Hook, web.AppRunner]
) -> None:
    state, runner = hook
    gw = await start_serve(procs, tmp_path, state.url)
    port = gw.srt_port
    alice = f"publish:live/alice:alice:{ALICE_PW}"

    # The table: alice publishes her path (with her own passphrase), the viewer token reads.
    publisher = procs.start(
        "alice", ffmpeg_publish_argv(port, alice, passphrase=ALICE_KEY, pbkeylen=16)
    )
    pulled = tmp_path / "viewer.ts"
    await asyncio.sleep(1.0)  # let the broadcast appear
    viewer = procs.start(
        "viewer", ffmpeg_pull_argv(port, f"#!::r=live/alice,m=request,s={VIEWER}", pulled)
    )
    assert await viewer.wait(40) == 0, viewer.stderr()
    assert await publisher.wait(30) == 0, publisher.stderr()
    assert decode_video(pulled).frames > 50
    await poll_until(lambda: len(records(gw.proc)) >= 2, 15)
    tiers = {(r["role"], r["path"]): r["tier"] for r in records(gw.proc)}
    assert tiers == {("ingress", "live/alice"): "pro", ("egress", "live/alice"): "viewers"}
    assert state.bodies == []  # the table knew both: the hook was not asked

    # Refusals the caller sees: known credentials, path or action not allowed: 1403.
    assert await srt_code(port, f"publish:live/bob:alice:{ALICE_PW}") == 1403
    assert await srt_code(port, f"#!::r=live/alice,m=publish,s={VIEWER}") == 1403
    # Unknown or no credentials go to the hook, which refuses them with 1401.
    assert await srt_code(port, "publish:live/alice:alice:wrong-password") == 1401
    assert await srt_code(port, "#!::r=live/x,m=request") == 1401
    # The hook accepts its own token; ffmpeg is refused when it says no.
    assert await srt_code(port, f"#!::r=hook/a,m=publish,u=h,s={HOOK_TOKEN}") == 0
    assert state.bodies[-1]["path"] == "hook/a"
    assert state.bodies[-1]["action"] == "publish"
    refused = procs.start(
        "refused",
        ffmpeg_pull_argv(port, "#!::r=live/alice,m=request,s=nope", tmp_path / "no.ts"),
    )
    assert await refused.wait(20) != 0

    # A slow hook (past auth_http_timeout_ms = 500) fails closed: 1403, in bounded time.
    state.delay_s = 5
    started = time.monotonic()
    assert await srt_code(port, f"#!::r=hook/b,m=publish,s={HOOK_TOKEN}") == 1403
    assert time.monotonic() - started < 3
    # A hook that is down fails closed too.
    state.delay_s = 0
    state.release.set()
    await runner.cleanup()
    assert await srt_code(port, f"#!::r=hook/c,m=publish,s={HOOK_TOKEN}") == 1403

    stderr = gw.proc.stderr()
    assert '"auth.http_failed"' in stderr
    for secret in SECRETS:
        assert secret not in stderr


def moq_client(gw: Serve, path_and_query: str) -> moq.Client:
    return moq.Client(
        f"https://localhost:{gw.moq_port}/{path_and_query}",
        tls_fingerprints=[gw.fingerprint],
        reconnect=False,
        websocket_enabled=False,
    )


async def moq_refusal(gw: Serve, path_and_query: str) -> str:
    """Connect over WebTransport and return the refusal moq-rs reports (it must be one):
    `Unauthorized` for HTTP 401, `Forbidden` for 403."""
    with pytest.raises(Exception) as refused:  # noqa: PT011  (moq-rs' error class)
        async with asyncio.timeout(20), moq_client(gw, path_and_query) as client:
            await client.request_broadcast("live/alice")
    assert moq.is_auth(refused.value), repr(refused.value)
    return type(refused.value).__name__  # moq-rs: Unauthorized (HTTP 401), Forbidden (403)


async def test_moq_webtransport_clients_are_decided_by_the_same_configuration(
    procs: Procs, tmp_path: Path, hook: tuple[Hook, web.AppRunner]
) -> None:
    state, runner = hook
    gw = await start_serve(procs, tmp_path, state.url)
    alice = f"publish:live/alice:alice:{ALICE_PW}"
    publisher = procs.start(
        "alice", ffmpeg_publish_argv(gw.srt_port, alice, passphrase=ALICE_KEY, pbkeylen=16)
    )
    # The viewer token reads under live (the URL path scopes it) and gets the catalog.
    async with asyncio.timeout(30), moq_client(gw, f"live?jwt={VIEWER}") as client:
        async for announced in client.announced():
            if announced.prefix.strip("/") == "live/alice" and announced.active:
                break
        broadcast = await client.request_broadcast("live/alice")
        catalog = await broadcast.catalog()
        assert list(catalog.video)
    # No token or a wrong one: unauthorized (the hook says 1401); the token, outside its paths:
    # forbidden. Slow hook: refused (403), not left hanging.
    no_token = await moq_refusal(gw, "live")
    wrong = await moq_refusal(gw, "live?jwt=wrong-token")
    forbidden = await moq_refusal(gw, f"other?jwt={VIEWER}")
    state.delay_s = 5
    started = time.monotonic()
    slow = await moq_refusal(gw, f"hook?jwt={HOOK_TOKEN}")
    assert time.monotonic() - started < 5
    state.delay_s = 0
    state.release.set()
    await runner.cleanup()
    down = await moq_refusal(gw, f"hook?jwt={HOOK_TOKEN}")
    assert (no_token, wrong) == ("Unauthorized", "Unauthorized")
    assert (forbidden, slow, down) == ("Forbidden", "Forbidden", "Forbidden")
    publisher.stop()
    stderr = gw.proc.stderr()
    for secret in SECRETS:
        assert secret not in stderr
