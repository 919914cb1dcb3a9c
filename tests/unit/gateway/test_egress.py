"""The per-viewer SRT sender: batching, libsrt buffer checks, skipping (fakes, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from gateway.egress import Sender
from gateway.srt import SrtConnection, srt_now_us
from mux.export import TsChunk


def packet(pid: int, *, rai: bool = False, fill: int = 0) -> bytes:
    if rai:
        header = bytes([0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x30, 1, 0x40])
    else:
        header = bytes([0x47, pid >> 8, pid & 0xFF, 0x10])
    return header + bytes([fill]) * (188 - len(header))


@dataclass
class CountingConn:
    unacked: int = 0
    sent: list[bytes] = field(default_factory=list)
    srctimes: list[int | None] = field(default_factory=list)
    buffer_reads: int = 0
    ended: bool = False

    def send(self, payload: bytes, *, srctime_us: int | None = None) -> bool:
        self.sent.append(payload)
        self.srctimes.append(srctime_us)
        return True

    def send_many(self, payloads: Sequence[bytes], *, srctime_us: int | None = None) -> int:
        """Like SrtConnection.send_many: how many of `payloads` went, stopping at a refusal."""
        for queued, payload in enumerate(payloads):
            if not self.send(payload, srctime_us=srctime_us):
                return queued
        return len(payloads)

    def send_buffer_bytes(self) -> int:
        self.buffer_reads += 1
        return self.unacked


def make(conn: CountingConn, limit: int = 1_000_000) -> Sender:
    return Sender(cast(SrtConnection, conn), latency_ms=120, send_buffer_limit_bytes=limit)


async def test_send_buffer_is_read_at_most_every_check_interval() -> None:
    conn = CountingConn()
    s = make(conn)
    frames = [TsChunk(packet(0x100, fill=i % 200) * 3, i * 1000) for i in range(300)]

    async def source() -> AsyncIterator[TsChunk]:
        for chunk in frames:
            yield chunk
            await asyncio.sleep(0)

    started = srt_now_us()
    async with asyncio.timeout(5):
        await s.run(source())
    elapsed_us = srt_now_us() - started
    assert b"".join(conn.sent) == b"".join(c.data for c in frames)
    assert len(conn.sent) > 20  # many bursts ...
    # ... but one buffer read per interval, not one per burst
    assert conn.buffer_reads <= elapsed_us // Sender.BUFFER_CHECK_US + 1
    stamps = [t for t in conn.srctimes if t is not None]
    assert len(stamps) == len(conn.sent)
    assert stamps == sorted(stamps)


async def test_a_full_send_buffer_is_noticed_within_one_check_interval() -> None:
    conn = CountingConn()
    s = make(conn, limit=1_000_000)
    gop = [TsChunk(packet(0x100, rai=True), 0)] + [
        TsChunk(packet(0x100, fill=i), i * 1000) for i in range(1, 50)
    ]

    async def source() -> AsyncIterator[TsChunk]:
        yield gop[0]
        await asyncio.sleep(0)
        conn.unacked = 5_000_000  # the link stalls
        await asyncio.sleep(2 * Sender.BUFFER_CHECK_US / 1e6)
        for chunk in gop[1:]:
            yield chunk
            await asyncio.sleep(0)

    async with asyncio.timeout(5):
        await s.run(source())
    assert conn.sent[0] == gop[0].data
    assert s.skips == 1
    assert b"".join(conn.sent) == gop[0].data  # nothing after the stall
    assert s.sent_bytes + s.skipped_bytes == sum(len(c.data) for c in gop)
