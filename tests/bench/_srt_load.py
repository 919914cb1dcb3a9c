"""SRT load and latency helpers for bench_gateway: Python SRT viewers, a paced TS publisher.

Two roles:
- `python -m tests.bench._srt_load view ...` is the viewer *process* of the throughput run: it
  opens SRT connections through `gateway.srt.SrtReactor` (as callers to a listener such as
  `moqsrt serve`, or as one listener that relays call into), counts the bytes each connection
  delivers, prints `ready` on stdout once it can receive, and one JSON line at the end (every
  connection ended, the deadline passed, or SIGINT/SIGTERM). It runs in its own process so its
  CPU is measured apart from the relay's.
- In-process coroutines for the latency run: `TsPlan` turns a TS file into 1316-byte messages
  with a real-time send schedule (the DTS clock, like `ffmpeg -re`) and the position of every
  video frame; `publish` sends it over one SRT connection recording each send instant;
  `VideoTails` follows a received TS stream and records when each video frame's last packet
  arrived. Frames are matched by the last 16 bytes of their elementary stream (the H.264
  slice tail), which every relay under test (moqsrt's demux/remux, ffmpeg's remux,
  srt-live-transmit's pass-through) carries unchanged.

All times are `time.monotonic()` seconds; everything is loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.srt import (
    Accept,
    HandshakeInfo,
    SrtConnection,
    SrtError,
    SrtOptions,
    SrtReactor,
    set_libsrt_log_level,
)

TS = 188
MESSAGE = 7 * TS
TAIL = 16
VIDEO_STREAM_TYPES = frozenset({0x1B, 0x24})  # H.264, H.265
PES_STREAM_TYPES = frozenset({0x1B, 0x24, 0x0F, 0x03, 0x04, 0x81, 0x87, 0x06})
CONNECT_RETRY_S = 0.2


# ---- TS parsing (just enough: PAT, PMT, PES starts, video PES tails) --------------------------


def _payload(pkt: bytes | memoryview) -> tuple[int, bool, int]:
    """(pid, payload_unit_start, offset of the payload in the packet; 188 when none)."""
    pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
    afc = (pkt[3] >> 4) & 3
    start = 4
    if afc & 2:
        start = 5 + pkt[4]
    if not afc & 1:
        start = TS
    return pid, bool(pkt[1] & 0x40), min(start, TS)


def _section(pkt: bytes | memoryview, start: int) -> bytes:
    body = bytes(pkt[start:])
    return body[1 + body[0] :]


def _pat_pmt_pid(section: bytes) -> int | None:
    """First program's PMT PID from a PAT section."""
    length = ((section[1] & 0x0F) << 8) | section[2]
    for i in range(8, 3 + length - 4, 4):
        program = (section[i] << 8) | section[i + 1]
        if program != 0:
            return ((section[i + 2] & 0x1F) << 8) | section[i + 3]
    return None


def _pmt_streams(section: bytes) -> dict[int, int]:
    """{elementary PID: stream_type} from a PMT section."""
    length = ((section[1] & 0x0F) << 8) | section[2]
    info_len = ((section[10] & 0x0F) << 8) | section[11]
    i = 12 + info_len
    out: dict[int, int] = {}
    while i + 5 <= 3 + length - 4:
        stream_type = section[i]
        pid = ((section[i + 1] & 0x1F) << 8) | section[i + 2]
        es_len = ((section[i + 3] & 0x0F) << 8) | section[i + 4]
        out[pid] = stream_type
        i += 5 + es_len
    return out


def _pes_time_90k(pes: bytes | memoryview) -> int | None:
    """DTS (else PTS) of a PES header, 90 kHz; None when absent or too short."""
    if len(pes) < 14 or pes[0] != 0 or pes[1] != 0 or pes[2] != 1:
        return None
    flags = pes[7] >> 6
    if not flags & 2:
        return None
    at = 14 if flags == 3 and len(pes) >= 19 else 9
    b = pes[at : at + 5]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


