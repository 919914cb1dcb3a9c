"""Real SRT peers for end-to-end tests: ffmpeg and srt-live-transmit processes, and a gateway.

Rules (toolchain notes, section 3): 127.0.0.1 only; every client runs under `timeout -s INT`
and is stopped by PID in a `finally`; ffmpeg publishers use `linger=2` (else the tail is lost)
and `-flush_packets 0`; ffmpeg readers get `timeout=` in microseconds; srt-live-transmit reads a
pipe with `-chunk:1316 -a:no`. Every wait in a test is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import av
import pytest

from gateway import AuthHook, Server, ServerConfig, SessionRecord
from model import Origin, PublisherPolicy, StatsHandle

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "h264_aac.ts"
HOST = "127.0.0.1"
CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (package `chromium`), driven by playwright for the browser tests."""
# Never --disable-quic: WebTransport is QUIC. The rest keeps Chromium off the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def poll_until(
    predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.02
) -> None:
    """Wait until `predicate()` holds; TimeoutError after `timeout_s` (for external state such
    as a process exit, which offers no event to wait on)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(every_s)


@dataclass(eq=False)
class Proc:
    """One external client process, run under `timeout -s INT`; output goes to files."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait(self, timeout_s: float) -> int:
        """Wait (bounded) for the process to exit and return its status."""
        await poll_until(lambda: self.proc.poll() is not None, timeout_s)
        return self.proc.returncode

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGINT, then SIGKILL if it lingers; by PID (the process group of `timeout`)."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=3)

    def kill(self) -> None:
        """SIGKILL the client itself (not a clean close: no SRT shutdown reaches the peer)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=3)


class Procs:
    """Starts client processes and stops every one of them at the end of a test."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._procs: list[Proc] = []
        self._count = 0

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        limit_s: float = 60.0,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        shell: bool = False,
    ) -> Proc:
        self._count += 1
        err_path = self._tmp / f"{self._count:02d}-{name}.stderr"
        wrapped = ["timeout", "-s", "INT", "-k", "5", f"{limit_s:g}", *argv]
        with err_path.open("wb") as err:
            popen = subprocess.Popen(
                wrapped if not shell else " ".join(wrapped),
                stdin=stdin,
                stdout=stdout,
                stderr=err,
                start_new_session=True,
                shell=shell,
            )
        proc = Proc(name=name, argv=list(argv), proc=popen, stderr_path=err_path)
        self._procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self._procs:
            proc.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Client processes of one test; all stopped (by PID) when the test ends."""
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


def srt_url(port: int, stream_id: str, **params: str | int) -> str:
    """An ffmpeg/libsrt caller URL. ffmpeg's `latency`/`timeout` are microseconds."""
    query = "&".join(f"{k}={v}" for k, v in {"mode": "caller", **params}.items())
    return f"srt://{HOST}:{port}?{query}&streamid={stream_id}"


def ffmpeg_publish_argv(
    port: int,
    stream_id: str,
    source: Path = FIXTURE,
    *,
    realtime: bool = True,
    extra: Sequence[str] = (),
    **params: str | int,
) -> list[str]:
    """ffmpeg sending `source` (stream copy) as a publisher: full 1316-byte messages, linger 2 s."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *(["-re"] if realtime else []),
        "-i",
        str(source),
        "-map",
        "0",
        "-c",
        "copy",
        "-flush_packets",
        "0",
        *extra,
        "-f",
        "mpegts",
        srt_url(port, stream_id, linger=2, pkt_size=1316, **params),
    ]


def ffmpeg_pull_argv(
    port: int,
    stream_id: str,
    out: Path,
    *,
    silence_s: float = 4.0,
    loglevel: str = "error",
    input_options: Sequence[str] = (),
    **params: str | int,
) -> list[str]:
    """ffmpeg reading a broadcast into a TS file (stream copy); gives up after `silence_s`.
    `input_options` go before `-i` (options ffmpeg's SRT input ignores inside the URL)."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        loglevel,
        "-y",
        *input_options,
        "-i",
        srt_url(port, stream_id, timeout=int(silence_s * 1_000_000), **params),
        "-map",
        "0",
        "-c",
        "copy",
        "-f",
        "mpegts",
        str(out),
    ]


