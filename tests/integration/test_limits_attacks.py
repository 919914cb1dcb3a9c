"""Attacks against a running gateway: its resident memory stays bounded, callers over the
operator's limits see 1402, and a real publish and pull keep flowing throughout (issue 13).

The gateway runs in a process of its own (`tests/integration/_limits_server.py`), so its
VmRSS can be read; ffmpeg publishes the fixture in a loop and another ffmpeg pulls it, and
the pull's video frames (counted by PyAV) must keep arriving during every attack. Attackers
are our own libsrt callers, each attack from its own loopback addresses (127.0.N.M), so the
per-address limits of one attack do not touch the others or the ffmpeg clients (127.0.0.1).
The tests share one gateway and run in file order; the last one checks that everything the
attacks left behind was pruned. Each test prints a `MEMORY` line with its figures.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from gateway.srt import SrtConnection, SrtError, SrtOptions, SrtReactor, SrtRejected
from tests.integration.conftest import (
    HOST,
    ROOT,
    Procs,
    ffmpeg_publish_argv,
    ffmpeg_pull_argv,
)
from tests.unit.mux.tsbuild import Es, Muxer, pes, pmt

# Memory, handshake-rate and frame-flow figures of one gateway under attack: a real-time test on
# the other xdist worker skews them (RSS over its bound, one handshake more than sent were seen),
# so `make integration` runs this module alone. One gateway serves the whole module (`stage`)
# and the order matters (the last test checks what the others left behind): under xdist anyway,
# the module goes to one worker, in file order.
pytestmark = [pytest.mark.serial, pytest.mark.xdist_group("limits_attacks")]

SECRET = "limits-secret-42"
MAIN = "live/main"
MAX_SESSIONS = 40
MAX_PEER_SESSIONS = 12
HANDSHAKES_PER_S = 20.0
BURST = 2 * HANDSHAKES_PER_S  # gateway.admission.HANDSHAKE_BURST_S seconds' worth
SETTINGS = {
    "passphrase": SECRET,
    "max_sessions": MAX_SESSIONS,
    "max_peer_sessions": MAX_PEER_SESSIONS,
    "max_peer_handshakes_per_s": HANDSHAKES_PER_S,
    "request_timeout_s": 3.0,
}
MIB = 1024 * 1024
MESSAGE_BYTES = 1316
FPS = 30  # the fixture's video rate (ffprobe)


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at the gateway: resident and peak memory (KiB), frames pulled so far, tables."""

    rss_kib: int
    hwm_kib: int
    frames: int
    held: dict[str, int]
    at: float


