"""The usage ledger against real SRT sessions: an ffmpeg publish and an srt-live-transmit pull
through an in-process gateway, and `moqsrt serve` killed with SIGKILL mid-session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from gateway import Server, ServerConfig, SessionRecord
from gateway.ledger import Ledger
from gateway.ledger_db import LedgerReader, LedgerRecord
from model import Origin, StatsHandle
from tests.integration.conftest import (
    FIXTURE,
    HOST,
    Procs,
    assert_arrived,
    decode_video,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
    poll_until,
)
from tests.media import expected_counts

ROOT = Path(__file__).resolve().parents[2]


def fixture_totals() -> tuple[int, int]:
    """(frames, groups) the whole fixture makes in the model, from PyAV: media frames and
    groups, plus the catalog track's one group of one frame."""
    counts = expected_counts(FIXTURE)
    return (
        sum(c.frames for c in counts.values()) + 1,
        sum(c.groups for c in counts.values()) + 1,
    )


@contextlib.asynccontextmanager
async def gateway_with_ledger(
    db: Path, interval_s: float = 0.2
) -> AsyncIterator[tuple[Server, StatsHandle, list[SessionRecord]]]:
    """An SRT server on a free port whose records go to a list and to a ledger at `db`."""
    origin, stats = Origin(), StatsHandle("ledger-node")
    records: list[SessionRecord] = []
    ledger = await Ledger.open(db, stats, interval_s=interval_s)
    flushing = asyncio.create_task(ledger.run())
    config = ServerConfig(
        listen=(HOST, 0),
        sinks=(records.append, ledger.record_session),
        peer_idle_timeout_ms=1500,
    )
    server = await Server.bind(config=config, origin=origin)
    server.with_stats(stats)
    serving = asyncio.create_task(server.serve(origin))
    try:
        yield server, stats, records
    finally:
        serving.cancel()
        async with asyncio.timeout(15):
            await asyncio.gather(serving, return_exceptions=True)
        await server.aclose()
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)
        await ledger.aclose()


