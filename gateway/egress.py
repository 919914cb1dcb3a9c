"""SRT egress: TS out of the model, exported once per broadcast, sent to each viewer at once.

`ExportHub` runs one `export_batches` (one model consumer, one `TsExporter`) per broadcast and
hands each exported frame, as a `Piece` (its 1316-byte payloads and media timestamp), to every
viewer's `Sender`, synchronously: the sender stamps the piece with its `Pacer` and hands the
payloads to libsrt in the same call. No queue and no task per viewer: sends never block (a
full libsrt buffer refuses), so nothing is gained by deferring them, and each deferral would
cost an event-loop wake-up per frame per viewer. A viewer whose link cannot keep up is skipped
ahead to the next keyframe; nothing here waits on the link, so a slow viewer never holds back
the publisher or the other viewers. `HubRegistry` finds or starts the hub of a path and stops
it with its last viewer.

Metering (egress is billed per viewer, for what that viewer got out of the model): the hub's
model consumer counts into a private `Usage`; every piece carries that meter's running totals
`(groups, frames, bytes)` after the piece was made. A viewer's sender adds to its own meter
the difference between the totals of the last piece it was handed and those it had already
billed, starting from the totals just before its first piece. So a viewer is billed for the
model reads the hub made up to every piece it was handed (sent, or skipped because its own link
was slow, as when it had its own consumer), not for pieces before it joined, nor after it left;
reads after the last piece (the end of the broadcast) go to the viewers still attached. Reads
count when the hub makes the piece they led to, so frames read ahead of a late viewer's first
piece go unbilled to it: it is billed at most what it received, never more. Viewers attached
for the whole broadcast are each billed exactly what one consumer of it reads.

Cost notes (tests/bench/bench_gateway.py, CPU seconds per delivered GB): the TS mux runs once
per broadcast, not once per viewer; a viewer's cost per frame is one stamp, one `send_many`
call for the frame's payloads (whole payloads go out uncopied) and three integer subtractions
for billing; libsrt's send buffer is read at most every `BUFFER_CHECK_US` (and `send_many()`
refusing is noticed at once), not before every payload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from typing import Final, NamedTuple

import structlog

from gateway.pacer import Pacer
from gateway.srt import SrtConnection, SrtError, srt_now_us
from gateway.ts_source import export_batches
from model import BroadcastConsumer, Usage
from mux.export import CHUNK_BYTES, TsFrame, cut_payloads
from mux.ts_mux import TS_PACKET_BYTES

__all__ = ["ExportHub", "HubRegistry", "Piece", "Sender", "pieces", "random_access"]

Totals = tuple[int, int, int]
"""Running model usage `(groups, frames, bytes)` of a hub's consumer."""

_log = structlog.get_logger("moqsrt.srt.server")


def random_access(data: bytes) -> bool:
    """True when a TS packet in `data` carries the random_access_indicator (a keyframe start,
    which the exporter sets on the first packet of every video keyframe)."""
    for off in range(0, len(data) - TS_PACKET_BYTES + 1, TS_PACKET_BYTES):
        # adaptation_field_control has an adaptation field, of non-zero length, with RAI set
        if data[off + 3] & 0x20 and data[off + 4] > 0 and data[off + 5] & 0x40:
            return True
    return False


def _starts_with_pat(data: bytes | bytearray) -> bool:
    # PID 0 with payload_unit_start_indicator: the exporter's PSI, ahead of every keyframe
    return len(data) >= TS_PACKET_BYTES and data[1] & 0x5F == 0x40 and data[2] == 0


class Piece(NamedTuple):
    """One exported frame as a hub hands it to every viewer (shared, never modified).

    `payloads`: the frame's TS as SRT payloads (whole TS packets, at most 1316 bytes each, in
    order); `media_ts_us`: their media timestamp (µs, `TsChunk.media_ts_us`); `join`: a point
    where a viewer may start or resume (a video keyframe opening with PAT and PMT; in a
    broadcast without video, any piece opening with PAT); `totals`: the hub consumer's running
    usage after the piece was made (None: not metered); `nbytes`: the payloads' total length.
    """

    payloads: tuple[bytes, ...]
    media_ts_us: int
    join: bool
    totals: Totals | None
    nbytes: int


