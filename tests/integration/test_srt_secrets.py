"""Secrets given in every place a caller or an operator can give them never reach a log line
(ours or libsrt's), a usage record, a repr or the process list; the hook still sees them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from gateway import AuthDecision, StreamRequest
from gateway.logs import configure_logging
from gateway.srt import (
    HandshakeInfo,
    SrtOptions,
    SrtReactor,
    SrtRejected,
    set_libsrt_log_level,
)
from tests.integration.conftest import (
    HOST,
    ROOT,
    Procs,
    ffmpeg_publish_argv,
    poll_until,
    run_gateway,
)

SERVER_PASS = "SERVER-PASS-0001"
HOOK_PASS = "HOOK-PASS-00002"
MTX_PASSWORD = "MTX-PASSWORD-03"
MTX_TOKEN = "MTX-QUERY-TOKEN-04"
SESSION_TOKEN = "SESSION-TOKEN-05"
API_KEY = "API-KEY-0006"
VIEWER_TOKEN = "VIEWER-TOKEN-07"
MALLORY_PASS = "MALLORY-PASS-08"
MALFORMED_TAIL = "MALFORMED-TAIL-09"
WRONG_PASS = "WRONG-PASS-00010"
OWN_TOKEN = "OWN-TOKEN-11"
SECRETS = [
    SERVER_PASS,
    HOOK_PASS,
    MTX_PASSWORD,
    MTX_TOKEN,
    SESSION_TOKEN,
    API_KEY,
    VIEWER_TOKEN,
    MALLORY_PASS,
    MALFORMED_TAIL,
    WRONG_PASS,
    OWN_TOKEN,
]


def leaked(text: str, secrets: list[str] = SECRETS) -> list[str]:
    return [s for s in secrets if s in text]


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every log record of the process (structlog events, `moqsrt.srt`, the routed libsrt
    log), rendered as `moqsrt serve` renders them (JSON), into a buffer."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = structlog.get_config()
    configure_logging("json", "debug")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**saved)


@pytest.fixture
async def client() -> AsyncIterator[SrtReactor]:
    async with SrtReactor() as reactor:
        yield reactor


async def refused(client: SrtReactor, port: int, options: SrtOptions) -> int:
    try:
        async with asyncio.timeout(10):
            conn = await client.connect(HOST, port, options)
    except SrtRejected as exc:
        return exc.reject_code
    conn.close()
    raise AssertionError("accepted")


async def test_no_secret_reaches_logs_records_or_reprs(
    all_logs: io.StringIO, client: SrtReactor, procs: Procs, tmp_path: Path
) -> None:
    seen: list[StreamRequest] = []

    async def auth(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        seen.append(request)
        if request.user == "mallory":
            return AuthDecision(accept=False, code=1401)
        if request.resource.startswith("vip/"):
            return AuthDecision(tier="vip", passphrase=HOOK_PASS)
        return AuthDecision()

    mtx_id = f"publish:live/mtx:alice:{MTX_PASSWORD}:token={MTX_TOKEN}"
    vip_id = f"#!::r=vip/cam,m=publish,u=bob,s={SESSION_TOKEN},api_key={API_KEY}"
    viewer_id = f"#!::r=live/mtx,m=request,s={VIEWER_TOKEN}"
    pulled = tmp_path / "pulled.ts"
    reprs: list[str] = []
    async with run_gateway(auth=auth, passphrase=SERVER_PASS) as gw:
        set_libsrt_log_level(logging.DEBUG)  # libsrt's start-up set WARNING
        try:
            with pulled.open("wb") as out:
                viewer = procs.start(
                    "slt-pull",
                    [
                        "srt-live-transmit",
                        "-q",
                        "-a:no",
                        f"srt://{HOST}:{gw.port}?passphrase={SERVER_PASS}&streamid={viewer_id}",
                        "file://con",
                    ],
                    stdout=out,
                )
            mtx = procs.start(
                "publish-mtx",
                ffmpeg_publish_argv(gw.port, mtx_id, extra=["-t", "3"], passphrase=SERVER_PASS),
            )
            vip = procs.start(
                "publish-vip",
                ffmpeg_publish_argv(gw.port, vip_id, realtime=False, passphrase=HOOK_PASS),
            )
            assert await refused(client, gw.port, SrtOptions(stream_id=f"{mtx_id[:-1]}x")) == 11
            mallory = f"publish:live/m:mallory:{MALLORY_PASS}"
            assert await refused(client, gw.port, SrtOptions(stream_id=mallory)) == 1401
            malformed = f"#!::r=live/y,s={MALFORMED_TAIL[:4]},{MALFORMED_TAIL}"
            assert await refused(client, gw.port, SrtOptions(stream_id=malformed)) == 1400
            wrong = SrtOptions(stream_id="#!::r=live/w,m=publish", passphrase=WRONG_PASS)
            assert await refused(client, gw.port, wrong) == 10
            own_options = SrtOptions(
                stream_id=f"#!::r=live/own,m=publish,s={OWN_TOKEN}", passphrase=SERVER_PASS
            )
            async with asyncio.timeout(10):
                own = await client.connect(HOST, gw.port, own_options)
            reprs += [repr(own), repr(own_options)]
            own.close()
            assert await mtx.wait(30) == 0, mtx.stderr()
            assert await vip.wait(30) == 0, vip.stderr()
            records = await gw.wait_records(4, 20)
        finally:
            set_libsrt_log_level(logging.WARNING)
        viewer.stop()
        reprs += [
            repr(gw.server.config),
            repr(AuthDecision(passphrase=HOOK_PASS)),
            repr(HandshakeInfo(stream_id=vip_id, peer=(HOST, 1))),
            *(repr(request) for request in seen),
        ]

    # The hook got everything the callers sent.
    by_user = {r.user: r for r in seen}
    assert by_user["alice"].password == MTX_PASSWORD
    assert by_user["alice"].params["token"] == MTX_TOKEN
    assert by_user["bob"].session == SESSION_TOKEN
    assert by_user["bob"].params["api_key"] == API_KEY
    assert by_user["mallory"].password == MALLORY_PASS
    # The sessions ran, and their records carry redacted ids.
    ids = {(r.path, r.role): r.stream_id for r in records}
    assert ids[("live/mtx", "ingress")] == "publish:live/mtx:alice:***:token=***"
    assert ids[("vip/cam", "ingress")] == "#!::r=vip/cam,m=publish,u=bob,s=***,api_key=***"
    assert ids[("live/mtx", "egress")] == "#!::r=live/mtx,m=request,s=***"
    assert ids[("live/own", "ingress")] == "#!::r=live/own,m=publish,s=***"
    assert pulled.stat().st_size > 0
    logs = all_logs.getvalue()
    lines = [json.loads(line) for line in logs.splitlines()]
    events = {line.get("event") for line in lines}
    assert {"session.closed", "srt.rejected"} <= events
    assert any(line.get("logger") == "moqsrt.libsrt" for line in lines)
    rejected = [line for line in lines if line.get("event") == "srt.rejected"]
    assert {line["stream_id"] for line in rejected} >= {
        "publish:live/m:mallory:***",
        "#!::r=live/y,s=***,***",
    }
    # ... and no secret anywhere.
    assert leaked(logs) == []
    for record in records:
        assert leaked(repr(record)) == []
        assert leaked(json.dumps(dataclasses.asdict(record))) == []
    assert leaked("\n".join(reprs)) == []


def _cmdline(pid: int) -> bytes:
    """What `ps` shows for `pid`: its command line."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


