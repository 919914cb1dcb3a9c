"""SRT egress: TS chunks out of the model, shared per broadcast, paced per viewer.

`ExportHub` runs one `export_broadcast` (one model consumer, one `TsExporter`) per broadcast
and hands every chunk, as a `Piece`, to each of that broadcast's viewers; `HubRegistry` finds
or starts the hub of a path and stops it with its last viewer. `Sender` is the per-viewer
adapter: it queues pieces, stamps everything queued in one pass with the `Pacer` and hands the
payloads to libsrt. A viewer whose link cannot keep up is skipped ahead to the next keyframe;
nothing here waits on the link, so a slow viewer never holds back the publisher or the other
viewers.

Metering (egress is billed per viewer, for what that viewer got out of the model): the hub's
model consumer counts into a private `Usage`; every piece carries that meter's running totals
`(groups, frames, bytes)` after the chunk was made. A viewer's sender adds to its own meter
the difference between the totals of the last piece it took off its queue and those it had
already billed, starting from the totals just before its first piece. So a viewer is billed
for the model reads the hub made up to every piece it took (sent, or skipped because its own
link was slow, as when it had its own consumer), not for pieces before it joined, nor for
pieces it never took (its queue overflowed, or it left); reads after the last piece (the end
of the broadcast) go to the viewers still attached. Reads count when the hub makes the piece
they led to, so frames read ahead of a late viewer's first piece go unbilled to it: it is
billed at most what it received, never more. Viewers attached for the whole broadcast are
each billed exactly what one consumer of it reads.

Cost notes (tests/bench/bench_gateway.py, CPU seconds per delivered GB): the TS mux runs once
per broadcast, not once per viewer; the sender works on batches (every piece queued when it
wakes), so its per-chunk cost is a length check (whole payloads go out uncopied); libsrt's
send buffer is read at most every `BUFFER_CHECK_US` (and `send_many()` refusing is
noticed at once), not before every payload; a burst goes to libsrt in one `send_many` call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Final, NamedTuple

import structlog

from gateway.pacer import Burst, Pacer
from gateway.srt import SrtConnection, SrtError, srt_now_us
from gateway.ts_source import export_broadcast
from model import BroadcastConsumer, Usage
from mux.export import TsChunk

__all__ = ["ExportHub", "HubRegistry", "Piece", "Sender", "random_access"]

Totals = tuple[int, int, int]
"""Running model usage `(groups, frames, bytes)` of a hub's consumer."""

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


def _starts_with_pat(data: bytes) -> bool:
    # PID 0 with payload_unit_start_indicator: the exporter's PSI, ahead of every keyframe
    return len(data) >= _TS_PACKET and data[1] & 0x5F == 0x40 and data[2] == 0


class Piece(NamedTuple):
    """One TS chunk as a hub hands it to every viewer (shared, never modified).

    `data`/`media_ts_us` as in `TsChunk`; `join` marks a point where a viewer may start or
    resume (the chunk opening a video keyframe with PAT and PMT; in a broadcast without video,
    any chunk opening with PAT); `totals` is the hub consumer's running usage after the chunk
    was made (None: not metered, e.g. a sender fed by `Sender.run` directly).
    """

    data: bytes
    media_ts_us: int
    join: bool
    totals: Totals | None