def count_frames(path: Path) -> int:
    """Video packets (= frames) PyAV demuxes from the pulled file so far (it is still growing:
    a cut-off last packet ends the count)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    count += 1
    except av.error.FFmpegError:
        pass
    return count


class Stage:
    """The gateway process, an ffmpeg publishing `MAIN` in a loop and an ffmpeg pulling it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log_path = tmp / "gateway.log"
        self.pulled = tmp / "pulled.ts"
        self.procs = Procs(tmp)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration._limits_server", json.dumps(SETTINGS)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.port = int(self._read_json(20.0)["port"])
        self.figures: list[str] = []

    def _read_json(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        assert ready, f"gateway silent for {timeout_s} s; log: {self.log_tail()}"
        line = self.proc.stdout.readline()
        assert line, f"gateway exited; log: {self.log_tail()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def held(self) -> dict[str, int]:
        """What the gateway holds (`Server.held()`, refusals, stats entries)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"held\n")
        self.proc.stdin.flush()
        return self._read_json(10.0)

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the gateway process, KiB."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def read(self) -> Reading:
        rss, hwm = self.memory_kib()
        return Reading(rss, hwm, count_frames(self.pulled), self.held(), time.monotonic())

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> list[dict[str, Any]]:
        """The gateway's JSON log lines written after byte `offset`."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            lines = log.read().splitlines()
        return [json.loads(line) for line in lines if line.startswith(b"{")]

    def close(self) -> None:
        self.procs.stop_all()
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()  # the gateway exits when its stdin closes
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    """One gateway for the module, with the publish and the pull flowing."""
    stage = Stage(tmp_path_factory.mktemp("limits"))
    try:
        publish = ffmpeg_publish_argv(stage.port, f"#!::r={MAIN},m=publish", passphrase=SECRET)
        where = publish.index("-i")
        publish[where:where] = ["-stream_loop", "-1"]  # the fixture, round and round
        stage.procs.start("publish", publish, limit_s=300)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and stage.held()["sessions"] < 1:
            time.sleep(0.1)
        pull = ffmpeg_pull_argv(
            stage.port, f"#!::r={MAIN},m=request", stage.pulled, passphrase=SECRET
        )
        pull[-1:-1] = ["-flush_packets", "1"]  # every frame reaches the file as it arrives
        stage.procs.start("pull", pull, limit_s=300)
        while time.monotonic() < deadline and count_frames(stage.pulled) < FPS:
            time.sleep(0.2)
        assert count_frames(stage.pulled) >= FPS, stage.log_tail()
        yield stage
    finally:
        stage.close()
        for line in stage.figures:
            sys.stdout.write(line + "\n")


@pytest.fixture
async def client() -> AsyncIterator[SrtReactor]:
    """Our own libsrt callers (the attackers)."""
    async with SrtReactor() as reactor:
        yield reactor


async def held_until(
    stage: Stage, predicate: Callable[[dict[str, int]], bool], timeout_s: float
) -> dict[str, int]:
    """Ask the gateway what it holds until `predicate` accepts the answer (bounded)."""
    async with asyncio.timeout(timeout_s):
        while not predicate(held := await asyncio.to_thread(stage.held)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return held


async def read(stage: Stage) -> Reading:
    return await asyncio.to_thread(stage.read)


async def settle_and_read(stage: Stage, settle_s: float = 1.0) -> Reading:
    await asyncio.sleep(settle_s)
    return await read(stage)


def check_flowing(stage: Stage, before: Reading, after: Reading) -> None:
    """The pull kept receiving frames while the attack ran: at least a third of real time
    (the machine is shared; a stalled pull gets none)."""
    expected = (after.at - before.at) * FPS
    got = after.frames - before.frames
    pull = stage.procs._procs[1]
    assert got >= expected / 3, (
        f"{got} frames in {after.at - before.at:.1f} s ({before.frames} -> {after.frames}, "
        f"{stage.pulled.stat().st_size} bytes); pull running={pull.running()} "
        f"{pull.stderr()[-500:]}"
    )


def report(stage: Stage, attack: str, before: Reading, after: Reading, **extra: object) -> None:
    details = " ".join(f"{k}={v}" for k, v in extra.items())
    line = (
        f"MEMORY {attack}: rss_before_kib={before.rss_kib} rss_after_kib={after.rss_kib} "
        f"growth_kib={after.rss_kib - before.rss_kib} peak_kib={after.hwm_kib} "
        f"frames={after.frames - before.frames} in {after.at - before.at:.1f}s {details}"
    )
    stage.figures.append(line)
    sys.stdout.write(line + "\n")


def options(stream_id: str, passphrase: str | None = SECRET) -> SrtOptions:
    return SrtOptions(stream_id=stream_id, passphrase=passphrase, connect_timeout_ms=3000)


async def attempt(
    client: SrtReactor, stage: Stage, stream_id: str, host: str, passphrase: str | None = SECRET
) -> SrtConnection | int | str:
    """Connect from `host`: the connection, the reject code, or the error's class name."""
    try:
        return await client.connect(
            HOST, stage.port, options(stream_id, passphrase), local=(host, 0)
        )
    except SrtRejected as exc:
        return exc.reject_code
    except SrtError as exc:
        return type(exc).__name__


async def gather_limited(jobs: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


async def send_for(
    conn: SrtConnection, messages: list[bytes], total_bytes: int, limit_s: float
) -> int:
    """Send `messages` round and round until `total_bytes` went out or `limit_s` passed; the
    bytes libsrt queued."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    sent = 0
    index = 0
    burst = 32
    while sent < total_bytes and loop.time() < deadline:
        batch = [messages[(index + k) % len(messages)] for k in range(burst)]
        queued = conn.send_many(batch)
        index += queued
        sent += sum(len(m) for m in batch[:queued])
        await asyncio.sleep(0.002 if queued == burst else 0.01)
    return sent


# -- the attacks, in order ------------------------------------------------------------------------


async def test_a_viewer_that_sends_data_grows_nothing(stage: Stage, client: SrtReactor) -> None:
    before = await read(stage)
    conn = await client.connect(
        HOST, stage.port, options(f"#!::r={MAIN},m=request"), local=("127.0.1.1", 0)
    )
    try:
        junk = [os.urandom(MESSAGE_BYTES) for _ in range(16)]
        async with asyncio.timeout(30):
            sent = await send_for(conn, junk, 48 * MIB, limit_s=6.0)
            acknowledged = await conn.flush(10)
    finally:
        conn.close()
    after = await settle_and_read(stage)
    report(stage, "viewer sends data", before, after, sent_bytes=sent)
    assert acknowledged, "the gateway did not acknowledge what the viewer sent"
    assert sent >= 24 * MIB
    # Kept, it would be every byte sent (24+ MiB); dropped on the I/O thread, nothing.
    assert after.rss_kib - before.rss_kib < 8 * 1024
    check_flowing(stage, before, after)


async def test_failed_handshakes_leave_nothing_behind(stage: Stage, client: SrtReactor) -> None:
    before = await read(stage)
    jobs: list[Callable[[], Awaitable[Any]]] = []
    started = time.monotonic()
    for i in range(160):
        host = f"127.0.2.{i % 40 + 1}"
        mode = "publish" if i % 2 else "request"
        wrong = f"#!::r=live/flood{i},m={mode}"
        jobs.append(functools.partial(attempt, client, stage, wrong, host, "not-the-secret-1"))
        bad = f"#!::r=live/../x{i},m={mode}" if i % 3 else f"#!::m={mode},r="
        jobs.append(functools.partial(attempt, client, stage, bad, host))
    async with asyncio.timeout(60):
        outcomes = await gather_limited(jobs, concurrency=8)
    for outcome in outcomes:
        if isinstance(outcome, SrtConnection):
            outcome.close()
    codes = collections.Counter(outcomes)
    after = await settle_and_read(stage)
    report(
        stage,
        "failed handshakes",
        before,
        after,
        codes=dict(codes),
        seconds=round(time.monotonic() - started, 1),
        held=after.held,
    )
    assert not any(isinstance(o, SrtConnection) for o in outcomes), codes
    # 10 = wrong passphrase (libsrt, after our callback), 1400 = bad stream id, 1402 = over
    # max_sessions while failed handshakes still count as pending sessions.
    assert set(codes) <= {10, 1400, 1402}, codes
    assert codes[10] > 0
    assert codes[1400] > 0
    # Pending claims of the failed publishers are pruned once expired (checked at the end
    # too); libsrt holds each socket it failed for about a second, which the pending
    # sessions' count bounds (max_sessions of them at most).
    assert after.rss_kib - before.rss_kib < 48 * 1024
    check_flowing(stage, before, after)


async def test_many_sessions_opened_and_closed_leave_nothing_behind(
    stage: Stage, client: SrtReactor
) -> None:
    before = await read(stage)
    per_host = 6
    hosts = [f"127.0.3.{n}" for n in range(1, 15)]

    async def viewer_rounds(host: str) -> int:
        ok = 0
        for _ in range(per_host):
            conn = await client.connect(
                HOST, stage.port, options(f"#!::r={MAIN},m=request"), local=(host, 0)
            )
            try:
                async with asyncio.timeout(5):
                    if await conn.recv_batch():
                        ok += 1
            finally:
                conn.close()
        return ok

    received = 0
    rounds_kib: list[int] = []
    blocks: list[int] = []
    for _ in range(3):
        async with asyncio.timeout(60):
            received += sum(await asyncio.gather(*(viewer_rounds(h) for h in hosts)))
        await held_until(stage, lambda held: held["sessions"] <= 2, 10)
        await asyncio.sleep(0.5)
        rounds_kib.append((await asyncio.to_thread(stage.memory_kib))[0])
        blocks.append((await asyncio.to_thread(stage.held))["py_blocks"])
    after = await settle_and_read(stage)
    sessions = 3 * per_host * len(hosts)
    report(
        stage,
        "sessions opened and closed",
        before,
        after,
        sessions=sessions,
        rounds_kib=rounds_kib,
        py_blocks=blocks,
    )
    assert received == sessions
    assert after.held["sessions"] == 2  # the ffmpeg publish and pull
    assert after.held["stats_entries"] == before.held["stats_entries"]
    # Python keeps nothing per past session: a round of 84 sessions adds fewer memory blocks
    # than a session holds while open (the model's cache of the live broadcast and the
    # bounded set of distinct viewer ids grow meanwhile).
    assert blocks[2] - blocks[1] < 8000, blocks
    # libsrt's memory for sockets follows the sessions open at once (14 here), which the C
    # allocator keeps for reuse rather than returning at once.
    assert after.rss_kib - before.rss_kib < 64 * 1024
    check_flowing(stage, before, after)


async def test_sessions_over_the_limits_are_refused_with_1402(
    stage: Stage, client: SrtReactor
) -> None:
    await held_until(stage, lambda held: held["slots"] <= 2, 10)
    before = await read(stage)
    request = f"#!::r={MAIN},m=request"
    one_host = await asyncio.gather(
        *(attempt(client, stage, request, "127.0.4.1") for _ in range(MAX_PEER_SESSIONS + 3))
    )
    others = await asyncio.gather(
        *(
            attempt(client, stage, request, f"127.0.4.{n}")
            for n in (2, 3, 4)
            for _ in range(MAX_PEER_SESSIONS)
        )
    )
    opened = [c for c in one_host + others if isinstance(c, SrtConnection)]
    at_limit = await read(stage)
    for conn in opened:
        conn.close()
    await held_until(stage, lambda held: held["slots"] <= 2, 10)
    again = await attempt(client, stage, request, "127.0.4.1")
    if isinstance(again, SrtConnection):
        again.close()
    after = await settle_and_read(stage)
    per_session_kib = (at_limit.rss_kib - before.rss_kib) // max(1, len(opened))
    report(
        stage,
        "over the limits",
        before,
        after,
        opened=len(opened),
        rss_at_limit_kib=at_limit.rss_kib,
        per_session_kib=per_session_kib,
    )
    one_codes = collections.Counter(c if isinstance(c, int | str) else "ok" for c in one_host)
    assert one_codes == {"ok": MAX_PEER_SESSIONS, 1402: 3}, one_codes
    other_codes = collections.Counter(c if isinstance(c, int | str) else "ok" for c in others)
    # Two sessions are the ffmpeg publish and pull.
    room = MAX_SESSIONS - 2 - MAX_PEER_SESSIONS
    assert other_codes == {"ok": room, 1402: 3 * MAX_PEER_SESSIONS - room}, other_codes
    assert isinstance(again, SrtConnection), again  # released slots are free again
    assert after.rss_kib - before.rss_kib < 16 * 1024
    check_flowing(stage, before, after)


async def test_a_handshake_flood_from_one_address_is_refused_at_its_rate(
    stage: Stage, client: SrtReactor
) -> None:
    before = await read(stage)
    log_from = stage.log_size()
    started = time.monotonic()
    jobs: list[Callable[[], Awaitable[Any]]] = [
        functools.partial(attempt, client, stage, f"#!::r=a/../b{i}", "127.0.5.1")
        for i in range(240)
    ]
    async with asyncio.timeout(60):
        outcomes = await gather_limited(jobs, concurrency=16)
    elapsed = time.monotonic() - started
    after = await settle_and_read(stage)
    codes = collections.Counter(outcomes)
    lines = stage.log_since(log_from)
    rate_lines = [x for x in lines if "over" in x["event"] and "refusing with 1402" in x["event"]]
    refused_lines = [x for x in lines if x["event"] == "srt.rejected"]
    report(
        stage,
        "handshake flood from one address",
        before,
        after,
        codes=dict(codes),
        seconds=round(elapsed, 1),
        log_lines=len(lines),
    )
    assert set(codes) <= {1400, 1402}, codes
    # The bucket: BURST at once, then HANDSHAKES_PER_S a second.
    assert codes[1400] <= BURST + HANDSHAKES_PER_S * elapsed + 2, (codes, elapsed)
    assert codes[1402] >= 240 - (BURST + HANDSHAKES_PER_S * elapsed + 2)
    assert codes[1402] > 0
    # Bounded log: one rate line per 10 s, 20 refusal lines per code per 10 s.
    assert 1 <= len(rate_lines) <= 1 + elapsed // 10 + 1
    assert len(refused_lines) <= 20 * (elapsed // 10 + 2)
    assert after.held["rejected"] - before.held["rejected"] == 240
    assert after.rss_kib - before.rss_kib < 8 * 1024
    check_flowing(stage, before, after)


def endless_pes_messages() -> tuple[list[bytes], list[bytes]]:
    """(start, body): PAT, PMT (H.264 on 0x100) and a video PES declaring length 0 whose
    continuation packets come round forever (the body never starts another PES)."""
    mux = Muxer()
    start = mux.psi(pmt([Es(0x1B, 0x100)]))
    start += mux.packets(
        0x100, pes(0xE0, b"\x00\x00\x00\x01\x09\xf0" + b"\xaa" * 160, pts=0, bounded=False)
    )[:1]
    packets = []
    for _ in range(16 * 7):
        cc = mux.cc[0x100] = (mux.cc[0x100] + 1) & 0x0F
        packets.append(bytes([0x47, 0x01, 0x00, 0x10 | cc]) + b"\xaa" * 184)
    body = [b"".join(packets[k : k + 7]) for k in range(0, len(packets), 7)]
    return pad_messages(start), body


def pad_messages(packets: list[bytes]) -> list[bytes]:
    """Whole 7-packet messages (null packets fill the last)."""
    null = bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * 184
    while len(packets) % 7:
        packets.append(null)
    return [b"".join(packets[k : k + 7]) for k in range(0, len(packets), 7)]


async def publish_attack(
    stage: Stage,
    client: SrtReactor,
    path: str,
    host: str,
    start: list[bytes],
    body: list[bytes],
    round_bytes: int = 40 * MIB,
) -> list[tuple[int, int]]:
    """Publish `start` then `body` round and round, in two rounds of `round_bytes`; the
    memory (KiB) after each round as (rss, peak)."""
    conn = await client.connect(
        HOST, stage.port, options(f"#!::r={path},m=publish"), local=(host, 0)
    )
    figures = []
    try:
        assert conn.send_many(start) == len(start)
        for _ in range(2):
            async with asyncio.timeout(30):
                sent = await send_for(conn, body, round_bytes, limit_s=8.0)
                await conn.flush(10)
            assert sent >= round_bytes * 0.6
            await asyncio.sleep(0.5)
            figures.append(await asyncio.to_thread(stage.memory_kib))
    finally:
        conn.close()
    return figures


async def test_an_endless_pes_is_bounded(stage: Stage, client: SrtReactor) -> None:
    before = await read(stage)
    start, body = endless_pes_messages()
    rounds = await publish_attack(stage, client, "live/pes0", "127.0.6.1", start, body)
    after = await settle_and_read(stage)
    report(stage, "endless PES", before, after, rounds_kib=rounds)
    # The importer caps a PES (the model's largest group, 32 MiB): the second 40 MiB adds
    # nothing, and the first cannot add more than the cap and the copies made of it.
    assert rounds[1][0] - rounds[0][0] < 8 * 1024, rounds
    assert after.rss_kib - before.rss_kib < 80 * 1024
    check_flowing(stage, before, after)


def many_streams_messages(streams: int, data_from: int) -> tuple[list[bytes], list[bytes]]:
    """(start, body): a PMT declaring `streams` AAC streams and an unbounded PES opened on
    each; the body continues, never ending them, the PES of the streams from `data_from` on."""
    mux = Muxer()
    pids = [0x200 + n for n in range(streams)]
    start = mux.psi(pmt([Es(0x0F, pid) for pid in pids], pcr_pid=pids[0]))
    for pid in pids:
        start += mux.packets(pid, pes(0xC0, b"\xaa" * 170, pts=0, bounded=False))[:1]
    packets = []
    for _ in range(16):
        for pid in pids[data_from:]:
            cc = mux.cc[pid] = (mux.cc[pid] + 1) & 0x0F
            packets.append(bytes([0x47, pid >> 8, pid & 0xFF, 0x10 | cc]) + b"\xaa" * 184)
    return pad_messages(start), pad_messages(packets)


async def test_a_pmt_of_hundreds_of_streams_is_bounded(stage: Stage, client: SrtReactor) -> None:
    before = await read(stage)
    # The importer follows the first 64 streams of a PMT (mux.ts_import DEFAULT_MAX_STREAMS):
    # every byte goes to the 126 it must skip. (What the followed streams may hold together is
    # capped too: the endless PES above shows a cap at work.)
    start, body = many_streams_messages(190, data_from=64)
    rounds = await publish_attack(stage, client, "live/pmt", "127.0.7.1", start, body, 48 * MIB)
    after = await settle_and_read(stage)
    report(stage, "PMT of 190 streams", before, after, rounds_kib=rounds)
    # Kept, the 96 MiB sent would be over 100 MiB with Python's per-piece overhead.
    assert after.rss_kib - before.rss_kib < 16 * 1024
    check_flowing(stage, before, after)


async def test_what_the_attacks_left_behind_was_pruned(stage: Stage) -> None:
    # The pending claims and slots expire after 2 s, refusals are remembered 5 s, handshake
    # decisions 10 s, rate buckets until full again (2 s): all gone by now or soon.
    held = await held_until(
        stage,
        lambda h: h["decisions"] == 0 and h["recent_rejects"] == 0 and h["rate_peers"] == 0,
        15,
    )
    report(stage, "left behind", await read(stage), await read(stage), held=held)
    assert held["sessions"] == 2
    assert held["slots"] == 2
    assert held["slot_hosts"] == 1
    assert held["claims"] == 1  # the ffmpeg publisher's path
    # One stats entry per (path, tier, role) ever metered: the main broadcast in and out,
    # and the two attacking publishers' paths.
    assert held["stats_entries"] == 4