async def _read_port(stdout: asyncio.StreamReader, timeout_s: float) -> int:
    async with asyncio.timeout(timeout_s):
        while line := await stdout.readline():
            match = re.search(rb"srt://127\.0\.0\.1:(\d+)", line)
            if match:
                return int(match.group(1))
    raise AssertionError("moqsrt serve printed no address")


@pytest.mark.parametrize("source", ["flag-file", "environment", "toml-file", "flag"])
async def test_moqsrt_serve_keeps_its_passphrase_out_of_ps_and_logs(
    procs: Procs, tmp_path: Path, source: str
) -> None:
    secret = "CLI-PASSPHRASE-1"
    password = "CLI-PASSWORD-002"
    key_file = tmp_path / "srt.key"
    key_file.write_text(secret + "\n")
    key_file.chmod(0o600)
    # Its own MoQ port and var dir (certificate, ledger): the repository's `var/` and the default
    # udp/4443 would be shared with whatever else runs at the same time (xdist, other checkouts).
    args = ["--srt", f"{HOST}:0", "--moq", f"{HOST}:0", "--var-dir", str(tmp_path / "var")]
    args += ["--http", "off", "--log-format", "json", "--log-level", "debug"]
    env = {k: v for k, v in os.environ.items() if k != "MOQSRT_PASSPHRASE"}
    if source == "flag-file":
        args += ["--passphrase-file", str(key_file)]
    elif source == "flag":
        args += ["--passphrase", secret]
    elif source == "environment":
        env["MOQSRT_PASSPHRASE"] = secret
    else:
        config = tmp_path / "moqsrt.toml"
        config.write_text('passphrase_file = "srt.key"\n')
        args += ["--config", str(config)]
    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            *args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    stdout_rest = b""
    try:
        assert server.stdout is not None
        port = await _read_port(server.stdout, 30)
        cmdline = _cmdline(server.pid)
        stream_id = f"publish:live/cli:carol:{password}"
        publisher = procs.start(
            "publish",
            ffmpeg_publish_argv(port, stream_id, realtime=False, passphrase=secret),
        )
        assert await publisher.wait(30) == 0, publisher.stderr()
        await poll_until(lambda: b"session.closed" in stderr_path.read_bytes(), 15)
        server.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            stdout_rest = await server.stdout.read()
            assert await server.wait() == 0
    finally:
        if server.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            await server.wait()
    output = stderr_path.read_text() + stdout_rest.decode(errors="replace")
    closed = [
        json.loads(line)
        for line in stderr_path.read_text().splitlines()
        if '"session.closed"' in line
    ]
    assert [c["stream_id"] for c in closed] == ["publish:live/cli:carol:***"]
    assert closed[0]["bytes"] > 0
    if source == "flag":  # the one source ps shows: the server says so (without the value)
        assert secret.encode() in cmdline
        assert '"setting.visible"' in output
    else:
        assert secret.encode() not in cmdline
        assert '"setting.visible"' not in output
    assert leaked(output, [secret, password]) == []
    # Nor what it keeps on disk (the ledger with its session record, the MoQ certificate).
    kept = [p for p in (tmp_path / "var").rglob("*") if p.is_file()]
    assert any(p.name.startswith("ledger.sqlite3") for p in kept), kept
    for path in kept:
        assert leaked(path.read_text(errors="replace"), [secret, password]) == [], path
