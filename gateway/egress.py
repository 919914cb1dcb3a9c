"""SRT egress: TS chunks out of the model, paced and sent to one viewer's SRT connection.

`Sender` is the per-viewer adapter: a reader task buffers TS chunks (bounded), the sending side
stamps everything buffered in one pass with the `Pacer` and hands the payloads to libsrt. A
viewer whose link cannot keep up is skipped ahead to the next keyframe; nothing here waits on
the link, so a slow viewer never holds back the publisher or the other viewers.

Cost notes (tests/bench/bench_gateway.py, CPU seconds per delivered GB): the sender works on
batches (every chunk buffered when it wakes), so its per-chunk cost is a join and a slice;
libsrt's send buffer is read at most every `BUFFER_CHECK_US` (and `send()` refusing is
noticed at once), not before every payload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Final

import structlog

from gateway.pacer import Burst, Pacer
from gateway.srt import SrtConnection, SrtError, srt_now_us
from mux.export import TsChunk

__all__ = ["Sender", "random_access"]

_log = structlog.get_logger("moqsrt.srt.server")

_TS_PACKET: Final = 188


def random_access(data: bytes) -> bool:
    """True when a TS packet in `data` carries the random_access_indicator (a keyframe start,
    which the exporter sets on the first packet of every video keyframe)."""
    for off in range(0, len(data) - _TS_PACKET + 1, _TS_PACKET):
        # adaptation_field_control has an adaptation field, of non-zero length, with RAI set
        if data[off + 3] & 0x20 and data[off + 4] > 0 and data[off + 5] & 0x40:
            return True
    return False


class Sender:
    """Egress adapter: reads TS chunks, stamps them with the `Pacer`, sends SRT payloads.

    One per viewer connection (it does not own `conn`). A reader task pulls chunks from the
    exporter into a bounded buffer (so a stalled link holds back the model consumer, which
    then skips ahead, rather than memory growing); the sending side takes everything buffered
    at once, and flushes a partial payload as soon as the buffer runs dry. A slow viewer
    (libsrt's unsent bytes above `send_buffer_limit_bytes`, or `send()` refused) drops what is
    queued, including the rest of the batch being sent, and skips chunks until the next
    keyframe. `latency_ms` is the SRT latency: half of it is the pacer's lateness budget.
    """

    BUFFER_CHUNKS: Final = 256
    #: How often libsrt's send buffer is read (µs). At 100 Mbit/s, 20 ms is 250 kB, a quarter
    #: of the smallest limit; a full buffer makes `send()` refuse anyway.
    BUFFER_CHECK_US: Final = 20_000

    def __init__(
        self, conn: SrtConnection, *, latency_ms: int, send_buffer_limit_bytes: int
    ) -> None:
        self._conn = conn
        self._latency_s = latency_ms / 1000
        self._pacer = Pacer(budget_us=latency_ms * 1000 // 2)
        self._limit = send_buffer_limit_bytes
        self.sent_bytes = 0
        """TS bytes libsrt accepted for this viewer."""
        self.skipped_bytes = 0
        """TS bytes dropped for this viewer (slow link)."""
        self.skips = 0
        self.ended_by_source = False
        self._skipping = False
        self._next_check_us = 0
        self._buffer: deque[TsChunk] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._source_done = False
        self._source_error: BaseException | None = None

    async def run(self, chunks: AsyncIterator[TsChunk]) -> None:
        """Send until `chunks` ends (sets `ended_by_source`) or raises (re-raised here, after
        what was read before the error has been sent)."""
        reader = asyncio.ensure_future(self._read(chunks))
        buffer = self._buffer
        try:
            while True:
                if not buffer:
                    tail = self._pacer.flush()
                    if tail is not None:
                        self._send(tail, srt_now_us())
                    if self._source_done:
                        break
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                batch = list(buffer)
                buffer.clear()
                self._space.set()
                self._take(batch)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self.ended_by_source = True
        if self._source_error is not None:
            raise self._source_error

    async def _read(self, chunks: AsyncIterator[TsChunk]) -> None:
        try:
            async for chunk in chunks:
                self._buffer.append(chunk)
                self._ready.set()
                while len(self._buffer) >= self.BUFFER_CHUNKS:
                    self._space.clear()
                    await self._space.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (handed to run(), which re-raises it)
            self._source_error = exc
        finally:
            self._source_done = True
            self._ready.set()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _take(self, batch: list[TsChunk]) -> None:
        if self._skipping:
            start = next((i for i, c in enumerate(batch) if random_access(c.data)), len(batch))
            self.skipped_bytes += sum(len(c.data) for c in batch[:start])
            if start == len(batch):
                return
            del batch[:start]
            self._skipping = False
            self._pacer.reset()
        # libsrt's clock: the pacer's instants become SRT source times (srctime).
        now_us = srt_now_us()
        for burst in self._pacer.push_many(batch, now_us):
            self._send(burst, now_us)

    def _send(self, burst: Burst, now_us: int) -> None:
        # `burst.send_at_us` is the SRT source time the pacer chose on libsrt's clock (never in
        # the future, at most half a latency in the past): the receiver's TSBPD plays each
        # payload out at that time plus the latency, which undoes our pipeline's bunching.
        if self._skipping:
            self.skipped_bytes += burst.nbytes
            return
        conn = self._conn
        if now_us >= self._next_check_us:
            self._next_check_us = now_us + self.BUFFER_CHECK_US
            if conn.send_buffer_bytes() > self._limit:
                self._skip(burst.nbytes)
                return
        send_at_us = burst.send_at_us
        sent = 0
        for payload in burst.payloads:
            if not conn.send(payload, srctime_us=send_at_us):
                self.sent_bytes += sent
                self._skip(burst.nbytes - sent)
                return
            sent += len(payload)
        self.sent_bytes += sent

    def _skip(self, nbytes: int) -> None:
        self._skipping = True
        self.skips += 1
        self.skipped_bytes += nbytes + self._pacer.drop_pending()
        _log.info("srt.viewer_skipping", skipped_bytes=nbytes, skips=self.skips)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded by `timeout_s`) until the viewer has the tail: libsrt's send buffer is
        acknowledged, then one latency more, since the receiver holds packets for their TSBPD
        play time and drops what it still holds when our close reaches it."""
        with contextlib.suppress(TimeoutError, SrtError):
            async with asyncio.timeout(timeout_s):
                # libsrt offers no event for "send buffer empty": poll it, bounded.
                while self._conn.send_buffer_bytes() > 0 and not self._conn.ended:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                if not self._conn.ended:
                    await asyncio.sleep(self._latency_s + 0.05)