@dataclass(slots=True)
class VideoTails:
    """Follows a TS byte stream (whole packets) and reports video frames as they complete.

    `feed(data, at)` takes received TS at monotonic time `at`; a video PES is complete when
    the next one starts on its PID, and `frames` then maps its key (its last 16 elementary
    stream bytes) to the arrival time of its last packet. `order` keeps the keys in stream
    order with the index of the packet that ended them (publisher-side planning).
    """

    frames: dict[bytes, float] = field(default_factory=dict)
    order: list[tuple[bytes, int, int]] = field(default_factory=list)
    """(key, index of the frame's last packet, index of the packet starting the next one)"""
    pes_times: list[tuple[int, int]] = field(default_factory=list)
    """(packet index, DTS/PTS 90 kHz) of every PES start on an audio/video PID"""
    packets: int = 0
    _pmt: int | None = None
    _video: int | None = None
    _pes_pids: frozenset[int] = frozenset()
    _tail: bytearray = field(default_factory=bytearray)
    _open: bool = False
    _last_at: float = 0.0
    _last_index: int = -1

    def feed(self, data: bytes | memoryview, at: float) -> None:
        """Consume whole 188-byte packets from `data`, received at `at`."""
        view = memoryview(data)
        for off in range(0, len(view) - TS + 1, TS):
            self._packet(view[off : off + TS], at)
            self.packets += 1

    def _packet(self, pkt: memoryview, at: float) -> None:
        if pkt[0] != 0x47:
            return
        pid, pusi, start = _payload(pkt)
        if start >= TS:
            return
        if pid == 0 and pusi and self._pmt is None:
            self._pmt = _pat_pmt_pid(_section(pkt, start))
            return
        if pid == self._pmt and pusi and self._video is None:
            streams = _pmt_streams(_section(pkt, start))
            for es_pid, kind in streams.items():
                if kind in VIDEO_STREAM_TYPES:
                    self._video = es_pid
                    break
            self._pes_pids = frozenset(p for p, k in streams.items() if k in PES_STREAM_TYPES)
            return
        if pusi and pid in self._pes_pids:
            stamp = _pes_time_90k(pkt[start:])
            if stamp is not None:
                self.pes_times.append((self.packets, stamp))
        if pid != self._video:
            return
        body = pkt[start:]
        if pusi:
            if self._open and len(self._tail) >= TAIL:
                key = bytes(self._tail[-TAIL:])
                self.frames.setdefault(key, self._last_at)
                self.order.append((key, self._last_index, self.packets))
            self._tail = bytearray()
            self._open = True
            if len(body) < 9:
                return
            body = body[9 + body[8] :]
        if self._open:
            self._tail += body
            if len(self._tail) > 4 * TAIL:
                del self._tail[:-TAIL]
            self._last_at = at
            self._last_index = self.packets