@dataclass(eq=False)
class Gateway:
    """A running `Server.serve` on 127.0.0.1 with its origin, stats and collected records."""

    server: Server
    origin: Origin
    stats: StatsHandle
    records: list[SessionRecord] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    async def wait_records(
        self, count: int, timeout_s: float, where: Callable[[SessionRecord], bool] | None = None
    ) -> list[SessionRecord]:
        """Wait (bounded) until `count` records match `where`; return those."""

        def matching() -> list[SessionRecord]:
            return [r for r in self.records if where is None or where(r)]

        await poll_until(lambda: len(matching()) >= count, timeout_s)
        return matching()

    async def wait_live(self, path: str, timeout_s: float) -> None:
        await poll_until(lambda: self.origin.is_live(path), timeout_s)


@contextlib.asynccontextmanager
async def run_gateway(
    *,
    auth: AuthHook | None = None,
    passphrase: str | None = None,
    request_timeout_s: float = 8.0,
    peer_idle_timeout_ms: int = 1500,
    latency_ms: int = 120,
    prefix: str = "",
    publisher_policy: PublisherPolicy = PublisherPolicy.REJECT,
    publish_cap_bps: int | None = None,
) -> AsyncIterator[Gateway]:
    """Serve SRT on a free 127.0.0.1 port until the block ends (then close and drain)."""
    origin = Origin(publisher_policy=publisher_policy)
    stats = StatsHandle("test-node")
    records: list[SessionRecord] = []
    config = ServerConfig(
        listen=(HOST, 0),
        latency_ms=latency_ms,
        passphrase=passphrase,
        prefix=prefix,
        request_timeout_s=request_timeout_s,
        auth=auth,
        peer_idle_timeout_ms=peer_idle_timeout_ms,
        sinks=(records.append,),
        publisher_policy=publisher_policy,
        publish_cap_bps=publish_cap_bps,
    )
    server = await Server.bind(config=config, origin=origin)
    server.with_stats(stats)
    gateway = Gateway(server=server, origin=origin, stats=stats, records=records)
    task = asyncio.create_task(server.serve(origin))
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(15):
                await task
        await server.aclose()


@dataclass(frozen=True, slots=True)
class Decoded:
    """What PyAV makes of a TS file's first video stream."""

    packets: int
    frames: int
    errors: int
    first_is_keyframe: bool
    pts: list[int]

    def span(self) -> int:
        return max(self.pts) - min(self.pts) if self.pts else 0


def decode_video(path: Path) -> Decoded:
    """Decode every video packet of `path` with PyAV; count decode errors instead of raising."""
    packets = frames = errors = 0
    first_key: bool | None = None
    pts: list[int] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            return Decoded(0, 0, 0, False, [])
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets += 1
            if first_key is None:
                first_key = packet.is_keyframe
            if packet.pts is not None:
                pts.append(packet.pts)
            try:
                frames += len(packet.decode())
            except av.error.FFmpegError:
                errors += 1
        try:
            frames += len(stream.codec_context.decode(None))
        except av.error.FFmpegError:
            errors += 1
    return Decoded(packets, frames, errors, bool(first_key), pts)


def frames_in_last(span_90k: int, source: Path = FIXTURE) -> int:
    """Video frames of `source` whose PTS lies within `span_90k` of its last video PTS: the frames
    a viewer should get when its output covers that span and runs to the end of the stream."""
    pts = decode_video(source).pts
    last = max(pts)
    return sum(1 for p in pts if p >= last - span_90k)


def remux_size(source: Path = FIXTURE) -> int:
    """Bytes of `ffmpeg -i source -map 0 -c copy -f mpegts -`, what a stream-copy publisher
    sends."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(source),
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "mpegts",
            "-",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return len(out.stdout)


def assert_arrived(received_bytes: int, egress: SessionRecord) -> None:
    """Assert a viewer's bill never exceeds what it received, and that it received what the
    gateway offered it but for what the record reports skipped or dropped: the billed TS
    (`ts_bytes`) is at most the bytes received, which are at most billed + skipped + dropped.
    libsrt's sender dropped a few packets at most (loaded machines)."""
    dropped = egress.srt.pkts_send_drop
    assert dropped <= 5, f"libsrt dropped {dropped} packets at the sender"
    offered = egress.ts_bytes + egress.skipped_ts_bytes + egress.dropped_ts_bytes
    assert egress.ts_bytes <= received_bytes <= offered, (received_bytes, egress)