def pieces(frames: list[TsFrame]) -> list[tuple[tuple[bytes, ...], int]]:
    """Cut exported frames into `(payloads, media_ts_us)` runs, one per frame, in order.

    A frame is cut into 1316-byte payloads from its start, so it ends in a short payload; that
    one is topped up with the next frame's first packets (which then go at the earlier frame's
    instant: at most one frame early at the receiver), unless the next frame opens with PAT (a
    join point must start a payload). That saves an SRT message per frame. Every payload is
    whole TS packets, at most `CHUNK_BYTES`.
    """
    out: list[tuple[list[bytes], int]] = []
    for data, ts in frames:
        start = 0
        if out and not _starts_with_pat(data):
            previous = out[-1][0]
            start = CHUNK_BYTES - len(previous[-1])
            if start:
                previous[-1] += data[:start]
                if len(data) <= start:
                    continue  # all of it fitted into the previous frame's last payload
        out.append((cut_payloads(data, start), ts))
    return [(tuple(payloads), ts) for payloads, ts in out]


class Sender:
    """Egress adapter of one viewer: stamps each piece with the `Pacer`, sends its payloads.

    One per viewer connection (it does not own `conn`); fed by an `ExportHub` on the loop
    thread (`start`, `offer`, `source_ended`), each piece sent within the call. A slow viewer
    (libsrt's unsent bytes above `send_buffer_limit_bytes`, or `send_many()` refused a payload)
    skips pieces until the next join point. `latency_ms` is the SRT latency: half of it is the
    pacer's lateness budget. `run()` waits for the end.
    """

    #: How often libsrt's send buffer is read (µs). At 100 Mbit/s, 50 ms is 625 kB, under the
    #: smallest default limit (1 MB; 3 MB at 120 ms and 100 Mbit/s); a full buffer makes
    #: `send_many()` refuse anyway.
    BUFFER_CHECK_US: Final = 50_000

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
        """TS bytes not sent to this viewer (its link was slow)."""
        self.skips = 0
        self.ended_by_source = False
        self._skipping = False
        self._next_check_us = 0
        self._billed: Totals | None = None
        self._done = asyncio.Event()
        self._error: BaseException | None = None

    def start(self, billed: Totals, pieces: list[Piece]) -> None:
        """Begin with `pieces` (a replay from a join point, may be empty, sent at once);
        `billed`: the hub's totals just before the first piece this viewer gets."""
        self._billed = billed
        for piece in pieces:
            self.offer(piece)

    def offer(self, piece: Piece, now_us: int | None = None) -> None:
        """Bill and send one piece now (or skip it: slow link, or waiting for a join point).
        `now_us`: `srt_now_us()`, when the caller has just read it."""
        if self._done.is_set():
            return
        totals = piece.totals
        if totals is not None and totals is not self._billed:
            self._bill(totals)
        if self._skipping:
            if not piece.join:
                self.skipped_bytes += piece.nbytes
                return
            self._skipping = False
            self._pacer.reset()
        # libsrt's clock: the pacer's instants become SRT source times (srctime): the
        # receiver's TSBPD plays each payload out at that time plus the latency, which undoes
        # our pipeline's bunching. Never in the future, at most half a latency in the past.
        if now_us is None:
            now_us = srt_now_us()
        conn = self._conn
        try:
            if now_us >= self._next_check_us:
                self._next_check_us = now_us + self.BUFFER_CHECK_US
                if conn.send_buffer_bytes() > self._limit:
                    self._skip(piece.nbytes)
                    return
            payloads = piece.payloads
            # A full send buffer refuses a payload: it and the rest of the piece are skipped.
            queued = conn.send_many(
                payloads, srctime_us=self._pacer.stamp(piece.media_ts_us, now_us)
            )
        except SrtError as exc:
            self._fail(exc)
            return
        if queued == len(payloads):
            self.sent_bytes += piece.nbytes
            return
        sent = sum(map(len, payloads[:queued]))
        self.sent_bytes += sent
        self._skip(piece.nbytes - sent)

    def source_ended(self, totals: Totals | None, error: BaseException | None) -> None:
        """The hub's export ended (`error` None: the broadcast finished) with `totals`."""
        if self._done.is_set():
            return
        if totals is not None:
            self._bill(totals)
        self.ended_by_source = True
        self._fail(error)

    async def run(self) -> None:
        """Wait until the source ends (sets `ended_by_source`) or fails, or a send fails; the
        error is raised here."""
        await self._done.wait()
        if self._error is not None:
            raise self._error

    def _fail(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()

    def _bill(self, totals: Totals) -> None:
        billed = self._billed
        if billed is None:  # not started yet
            return
        meter = self.meter
        if meter is not None and totals != billed:
            meter.groups += totals[0] - billed[0]
            meter.frames += totals[1] - billed[1]
            meter.bytes += totals[2] - billed[2]
        self._billed = totals

    def _skip(self, nbytes: int) -> None:
        self._skipping = True
        self.skips += 1
        self.skipped_bytes += nbytes
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
    and one `export_batches` task, started by the first `attach` and cancelled by `close`
    (`HubRegistry` calls it when the last viewer leaves). A viewer attaching gets the pieces
    since the latest join point at once (the current GOP: the tune-in burst a fresh model
    consumer would give, since it starts at the latest group), or, when there is none yet or
    it was longer than `REPLAY_BYTES`, starts at the next join point.
    """

    REPLAY_BYTES: Final = 4096 * CHUNK_BYTES
    """TS bytes kept from the latest join point for late viewers (a GOP of ~20 Mbit/s)."""

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
        self._replay_bytes = 0
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
        batches = export_batches(self.consumer, latency_ms=self._latency_ms)
        usage = self.usage
        error: BaseException | None = None
        try:
            async for frames in batches:
                totals = (usage.groups, usage.frames, usage.bytes)
                for payloads, media_ts_us in pieces(frames):
                    self._hand_out(payloads, media_ts_us, totals)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001  (handed to every viewer)
            error = exc
        finally:
            with contextlib.suppress(Exception):
                await batches.aclose()
            self._finish(error)

    def _hand_out(self, payloads: tuple[bytes, ...], media_ts_us: int, totals: Totals) -> None:
        head = payloads[0]
        # Every keyframe opens with PAT/PMT (the exporter's rule): only such pieces are looked
        # through for the random-access flag.
        ra = False
        if _starts_with_pat(head):
            ra = any(map(random_access, payloads))
            self._seen_video = self._seen_video or ra
            join = self._first or ra or not self._seen_video
        else:
            join = self._first
        self._first = False
        nbytes = sum(map(len, payloads))
        piece = Piece(payloads, media_ts_us, join, totals, nbytes)
        if join:
            self._replay = [piece]
            self._replay_bytes = nbytes
            self._replay_base = self._last
            if self._waiting:
                for sender in self._waiting:
                    sender.start(self._last, [])
                self._senders += self._waiting
                self._waiting.clear()
        elif self._replay is not None:
            self._replay.append(piece)
            self._replay_bytes += nbytes
            if self._replay_bytes > self.REPLAY_BYTES:
                self._replay = None
        self._last = totals
        now_us = srt_now_us()
        for sender in self._senders:
            sender.offer(piece, now_us)

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
        self._live: set[ExportHub] = set()  # the hubs in `_hubs` and those they replaced

    def __len__(self) -> int:
        """Hubs still exporting."""
        return len(self._live)

    def attach(self, key: Hashable, consumer: BroadcastConsumer, sender: Sender) -> ExportHub:
        """Attach `sender` to the hub at `key`, or to a new one reading `consumer` (when there
        is none, or the one there reads a broadcast that has ended or another broadcast, one a
        takeover replaced, whose viewers it keeps serving until it ends). Returns the hub."""
        hub = self._hubs.get(key)
        if (
            hub is None
            or hub.done
            or hub.consumer.finished
            or not hub.consumer.same_broadcast(consumer)
        ):
            hub = ExportHub(consumer, latency_ms=self._latency_ms, on_done=self._forget(key))
            self._hubs[key] = hub
            self._live.add(hub)
        hub.attach(sender)
        return hub

    async def detach(self, hub: ExportHub, sender: Sender) -> None:
        """Take `sender` off `hub`; the last one out stops the hub."""
        hub.detach(sender)
        if not hub.viewers:
            await hub.close()

    async def aclose(self) -> None:
        """Stop every hub."""
        for hub in list(self._live):
            await hub.close()

    def _forget(self, key: Hashable) -> Callable[[ExportHub], None]:
        def forget(hub: ExportHub) -> None:
            self._live.discard(hub)
            if self._hubs.get(key) is hub:
                del self._hubs[key]

        return forget