@dataclass(frozen=True, slots=True)
class TsPlan:
    """A TS file cut into SRT messages with a real-time schedule.

    `messages[i]` (at most 1316 bytes, whole packets) is due `due_s[i]` seconds after the
    start: the running maximum of the PES start times (DTS, else PTS) seen up to its last
    packet, which is how `ffmpeg -re` releases a muxed stream. `frames` lists each video frame
    as (key, message holding its last packet, message holding the next video frame's start,
    due time of that last message).
    """

    messages: list[bytes]
    due_s: list[float]
    frames: list[tuple[bytes, int, int, float]]

    @classmethod
    def load(cls, path: Path, seconds: float) -> TsPlan:
        """Plan the first `seconds` of media in `path`."""
        data = path.read_bytes()
        data = data[: len(data) // TS * TS]
        tails = VideoTails()
        tails.feed(data, 0.0)
        n_packets = len(data) // TS
        pace = [0.0] * n_packets
        first: int | None = None
        best = 0.0
        marks = iter(tails.pes_times)
        mark = next(marks, None)
        for i in range(n_packets):
            while mark is not None and mark[0] <= i:
                if first is None:
                    first = mark[1]
                best = max(best, (mark[1] - first) / 90_000)
                mark = next(marks, None)
            pace[i] = best
        messages: list[bytes] = []
        due: list[float] = []
        for off in range(0, n_packets, 7):
            end = min(off + 7, n_packets)
            if pace[end - 1] > seconds:
                break
            messages.append(data[off * TS : end * TS])
            due.append(pace[end - 1])
        frames = [
            (key, last // 7, nxt // 7, due[last // 7])
            for key, last, nxt in tails.order
            if nxt // 7 < len(messages)
        ]
        return cls(messages=messages, due_s=due, frames=frames)


async def publish(conn: SrtConnection, plan: TsPlan, start_at: float, sent_at: list[float]) -> int:
    """Send `plan` on `conn` in real time from monotonic `start_at`, recording in `sent_at[i]`
    when message i was handed to libsrt. Returns how often libsrt's buffer was full."""
    full = 0
    i = 0
    n = len(plan.messages)
    while i < n:
        due = start_at + plan.due_s[i]
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        now = time.monotonic()
        while i < n and start_at + plan.due_s[i] <= now:
            while not conn.send(plan.messages[i]):
                full += 1
                await asyncio.sleep(0.001)
            sent_at[i] = time.monotonic()
            i += 1
    return full


async def watch(conn: SrtConnection, tails: VideoTails, deadline: float) -> int:
    """Feed everything `conn` receives into `tails` until the peer ends or `deadline`;
    returns the bytes received."""
    got = 0
    with contextlib.suppress(TimeoutError, SrtError):
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
            while True:
                batch = await conn.recv_batch()
                if not batch:
                    break
                at = time.monotonic()
                for msg in batch:
                    got += len(msg)
                    tails.feed(msg, at)
    return got


async def connect_retry(
    reactor: SrtReactor,
    host: str,
    port: int,
    options: SrtOptions,
    deadline: float,
    local: tuple[str, int] | None = None,
) -> SrtConnection:
    """Connect as a caller (from `local`, when given), retrying refusals and timeouts until
    `deadline` (then raise)."""
    while True:
        try:
            return await reactor.connect(host, port, options, local=local)
        except SrtError:
            if time.monotonic() + CONNECT_RETRY_S >= deadline:
                raise
            await asyncio.sleep(CONNECT_RETRY_S)


async def accept_any(info: HandshakeInfo) -> Accept:
    """Handshake hook of the viewer listener: let every caller in, keyed by its stream id."""
    return Accept(context=info.stream_id)


# ---- the viewer process ----------------------------------------------------------------------


@dataclass(slots=True)
class _Counts:
    bytes: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    dropped: int = 0
    """packets libsrt dropped or lost for good at the receivers (srt_bstats pktRcvDrop)"""
    ended: int = 0
    errors: list[str] = field(default_factory=list)


async def _count(conn: SrtConnection, name: str, counts: _Counts) -> None:
    counts.bytes.setdefault(name, 0)
    try:
        while True:
            batch = await conn.recv_batch()
            if not batch:
                break
            counts.messages += len(batch)
            counts.bytes[name] += sum(len(m) for m in batch)
    except SrtError as exc:
        counts.errors.append(f"{name}: {exc}")
    finally:
        counts.ended += 1
        with contextlib.suppress(SrtError):
            counts.dropped += conn.stats().pkt_recv_drop
        conn.close()


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def _view(args: argparse.Namespace) -> _Counts:
    counts = _Counts()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + args.deadline
    tasks: set[asyncio.Task[None]] = set()
    conns: list[SrtConnection] = []
    async with SrtReactor() as reactor:
        expect: int
        if args.listen:
            host, port = _split(args.listen)
            options = SrtOptions(latency_ms=args.latency_ms)
            listener = await reactor.listen(host, port, options, accept_any, backlog=256)
            expect = args.expect

            async def acceptor() -> None:
                async for conn in listener:
                    conns.append(conn)
                    name = str(conn.context or conn.stream_id)
                    tasks.add(asyncio.create_task(_count(conn, name, counts)))

            accepting = asyncio.create_task(acceptor())
            print("ready", flush=True)
        else:
            host, port = _split(args.connect)
            local = _split(args.local) if args.local else None
            expect = len(args.sid)
            opened = await asyncio.gather(
                *(
                    connect_retry(
                        reactor,
                        host,
                        port,
                        SrtOptions(latency_ms=args.latency_ms, stream_id=sid),
                        deadline,
                        local,
                    )
                    for sid in args.sid
                )
            )
            for i, (sid, conn) in enumerate(zip(args.sid, opened, strict=True)):
                conns.append(conn)
                tasks.add(asyncio.create_task(_count(conn, f"{sid}#{i}", counts)))
            accepting = None
            print("ready", flush=True)
        while not stop.is_set() and time.monotonic() < deadline:
            if counts.ended >= expect:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await stop.wait()
        if accepting is not None:
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
            await listener.aclose()
        for conn in conns:
            conn.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def main(argv: Iterable[str] | None = None) -> None:
    """Entry point of the viewer process (see the module docs)."""
    parser = argparse.ArgumentParser(prog="_srt_load")
    sub = parser.add_subparsers(dest="cmd", required=True)
    view = sub.add_parser("view", help="count bytes on SRT viewer connections")
    view.add_argument("--listen", help="host:port: accept this many callers (--expect)")
    view.add_argument("--expect", type=int, default=0)
    view.add_argument("--connect", help="host:port: call it once per --sid")
    view.add_argument("--sid", action="append", default=[], help="stream id of one caller")
    view.add_argument("--local", help="host:port every caller sends from (one shared UDP port)")
    view.add_argument("--latency-ms", type=int, default=120)
    view.add_argument("--deadline", type=float, default=60.0, help="seconds, then stop")
    args = parser.parse_args(list(argv) if argv is not None else None)
    set_libsrt_log_level(logging.ERROR)  # a disconnect is not news here
    counts = asyncio.run(_view(args))
    out = {
        "bytes": counts.bytes,
        "messages": counts.messages,
        "dropped": counts.dropped,
        "ended": counts.ended,
        "errors": counts.errors[:5],
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