async def test_ledger_usage_after_a_publish_and_pull_equals_counters_fixture_and_received(
    procs: Procs, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.sqlite3"
    raw, remuxed = tmp_path / "slt.ts", tmp_path / "ffmpeg.ts"
    async with gateway_with_ledger(db) as (server, stats, records):
        with raw.open("wb") as sink:
            # srt-live-transmit writes what it receives verbatim: its bytes are exact.
            slt = procs.start(
                "pull-slt",
                [
                    "srt-live-transmit",
                    "-q",
                    "-a:no",
                    f"srt://{HOST}:{server.port}?streamid=#!::r=live/l,m=request,u=slt",
                    "file://con",
                ],
                stdout=sink,
            )
        await poll_until(lambda: server.sessions == 1, 10)
        publisher = procs.start(
            "publish", ffmpeg_publish_argv(server.port, "#!::r=live/l,m=publish")
        )
        await asyncio.sleep(2.6)  # the ffmpeg viewer joins mid-stream
        ffmpeg = procs.start(
            "pull-ffmpeg", ffmpeg_pull_argv(server.port, "#!::r=live/l,m=request,u=ff", remuxed)
        )
        assert await publisher.wait(30) == 0, publisher.stderr()
        assert await slt.wait(15) == 0, slt.stderr()
        assert await ffmpeg.wait(15) == 0, ffmpeg.stderr()
        await poll_until(lambda: len(records) == 3, 10)
    snapshot = {e.role: e for e in stats.snapshot()}

    with LedgerReader(db) as reader:
        assert reader.integrity_check() == "ok"
        totals = {t.role: t.counts for t in reader.totals()}
        stored = {s.session: s for s in reader.sessions()}
        intervals = [r for r in reader.read_since(0, limit=10_000) if r.kind == "interval"]
    assert len({r.interval for r in intervals}) > 1  # flushed along the way, not only at close
    frames, groups = fixture_totals()
    # Ingress: ledger == model counters == the fixture as PyAV counts it.
    assert (totals["ingress"]["frames"], totals["ingress"]["groups"]) == (frames, groups)
    # Ledger totals == the model's counters; each session record is stored whole and once.
    for role in ("ingress", "egress"):
        entry = snapshot[role]
        usage = tuple(totals[role][k] for k in ("groups", "frames", "bytes"))
        assert usage == (entry.groups, entry.frames, entry.bytes)
        mine = [r for r in records if r.role == role]
        assert totals[role]["sessions"] == totals[role]["sessions_closed"] == len(mine)
        summed = tuple(sum(getattr(r, k) for r in mine) for k in ("groups", "frames", "bytes"))
        assert usage == summed
    assert len(stored) == 3
    for record in records:
        row = stored[record.session]
        assert (row.role, row.node, row.path) == (record.role, "ledger-node", "live/l")
        assert (row.counts["frames"], row.counts["bytes"]) == (record.frames, record.bytes)
        assert row.detail["ts_bytes"] == record.ts_bytes
    # Egress: what each viewer received. The bill never exceeds it: the TS bytes
    # srt-live-transmit wrote verbatim, and the frames PyAV finds in each viewer's file (plus
    # the catalog's one frame, which is no media); and the viewer got nothing the record does
    # not account for as billed, skipped or dropped.
    by_user = {r.user: r for r in records if r.role == "egress"}
    assert_arrived(raw.stat().st_size, by_user["slt"])
    for user, path in (("slt", raw), ("ff", remuxed)):
        assert decode_video(path).errors == 0
        received = sum(c.frames for c in expected_counts(path).values())
        billed = stored[by_user[user].session].counts["frames"]
        record = by_user[user]
        offered = billed + record.skipped_frames + record.dropped_frames
        assert 0 < billed <= received + 1, (user, billed, received)
        assert received <= offered, (user, received, offered)
    assert by_user["ff"].frames < by_user["slt"].frames <= frames  # joined late: billed less


def serve_argv(db: Path, interval_ms: int, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--srt",
        f"{HOST}:0",
        "--ledger",
        str(db),
        "--ledger-interval",
        str(interval_ms),
        "--node",
        "kill-node",
        "--log-format",
        "json",
        "--peer-idle-timeout",
        "1500",
        "--moq",
        f"{HOST}:0",
        "--http",
        "off",
        "--var-dir",
        str(db.parent / "var"),
        *extra,
    ]


def usage_json(db: Path) -> dict[str, Any]:
    """What `moqsrt usage --json` prints for the ledger `db` (run as a process)."""
    printed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "usage", "--ledger", str(db), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    document: dict[str, Any] = json.loads(printed.stdout)
    return document


def spawn(argv: list[str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group from the repository, output to files."""
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen(
            argv, cwd=ROOT, stdout=stdout, stderr=stderr, start_new_session=True
        )


async def start_serve(
    tmp_path: Path, db: Path, name: str, interval_ms: int = 200, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """`moqsrt serve` as a child process; returns it and its SRT port (from its banner)."""
    argv = serve_argv(db, interval_ms, extra)
    proc = spawn(argv, tmp_path / f"{name}.out", tmp_path / f"{name}.err")
    banner = tmp_path / f"{name}.out"

    def port() -> int | None:
        for line in banner.read_text().splitlines():
            if "srt://127.0.0.1:" in line:
                return int(line.split("srt://127.0.0.1:")[1].split("?")[0])
        return None

    try:
        await poll_until(lambda: port() is not None or proc.poll() is not None, 20)
    except TimeoutError:
        proc.kill()
        raise
    found = port()
    assert found is not None, (tmp_path / f"{name}.err").read_text()
    return proc, found


async def moq_banner(out: Path) -> tuple[int, str]:
    """The MoQ port and certificate SHA-256 `moqsrt serve` printed to `out`."""
    found: dict[str, str] = {}

    def scan() -> bool:
        for line in out.read_text().splitlines():
            if "serving MoQ on udp/" in line:
                found["port"] = line.split("udp/")[1].split()[0]
            if "certificate sha256:" in line:
                found["fingerprint"] = line.split("sha256:")[1].strip()
        return len(found) == 2

    await poll_until(scan, 20)
    return int(found["port"]), found["fingerprint"]


def run_sums(records: list[LedgerRecord]) -> dict[tuple[str, str], dict[str, int]]:
    """Per (run, role): the sum of the interval deltas, for frames and bytes."""
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for r in records:
        if r.kind == "interval":
            s = sums.setdefault((r.run, r.role), {"frames": 0, "bytes": 0})
            s["frames"] += r.counts["frames"]
            s["bytes"] += r.counts["bytes"]
    return sums


async def test_sigkill_mid_session_leaves_a_sound_ledger_and_a_restart_counts_on(
    procs: Procs, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.sqlite3"
    seen: list[LedgerRecord] = []  # a platform's cursor reader, across everything below
    cursor = 0

    def read_more() -> None:
        nonlocal cursor
        with LedgerReader(db) as reader:
            while batch := reader.read_since(cursor, limit=7):
                seen.extend(batch)
                cursor = batch[-1].seq

    server, port = await start_serve(tmp_path, db, "first")
    try:
        publisher = procs.start("publish1", ffmpeg_publish_argv(port, "#!::r=live/k,m=publish"))
        await asyncio.sleep(3.0)
        read_more()
        assert seen, "nothing flushed within 3 s at a 200 ms interval"
        await asyncio.sleep(1.5)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        killed_running = publisher.running()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    publisher.stop()
    assert killed_running, "the publisher had finished: the kill was not mid-session"

    with LedgerReader(db) as reader:
        assert reader.integrity_check() == "ok"
        first_all = reader.read_since(0, limit=100_000)
    assert all(r.kind == "interval" for r in first_all)  # the session never ended
    (first_run,) = {r.run for r in first_all}
    assert {r.run for r in seen} == {first_run}
    # Every interval record carries its entry's cumulative totals at that flush: the deltas
    # add up to the last flushed one, so what the ledger holds is exactly that snapshot.
    last = max(r.interval or 0 for r in first_all if r.role == "ingress")
    (last_ingress,) = [r for r in first_all if r.role == "ingress" and r.interval == last]
    sums = run_sums(first_all)[(first_run, "ingress")]
    assert sums["frames"] == last_ingress.detail["frames"]
    assert sums["bytes"] == last_ingress.detail["bytes"]
    frames, _ = fixture_totals()
    # 4.5 s into a 10 s real-time publish: well past the start, well short of the end.
    assert frames * 0.2 < sums["frames"] < frames * 0.8

    # The restart continues in the same file: a whole publish, counted once on top. Its
    # interval is a minute, so all it writes comes from the flush SIGTERM makes.
    server, port = await start_serve(tmp_path, db, "second", interval_ms=60_000)
    err = tmp_path / "second.err"
    try:
        publisher = procs.start(
            "publish2", ffmpeg_publish_argv(port, "#!::r=live/k,m=publish", realtime=False)
        )
        assert await publisher.wait(30) == 0, publisher.stderr()
        # The gateway has ended the session (its log says so) before SIGTERM.
        await poll_until(lambda: '"session.closed"' in err.read_text(), 15, every_s=0.1)
        read_more()  # a reader in the middle of the second run: nothing new yet
        assert {r.run for r in seen} == {first_run}
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    read_more()

    with LedgerReader(db) as reader:
        assert reader.integrity_check() == "ok"
        everything = reader.read_since(0, limit=100_000)
        totals = {t.role: t.counts for t in reader.totals()}
        (session,) = reader.sessions(role="ingress")
    runs = {r.run for r in everything}
    assert len(runs) == 2
    second = run_sums(everything)[(next(iter(runs - {first_run})), "ingress")]
    # The second run's intervals add up to its one whole session, which is the whole fixture.
    assert second["frames"] == session.counts["frames"] == frames
    assert totals["ingress"]["frames"] == sums["frames"] + frames
    assert totals["ingress"]["bytes"] == sums["bytes"] + second["bytes"]
    # The cursor reader saw every record exactly once, in order.
    assert [r.seq for r in seen] == [r.seq for r in everything]
    assert len(
        {(r.kind, r.node, r.run, r.interval, r.session, r.path, r.role) for r in seen}
    ) == len(seen)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # `moqsrt usage` prints the same totals and the one finished session.
    document = usage_json(db)
    (ingress,) = [t for t in document["totals"] if t["role"] == "ingress"]
    assert (ingress["path"], ingress["frames"]) == ("live/k", sums["frames"] + frames)
    assert [s["session"] for s in document["sessions"]] == [session.session]


async def test_a_moq_viewer_session_of_moqsrt_serve_reaches_the_ledger(
    procs: Procs, tmp_path: Path
) -> None:
    import moq

    db = tmp_path / "ledger.sqlite3"
    server, port = await start_serve(tmp_path, db, "moq")
    try:
        moq_port, fingerprint = await moq_banner(tmp_path / "moq.out")
        publisher = procs.start("publish", ffmpeg_publish_argv(port, "#!::r=live/m,m=publish"))
        async with (
            asyncio.timeout(30),
            moq.Client(
                f"moqt://{HOST}:{moq_port}",
                tls_fingerprints=[fingerprint],
                reconnect=False,
                websocket_enabled=False,
            ) as client,
        ):
            broadcast = await client.announced_broadcast("live/m")
            track = await broadcast.subscribe_track("catalog.json")
            group = await track.recv_group()
            assert group is not None
            payloads = [frame.payload async for frame in group]
            track.cancel()
        assert len(payloads) == 1
        await poll_until(lambda: '"transport": "quic"' in (tmp_path / "moq.err").read_text(), 15)
        publisher.stop()
        os.killpg(server.pid, signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 20) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    with LedgerReader(db) as reader:
        (viewer,) = [s for s in reader.sessions() if s.detail.get("transport") == "quic"]
        totals = {(t.path, t.role): t.counts for t in reader.totals()}
    # The MoQ session's record is in the ledger, billed for exactly the catalog frame the
    # client received, and the interval records count it under the broadcast's egress.
    assert viewer.role == "egress"
    assert (viewer.counts["frames"], viewer.counts["bytes"]) == (1, len(payloads[0]))
    assert totals[("live/m", "egress")]["frames"] == 1
    assert totals[("live/m", "egress")]["bytes"] == len(payloads[0])
