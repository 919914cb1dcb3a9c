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

Metering (DESIGN.md, "Metering": a bill never shows more than was handed to the viewer's
connection). The hub's model consumer counts into a private `Usage`; the pieces of one export
turn form a *unit* and carry that meter's running totals `(groups, frames, bytes)` after the
turn, so a unit's model delta is its totals less the previous unit's. A viewer's sender bills
a unit's delta only when libsrt accepted every payload of it AND the unit later left libsrt's
send buffer (acknowledged) while the drop counter stood still AND, if the receiver reported a
loss meanwhile, it left before the receiver could have given up on it (`srt_getsndbuffer` and
`srt_bstats` pktSndDropTotal, pktSndLossTotal, pktRetransTotal and msRTT, read on the periodic
buffer check: no call per piece). A unit skipped or cut short (slow link, a refused payload, a
join point awaited, a viewer joining mid-unit) goes to `skipped`; one near a too-late drop by
either end, or still unconfirmed when the session ends without a drain that saw the buffer
empty, goes to `dropped`. When in doubt it bills less, never more; the meter only grows.
Billed + skipped + dropped is what the hub read while the viewer was attached, from the totals
just before its first piece.

Why losses matter (libsrt 1.5.1, srtcore/core.cpp): libsrt's *receiver* drops a missing
packet once the first packet after the gap is due to play (its TSBPD time: source time plus
latency) and then acknowledges past it, so the sender frees it as if delivered and counts no
drop; the sender's own too-late drop waits at least `SRT_TLPKTDROP_MINTHRESHOLD_MS` (1 s, even
with SRTO_SNDDROPDELAY 0), far past a 120 ms latency. A receiver drops only what it missed,
and it reports every gap it sees (NAK, repeated periodically while the packet is missing),
which the sender counts in pktSndLossTotal (and in pktRetransTotal once it resends). So a
unit whose time in the buffer (through the check after the one that saw it gone, for a report
counted after the acknowledgement) saw no loss reported was received; only a loss whose every
report went missing escapes this. Otherwise it was received if the acknowledgement reached us
before the earliest time the receiver could drop any of its packets: every payload's source
time is at least `now_us - budget` when handed (the pacer's rule), so no packet of a unit (nor
any later one, which would have to trigger the drop) plays before `Piece.opened_us + latency
- budget`, less what libsrt's drift correction may take off, which is bounded by half a round
trip (it subtracts half the RTT's growth since the first sample): the margin is the largest
smoothed RTT seen. The latency used is the one configured here, a lower bound of the
negotiated one (the larger of both ends'). A unit's leave time is known only as the check
that saw it gone, so checks come every `LOSSY_CHECK_US` while such units are unsettled.

Cost notes (tests/bench/bench_gateway.py, CPU seconds per delivered GB): the TS mux runs once
per broadcast, not once per viewer; a viewer's cost per frame is one stamp, one `send_many`
call for the frame's payloads (whole payloads go out uncopied) and a little unit bookkeeping
for billing; libsrt's send buffer and statistics are read at most every `BUFFER_CHECK_US`
(`LOSSY_CHECK_US` after a loss report; `send_many()` refusing is noticed at once), not
before every payload.
"""

from __future__ import annotations

import asyncio
import bisect
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

# A unit libsrt accepted whole, as known when it closed: (end position, hub totals, the
# sender's cumulative skipped, TS bytes offered so far, srt_now_us() at its first piece).
_Entry = tuple[int, Totals | None, tuple[int, int, int, int], int, int]

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
    usage after the export turn the piece belongs to (None: not metered); `nbytes`: the
    payloads' total length; `opens` / `closes`: the piece is the first / last of its turn's
    unit (the billing unit, see the module's metering rule); `opened_us`: `srt_now_us()` when
    the hub began handing out that unit, at or before every viewer's `now_us` for any piece of
    it (0: unknown, the unit counts as handed long ago).
    """

    payloads: tuple[bytes, ...]
    media_ts_us: int
    join: bool
    totals: Totals | None
    nbytes: int
    opens: bool = True
    closes: bool = True
    opened_us: int = 0


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
    """Egress adapter of one viewer: stamps each piece with the `Pacer`, sends its payloads,
    and bills the viewer only for what libsrt delivered (the module's metering rule).

    One per viewer connection (it does not own `conn`); fed by an `ExportHub` on the loop
    thread (`start`, `offer`, `source_ended`), each piece sent within the call. A slow viewer
    (libsrt's unsent bytes above `send_buffer_limit_bytes`, or `send_many()` refused a payload)
    skips pieces until the next join point. `latency_ms` is the SRT latency: half of it is the
    pacer's lateness budget. `run()` waits for the end; then `drain()` (when the broadcast
    ended) and `settle()` close the books before `meter`, `skipped` and `dropped` are read.
    """

    #: How often libsrt's send buffer and statistics are read (µs; `srt_getsndbuffer` and
    #: `srt_bstats`, ~11 and ~24 µs here), which also settles the units that left the buffer
    #: (O(log n) for n pending, whatever number left). At 100 Mbit/s, 50 ms is 625 kB,
    #: under the smallest default limit (1 MB; 3 MB at 120 ms and 100 Mbit/s); a full buffer
    #: makes `send_many()` refuse anyway.
    BUFFER_CHECK_US: Final = 50_000

    #: The check interval while units a loss report touched are unsettled (µs): what a check
    #: sees gone it knows gone only by then, and the receiver's deadline is ~half a latency.
    LOSSY_CHECK_US: Final = 10_000

    #: What the end-of-session drain waits past the tail's play time at the receiver (s)
    #: before confirming it: the viewer's application must have read the tail by the time our
    #: close reaches it, since a client may stop reading then (GStreamer 1.22's srtsrc checks
    #: the socket state before each read and ends on a broken one, leaving what libsrt holds
    #: unread), and a loaded one reads late. With 0.25 s the close reached the README's
    #: GStreamer recorder 0.25-0.30 s after the tail's play time (its srtsrc log, 19 loaded
    #: runs; it read at most 0.11 s late there); a recorder made to read late (identity
    #: sleep-time) wrote up to 97 kB less than its bill with 0.25 s, 44 kB with 1 s. The
    #: default `drain_timeout_s` (2 s) holds it with latencies up to ~0.9 s; past that, the
    #: slack shrinks to what the timeout leaves, down to `DRAIN_MIN_SLACK_S` (then a timeout
    #: bills nothing of the tail: dropped). No margin covers a reader slower than real time.
    DRAIN_READ_SLACK_S: Final = 1.0

    #: The least the drain waits past the tail's play time (s): the rule before
    #: `DRAIN_READ_SLACK_S`, kept for latencies the drain timeout leaves no more room for.
    DRAIN_MIN_SLACK_S: Final = 0.25

    #: Cap on units awaiting confirmation, enforced on each check. libsrt's send buffer bounds
    #: them already (a unit holds at least one payload, and only two check intervals' worth
    #: may have left the buffer unsettled); past the cap the oldest are counted dropped (bill
    #: less, never more).
    MAX_PENDING: Final = 1 << 16

    def __init__(
        self,
        conn: SrtConnection,
        *,
        latency_ms: int,
        send_buffer_limit_bytes: int,
        meter: Usage | None = None,
    ) -> None:
        self._conn = conn
        budget_us = latency_ms * 1000 // 2
        self._pacer = Pacer(budget_us=budget_us)
        self._watch = _LinkWatch(latency_ms=latency_ms, lead_us=latency_ms * 1000 - budget_us)
        self._limit = send_buffer_limit_bytes
        self.meter = meter if meter is not None else Usage()
        """Billed egress (the stats guard's meter): model usage of the units delivered."""
        self.ts_bytes = 0
        """TS bytes of the units delivered (the TS side of `meter`)."""
        self.dropped = Usage()
        """Model usage of units libsrt accepted but that were not confirmed delivered: dropped
        as too late, or unconfirmed when the session ended."""
        self.dropped_ts_bytes = 0
        """TS bytes of the dropped units."""
        self._unsent_ts = 0  # TS bytes offered that libsrt never took
        self.skips = 0
        """Times this viewer started skipping."""
        self.ended_by_source = False
        self._skipping = False
        self._next_check_us = 0
        self._base: Totals | None = None  # hub totals just before this viewer's first piece
        self._cursor: Totals | None = None  # hub totals up to the last unit closed
        self._unit_ok = True  # the unit in progress was wholly handed to libsrt so far
        self._offered_ts = 0  # TS bytes of every piece offered
        # Cumulative (groups, frames, bytes, ts_bytes) of the units skipped; replaced, never
        # mutated, so that pending entries can share it.
        self._skipped: tuple[int, int, int, int] = (0, 0, 0, 0)
        # Units libsrt accepted whole, oldest first (`_Entry`); what the units up to one of
        # them are worth is derived from it when it settles, so a unit costs a tuple and an
        # append here. Positions count the payload bytes libsrt accepted; its send buffer
        # releases them in that order (acknowledged or dropped, always from the oldest).
        self._pending: list[_Entry] = []
        self._settled: tuple[int, int, int, int] = (0, 0, 0, 0)  # billed + dropped so far
        self._handed = 0  # payload bytes libsrt accepted
        self._left = 0  # of which out of its send buffer at the previous check
        self._settled_pos = 0  # where the last settled unit ends
        # Every dropped packet lies before the position libsrt had accepted up to when the
        # drop counter was seen to grow (drops leave from the head of the buffer, but the
        # buffer reading and the count are not atomic): a unit starting before that position
        # may hold one, even if it had not wholly left the buffer then, and is never billed.
        self._taint = 0
        self._drops_seen: int | None = None
        self._dropped_before = False  # the previous check saw the drop counter grow
        self._ended = False  # `_done` is set (a plain flag: read for every piece)
        self._done = asyncio.Event()
        self._error: BaseException | None = None

    @property
    def sent_bytes(self) -> int:
        """TS bytes libsrt accepted for this viewer (billed or not)."""
        return self._offered_ts - self._unsent_ts

    @property
    def skipped(self) -> Usage:
        """Model usage of units not (wholly) handed to libsrt: slow link, refused payloads, a
        join point awaited, a viewer joining mid-unit, or model reads that made no TS (the end
        of the broadcast). A copy."""
        groups, frames, nbytes, _ = self._skipped
        return Usage(groups=groups, frames=frames, bytes=nbytes)

    @property
    def skipped_ts_bytes(self) -> int:
        """TS bytes of the skipped units (whole units, including any part that was sent)."""
        return self._skipped[3]

    def start(self, billed: Totals, pieces: list[Piece], *, mid_unit: bool = False) -> None:
        """Begin with `pieces` (a replay from a join point, may be empty, sent at once);
        `billed`: the hub's totals just before the first piece this viewer gets; `mid_unit`:
        that first piece does not open its unit (then the unit cannot be billed: skipped)."""
        self._base = self._cursor = billed
        self._unit_ok = pieces[0].opens if pieces else not mid_unit
        for piece in pieces:
            self.offer(piece)

    def offer(self, piece: Piece, now_us: int | None = None) -> None:
        """Send one piece now (or skip it: slow link, or waiting for a join point), and settle
        earlier ones on the periodic buffer check. `now_us`: `srt_now_us()`, when the caller
        has just read it."""
        if self._ended:
            return
        if now_us is None:
            now_us = srt_now_us()
        over = False
        if now_us >= self._next_check_us:
            self._next_check_us = now_us + self.BUFFER_CHECK_US
            try:
                over = self._check()
            except SrtError as exc:
                self._fail(exc)
                return
            if self._watch.loss_taint > self._settled_pos:
                # Units a loss report touched are billed only if a check saw them leave in
                # time: look more often until they are settled.
                self._next_check_us = now_us + self.LOSSY_CHECK_US
        self._offered_ts += piece.nbytes
        if self._skipping:
            if not piece.join:
                self._unit_ok = False
                self._unsent_ts += piece.nbytes
                if piece.closes:
                    self._close_skipped(piece.totals)
                return
            self._skipping = False
            self._pacer.reset()
        if over:
            self._unsent_ts += piece.nbytes
            self._skip(piece.nbytes)
        else:
            payloads = piece.payloads
            # libsrt's clock: the pacer's instants become SRT source times (srctime): the
            # receiver's TSBPD plays each payload out at that time plus the latency, which
            # undoes our pipeline's bunching. Never in the future, at most half a latency in
            # the past. A full send buffer refuses a payload: it and the rest are skipped.
            try:
                queued = self._conn.send_many(
                    payloads, srctime_us=self._pacer.stamp(piece.media_ts_us, now_us)
                )
            except SrtError as exc:
                self._unsent_ts += piece.nbytes  # what was queued before the failure is moot
                self._fail(exc)
                return
            if queued == len(payloads):
                self._handed += piece.nbytes
            else:
                sent = sum(map(len, payloads[:queued]))
                self._handed += sent
                self._unsent_ts += piece.nbytes - sent
                self._skip(piece.nbytes - sent)
        if piece.closes:
            if self._unit_ok:
                totals = self._cursor = piece.totals
                self._pending.append(
                    (self._handed, totals, self._skipped, self._offered_ts, piece.opened_us)
                )
            else:
                self._close_skipped(piece.totals)  # and the next unit starts afresh

    def source_ended(self, totals: Totals | None, error: BaseException | None) -> None:
        """The hub's export ended (`error` None: the broadcast finished) with `totals`: model
        reads after the last unit made no TS for this viewer and count as skipped."""
        if self._ended:
            return
        self._close_skipped(totals)
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
        self._ended = True
        self._done.set()

    def _skip(self, nbytes: int) -> None:
        self._skipping = True
        self._unit_ok = False
        self.skips += 1
        _log.info("srt.viewer_skipping", skipped_bytes=nbytes, skips=self.skips)

    def _close_skipped(self, totals: Totals | None) -> None:
        """Count as skipped what was offered since the last unit closed: the hub's totals
        since then (`totals`; None: unchanged) and the TS bytes."""
        cursor = self._cursor
        g, f, b, t = self._skipped
        t = self._offered_ts - self._settled[3] - self._pending_ts()
        if totals is not None and cursor is not None:
            g += totals[0] - cursor[0]
            f += totals[1] - cursor[1]
            b += totals[2] - cursor[2]
            self._cursor = totals
        self._skipped = (g, f, b, t)
        self._unit_ok = True

    def _pending_ts(self) -> int:
        """TS bytes of the units pending confirmation."""
        if not self._pending:
            return 0
        _, _, skipped, offered, _ = self._pending[-1]
        return offered - skipped[3] - self._settled[3]

    def _worth(self, entry: _Entry) -> tuple[int, int, int, int]:
        """Cumulative (groups, frames, bytes, ts_bytes) of the units not skipped, up to and
        including the pending unit `entry`."""
        _, totals, skipped, offered, _ = entry
        base = self._base
        if totals is None or base is None:
            g = f = b = 0
        else:
            g = totals[0] - base[0] - skipped[0]
            f = totals[1] - base[1] - skipped[1]
            b = totals[2] - base[2] - skipped[2]
        return g, f, b, offered - skipped[3]

    def _check(self) -> bool:
        """Read libsrt's send buffer (`srt_getsndbuffer`) and statistics (`srt_bstats`),
        settle the units that had left the buffer by the previous check; True when the
        buffer is over the limit. Raises SrtError."""
        conn = self._conn
        buffered = conn.send_buffer_bytes()
        seen_us = srt_now_us()  # what the reading shows gone had gone by then
        drops, grew = self._read_stats()
        # libsrt removes dropped packets from its buffer and then counts them, and the two
        # reads are not atomic: a drop may show one check after its packets left. So units
        # are settled one check late, and a unit is delivered only when neither the check
        # after it left nor the one before that saw the counter grow. (A loss report seen
        # one check after the acknowledgement past it taints the unit likewise.)
        pending = self._pending
        if pending and not conn.ended:  # a broken link's buffer proves nothing
            watch = self._watch
            self._settle(self._left, dropped=grew or self._dropped_before, seen_us=watch.left_us)
            if len(pending) > self.MAX_PENDING:
                end = pending[len(pending) - self.MAX_PENDING - 1][0]
                self._settle(end, dropped=True, seen_us=seen_us)
        if self._handed - buffered > self._left:
            self._left = self._handed - buffered
            self._watch.left_us = seen_us
        if grew or self._dropped_before:
            self._taint = self._left
        self._dropped_before = grew
        self._drops_seen = drops
        return buffered > self._limit

    def _read_stats(self) -> tuple[int, bool]:
        """Read `srt_bstats`: note a loss report (sets the loss taint) and the largest RTT;
        return the drop counter and whether it grew since the last reading."""
        stats = self._conn.stats()
        drops = stats.pkt_send_drop
        losses = stats.pkt_sent_loss + stats.pkt_retrans
        watch = self._watch
        rtt_us = int(stats.rtt_ms * 1000)
        if rtt_us > watch.margin_us:
            watch.margin_us = rtt_us
        if self._drops_seen is None:
            self._drops_seen = drops
        if losses != watch.losses:
            watch.losses = losses
            watch.loss_taint = self._handed
        return drops, drops != self._drops_seen

    def _settle(self, left: int, *, dropped: bool, seen_us: int) -> None:
        """Bill (or, `dropped`, count as dropped) the pending units that end at or before
        position `left`, which a buffer reading at `seen_us` (or earlier) showed gone."""
        pending = self._pending
        n = bisect.bisect_right(pending, left, key=_end)
        if not n:
            return
        if self._taint > self._settled_pos:
            # Units [0, j) end before the taint and unit j straddles it: all may hold a drop.
            tainted = min(n, bisect.bisect_left(pending, self._taint, key=_end) + 1)
            if tainted < n and not dropped:
                self._settle_prefix(tainted, dropped=True)
                n -= tainted
            else:
                dropped = True
        watch = self._watch
        if not dropped and watch.loss_taint > self._settled_pos:
            # The same for a reported loss; of those units, the ones opened too early to have
            # left the buffer before the receiver could drop a packet of them count dropped.
            lossy = min(n, bisect.bisect_left(pending, watch.loss_taint, key=_end) + 1)
            opened_by = seen_us + watch.margin_us - watch.lead_us  # on time: opened at or after
            while lossy:
                late = pending[0][4] < opened_by
                run = 1
                while run < lossy and (pending[run][4] < opened_by) == late:
                    run += 1
                self._settle_prefix(run, dropped=late)
                lossy -= run
                n -= run
            if not n:
                return
        self._settle_prefix(n, dropped=dropped)

    def _settle_prefix(self, n: int, *, dropped: bool) -> None:
        """Bill (or count as dropped) the `n` oldest pending units."""
        pending = self._pending
        worth = self._worth(pending[n - 1])
        self._settled_pos = pending[n - 1][0]
        del pending[:n]
        g0, f0, b0, t0 = self._settled
        self._settled = worth
        g, f, b, t = worth[0] - g0, worth[1] - f0, worth[2] - b0, worth[3] - t0
        usage = self.dropped if dropped else self.meter
        usage.groups += g
        usage.frames += f
        usage.bytes += b
        if dropped:
            self.dropped_ts_bytes += t
        else:
            self.ts_bytes += t

    def _confirm_drained(self, empty_us: int) -> None:
        """The drain saw libsrt's send buffer empty at `empty_us`: bill every pending unit,
        unless the drop counter grew since the check before last (then they count as
        dropped) or a loss was reported and they may have left too late (the same)."""
        conn = self._conn
        if not self._pending or conn.send_buffer_bytes():
            return
        _, grew = self._read_stats()
        self._settle(self._handed, dropped=grew or self._dropped_before, seen_us=empty_us)

    def settle(self) -> None:
        """Close the books at the end of the session (idempotent): units still unconfirmed
        (no drain confirmed them) count as dropped. Read `meter`, `skipped` and `dropped`
        after it."""
        if self._pending:
            self._settle(self._pending[-1][0], dropped=True, seen_us=srt_now_us())

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded by `timeout_s`) until the viewer has the tail: libsrt's send buffer is
        acknowledged, then one latency more (the negotiated one, when the viewer asked for more
        than ours) and `DRAIN_READ_SLACK_S`, since the receiver holds packets for their TSBPD
        play time and its application must have read them before our close reaches it: a
        client may stop reading at the close with data still in its buffer (GStreamer's
        srtsrc checks the socket state before each read). When it gets there, the units still
        pending are confirmed delivered (billed) or dropped; a timeout first leaves them to
        `settle()` (dropped)."""
        with contextlib.suppress(TimeoutError, SrtError):
            async with asyncio.timeout(timeout_s) as scope:
                # libsrt offers no event for "send buffer empty": poll it, bounded.
                while self._conn.send_buffer_bytes() > 0 and not self._conn.ended:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                empty_us = srt_now_us()
                if not self._conn.ended:
                    # The receiver plays out with the negotiated latency, which a viewer asking
                    # for more than ours raises; its application then reads, late when loaded.
                    # A slack the timeout cannot hold shrinks, down to the minimum, so that
                    # a long latency still gets its tail confirmed.
                    peer_s = self._conn.peer_latency_ms() / 1000
                    play_s = max(self._watch.latency_s, peer_s)
                    left_s = (scope.when() or 0.0) - asyncio.get_running_loop().time()
                    slack_s = min(self.DRAIN_READ_SLACK_S, left_s - play_s - 0.05)
                    await asyncio.sleep(play_s + max(slack_s, self.DRAIN_MIN_SLACK_S))
                    if not self._conn.ended:
                        self._confirm_drained(empty_us)


def _end(entry: _Entry) -> int:
    return entry[0]


class _LinkWatch:
    """A `Sender`'s settings and state for its buffer checks that `offer()` does not read for
    every piece (the loss rule: the module's metering rule). Kept apart so that the sender
    keeps its 29 instance attributes: at about 30, CPython 3.11 stops sharing instance-dict
    keys and with them the fast attribute access `Sender.offer()` relies on."""

    __slots__ = ("latency_s", "lead_us", "left_us", "loss_taint", "losses", "margin_us")

    def __init__(self, *, latency_ms: int, lead_us: int) -> None:
        self.latency_s = latency_ms / 1000
        """The SRT latency (s)."""
        self.lead_us = lead_us
        """No packet handed at `now_us` plays at the receiver before `now_us + lead_us` (its
        source time is at least `now_us` less the pacer's budget)."""
        self.losses = 0
        """Losses reported so far (pktSndLossTotal + pktRetransTotal)."""
        self.loss_taint = 0
        """What libsrt had accepted (a position) when a check saw `losses` grow: a reported
        packet was in the buffer then, so it lies before that; units starting before it are
        billed only if a check saw them gone before the receiver could drop them."""
        self.left_us = 0
        """`srt_now_us()` just after the buffer reading that gave the sender's `_left`."""
        self.margin_us = 0
        """The largest smoothed RTT seen (µs): bounds what libsrt's drift correction takes
        off the receiver's play times."""


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
                cut = pieces(frames)
                last = len(cut) - 1
                opened_us = 0
                for i, (payloads, media_ts_us) in enumerate(cut):
                    now_us = srt_now_us()
                    if not i:
                        opened_us = now_us
                    self._hand_out(
                        payloads, media_ts_us, totals, not i, i == last, now_us, opened_us
                    )
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001  (handed to every viewer)
            error = exc
        finally:
            with contextlib.suppress(Exception):
                await batches.aclose()
            self._finish(error)

    def _hand_out(
        self,
        payloads: tuple[bytes, ...],
        media_ts_us: int,
        totals: Totals,
        opens: bool,
        closes: bool,
        now_us: int,
        opened_us: int,
    ) -> None:
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
        piece = Piece(payloads, media_ts_us, join, totals, nbytes, opens, closes, opened_us)
        if join:
            self._replay = [piece]
            self._replay_bytes = nbytes
            self._replay_base = self._last
            if self._waiting:
                for sender in self._waiting:
                    sender.start(self._last, [], mid_unit=not opens)
                self._senders += self._waiting
                self._waiting.clear()
        elif self._replay is not None:
            self._replay.append(piece)
            self._replay_bytes += nbytes
            if self._replay_bytes > self.REPLAY_BYTES:
                self._replay = None
        self._last = totals
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