class Sender:
    """Egress adapter: reads TS chunks, stamps them with the `Pacer`, sends SRT payloads.

    One per viewer connection (it does not own `conn`). A reader task pulls chunks from the
    exporter into a bounded buffer (so a stalled link holds back the model consumer, which
    then skips ahead, rather than memory growing); the sending side takes everything buffered
    at once, and flushes a partial payload as soon as the buffer runs dry. A slow viewer
    (libsrt's unsent bytes above `send_buffer_limit_bytes`, or `send_many()` refused a payload)
    drops what is queued, including the rest of the batch being sent, and skips chunks until
    the next keyframe. `latency_ms` is the SRT latency: half of it is the pacer's lateness budget.
    """

    BUFFER_CHUNKS: Final = 256
    """Chunks `run` buffers before its reader waits (the old, unshared source)."""
    QUEUE_PIECES: Final = 8192
    """Pieces a hub may queue for this viewer (about 10 MB of shared chunks, several seconds
    of media) before the queue is dropped and the viewer skips to the next join point."""
    #: How often libsrt's send buffer is read (µs). At 100 Mbit/s, 20 ms is 250 kB, a quarter
    #: of the smallest limit; a full buffer makes `send_many()` refuse anyway.
    BUFFER_CHECK_US: Final = 20_000

    def __init__(
        self,
        conn: SrtConnection,
        *,
        latency_ms: int,
        send_buffer_limit_bytes: int,
        meter: Usage | None = None,
    ) -> None:
        self._conn = conn
        self._latency_s = latency_ms / 1000
        self._pacer = Pacer(budget_us=latency_ms * 1000 // 2)
        self._limit = send_buffer_limit_bytes
        self.meter = meter
        """This viewer's egress meter (the stats guard's): billed from the pieces' totals."""
        self.sent_bytes = 0
        """TS bytes libsrt accepted for this viewer."""
        self.skipped_bytes = 0
        """TS bytes dropped for this viewer (slow link)."""
        self.skips = 0
        self.ended_by_source = False
        self._skipping = False
        self._next_check_us = 0
        self._billed: Totals | None = None
        self._buffer: deque[Piece] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._source_done = False
        self._source_error: BaseException | None = None
        self._final: Totals | None = None

    # -- fed by a hub (loop thread) ---------------------------------------------------------

    def start(self, billed: Totals, pieces: list[Piece]) -> None:
        """Begin with `pieces` (a replay from a join point, may be empty); `billed`: the hub's
        totals just before the first piece this viewer gets."""
        self._billed = billed
        self._buffer.extend(pieces)
        self._ready.set()

    def offer(self, piece: Piece) -> None:
        """Queue one piece. When the queue is full, everything queued is dropped unbilled and
        the viewer skips to the next join point (its sender task is starved)."""
        buffer = self._buffer
        if len(buffer) >= self.QUEUE_PIECES:
            last = buffer[-1].totals
            if last is not None:
                self._billed = last
            self.skipped_bytes += sum(len(p.data) for p in buffer)
            buffer.clear()
            self._skip(0)
        buffer.append(piece)
        self._ready.set()

    def source_ended(self, totals: Totals | None, error: BaseException | None) -> None:
        """The hub's export ended (`error` None: the broadcast finished) with `totals`."""
        self._final = totals
        self._source_error = error
        self._source_done = True
        self._ready.set()

    async def run(self, chunks: AsyncIterator[TsChunk] | None = None) -> None:
        """Send until the source ends (sets `ended_by_source`) or fails (its error re-raised
        here, after what came before it has been sent). The source is `chunks` (this sender
        reads it, unshared), or, when None, the hub that calls `start`/`offer`."""
        reader = None if chunks is None else asyncio.ensure_future(self._read(chunks))
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
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        self._bill(self._final)
        self.ended_by_source = True
        if self._source_error is not None:
            raise self._source_error

    async def _read(self, chunks: AsyncIterator[TsChunk]) -> None:
        try:
            async for chunk in chunks:
                data = chunk.data
                self._buffer.append(Piece(data, chunk.media_ts_us, random_access(data), None))
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

    def _bill(self, totals: Totals | None) -> None:
        billed = self._billed
        if totals is None or billed is None or self.meter is None or totals == billed:
            return
        meter = self.meter
        meter.groups += totals[0] - billed[0]
        meter.frames += totals[1] - billed[1]
        meter.bytes += totals[2] - billed[2]
        self._billed = totals

    def _take(self, batch: list[Piece]) -> None:
        self._bill(batch[-1].totals)
        if self._skipping:
            start = next((i for i, p in enumerate(batch) if p.join), len(batch))
            self.skipped_bytes += sum(len(p.data) for p in batch[:start])
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
        payloads = burst.payloads
        # One call for the burst (libsrt's per-message cost is mostly the ctypes call); a full
        # send buffer refuses a payload, and it and the rest of the burst are skipped.
        queued = conn.send_many(payloads, srctime_us=burst.send_at_us)
        if queued == len(payloads):
            self.sent_bytes += sum(map(len, payloads))
            return
        sent = sum(map(len, payloads[:queued]))
        self.sent_bytes += sent
        self._skip(burst.nbytes - sent)

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
                    # A loaded receiver plays out late; a margin past one latency keeps the tail.
                    await asyncio.sleep(self._latency_s + 0.25)


class ExportHub:
    """One TS export of a broadcast, shared by the SRT viewers of it.

    It owns a model consumer (metered into a private `Usage`, see the module's metering rule)
    and one `export_broadcast` task, started by the first `attach` and cancelled by `close`
    (`HubRegistry` calls it when the last viewer leaves). A viewer attaching gets the chunks
    since the latest join point at once (the current GOP: the tune-in burst a fresh model
    consumer would give, since it starts at the latest group), or, when there is none yet or
    it was longer than `REPLAY_PIECES`, starts at the next join point.
    """

    REPLAY_PIECES: Final = 4096
    """Chunks kept from the latest join point for late viewers (about 5 MB)."""

    def __init__(
        self,
        consumer: BroadcastConsumer,
        *,
        latency_ms: int,
        on_done: Callable[[ExportHub], None] | None = None,
    ) -> None:
        self.usage = Usage()
        """What the shared consumer read from the model (private to the hub)."""
        self.consumer = consumer.with_meter(self.usage)
        self._latency_ms = latency_ms
        self._on_done = on_done
        self._senders: list[Sender] = []
        self._waiting: list[Sender] = []
        self._replay: list[Piece] | None = None
        self._replay_base: Totals = (0, 0, 0)
        self._last: Totals = (0, 0, 0)
        self._seen_video = False
        self._first = True
        self._task: asyncio.Task[None] | None = None
        self.done = False
        """True once the export ended (the broadcast finished or failed) or the hub closed."""

    @property
    def viewers(self) -> int:
        """Senders attached (joined or waiting for a join point)."""
        return len(self._senders) + len(self._waiting)

    def attach(self, sender: Sender) -> None:
        """Feed `sender` from now on (starting the export on first use)."""
        if self.done:
            sender.source_ended(None, None)
            return
        if self._replay is not None:
            sender.start(self._replay_base, self._replay)
            self._senders.append(sender)
        else:
            self._waiting.append(sender)
        if self._task is None:
            self._task = asyncio.ensure_future(self._pump())

    def detach(self, sender: Sender) -> None:
        """Stop feeding `sender` (idempotent)."""
        for group in (self._senders, self._waiting):
            if sender in group:
                group.remove(sender)

    async def close(self) -> None:
        """Stop the export (its senders see the source end) and wait for it."""
        if self._task is None:
            self._finish(None)
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _pump(self) -> None:
        chunks = export_broadcast(self.consumer, latency_ms=self._latency_ms)
        usage = self.usage
        error: BaseException | None = None
        try:
            async for data, media_ts_us in chunks:
                totals = (usage.groups, usage.frames, usage.bytes)
                ra = random_access(data)
                if ra:
                    self._seen_video = True
                join = self._first or (_starts_with_pat(data) and (ra or not self._seen_video))
                self._first = False
                piece = Piece(data, media_ts_us, join, totals)
                if join:
                    self._replay = [piece]
                    self._replay_base = self._last
                    if self._waiting:
                        for sender in self._waiting:
                            sender.start(self._last, [])
                        self._senders += self._waiting
                        self._waiting.clear()
                elif self._replay is not None:
                    self._replay.append(piece)
                    if len(self._replay) > self.REPLAY_PIECES:
                        self._replay = None
                self._last = totals
                for sender in self._senders:
                    sender.offer(piece)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001  (handed to every viewer)
            error = exc
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()
            self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        usage = self.usage
        totals = (usage.groups, usage.frames, usage.bytes)
        for sender in self._senders:
            sender.source_ended(totals, error)
        for sender in self._waiting:
            sender.source_ended(None, error)
        self._senders.clear()
        self._waiting.clear()
        self._replay = None
        if self._on_done is not None:
            self._on_done(self)


class HubRegistry:
    """The live `ExportHub` of each (origin, path), started with its first viewer and stopped
    with its last. Loop thread only; owned by the server, `aclose()` stops every hub."""

    def __init__(self, *, latency_ms: int) -> None:
        self._latency_ms = latency_ms
        self._hubs: dict[Hashable, ExportHub] = {}

    def __len__(self) -> int:
        return len(self._hubs)

    def attach(self, key: Hashable, consumer: BroadcastConsumer, sender: Sender) -> ExportHub:
        """Attach `sender` to the hub at `key`, or to a new one reading `consumer` (when there
        is none, or the one there reads a broadcast that has ended). Returns the hub."""
        hub = self._hubs.get(key)
        if hub is None or hub.done or hub.consumer.finished:
            hub = ExportHub(consumer, latency_ms=self._latency_ms, on_done=self._forget(key))
            self._hubs[key] = hub
        hub.attach(sender)
        return hub

    async def detach(self, hub: ExportHub, sender: Sender) -> None:
        """Take `sender` off `hub`; the last one out stops the hub."""
        hub.detach(sender)
        if not hub.viewers:
            await hub.close()

    async def aclose(self) -> None:
        """Stop every hub."""
        for hub in list(self._hubs.values()):
            await hub.close()

    def _forget(self, key: Hashable) -> Callable[[ExportHub], None]:
        def forget(hub: ExportHub) -> None:
            if self._hubs.get(key) is hub:
                del self._hubs[key]

        return forget
