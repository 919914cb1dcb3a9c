"""PES assembly: one PID's packet payloads in, whole PES packets (header + payload pieces) out.

`PesAssembler` owns no stream: the importer gives it each PID's `PesStream` with the payloads
the packet path (`mux.es_packets`) cut from a batch, and the places where a PES starts or data
was lost. A bounded PES is handed on (`deliver`) once its declared length is in; an unbounded
one when the next PES of its PID starts, at its stuffed last packet (video, see
`PesStream.early_pes`), or when the importer says the input ended. Lost data drops a partial
video PES and salvages an audio one; so does a PES that grows past its stream's `limit`, which
bounds what a peer can make the importer hold. Problems go to the importer's `ProblemLog`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mux.errors import Malformed
from mux.pes import PesHeader, parse_pes_header, pes_header_size
from mux.problems import (
    BadPes,
    ContinuityGap,
    ImportStats,
    PesTooLarge,
    ProblemLog,
    TransportError,
)
from mux.ts_packets import PACKET_SIZE

#: An unbounded video PES is completed at its first packet padded with adaptation-field stuffing
#: (the muxer's last packet of a PES) once this many PES of the stream ended that way, with no
#: stuffing before their last packet (see `PesStream.early_pes`).
EARLY_AFTER = 2


class PesEvent(NamedTuple):
    """A packet of one PID that starts a PES and/or follows lost data, at `pos` in the PID's
    kept packets of a batch; `row` orders the problems it causes. `damaged` counts the packets
    flagged by transport_error_indicator just before it (then `gap` is set); `expected_cc` and
    `got_cc` describe a continuity gap. (A named tuple: a frozen dataclass costs a setattr call
    per field, and every PES start makes one.)"""

    pos: int
    row: float
    pusi: bool
    gap: bool
    damaged: int
    expected_cc: int
    got_cc: int


@dataclass(slots=True, eq=False)
class PesStream:
    """Packet and PES state of one elementary-stream PID; codec-free.

    Continuity (`last_cc`, -1 before the first packet; `pending_tei`, damaged packets not yet
    charged to a kept one) belongs to the packet path; the open PES (`active`, its payload
    `pieces` of `size` bytes, `total` bytes when bounded) to the assembler. `video` selects the
    video rules: drop a PES cut by lost data, complete unbounded PES early; `media` names the
    kind in problem reports ("video" or "audio").
    """

    pid: int
    video: bool
    media: str
    #: The most payload bytes a PES of this stream may hold; past it the PES is dropped (video)
    #: or salvaged (audio), and the rest of it up to the next PES start dropped.
    limit: int
    last_cc: int = -1
    pending_tei: int = 0
    active: bool = False
    pieces: list[Any] = field(default_factory=list)
    size: int = 0
    total: int | None = None
    checked: bool = False
    #: Early completion of unbounded video PES (PES_packet_length 0, as ffmpeg writes video):
    #: muxers pad the last packet of a PES with adaptation-field stuffing, so such a packet
    #: ends the access unit without waiting for the next PES start. Trusted after
    #: `EARLY_AFTER` PES of this stream ended on a stuffed packet; switched off for good when
    #: one carries stuffing before its last packet (the muxer stuffs mid-PES).
    early_pes: int = 0
    early_off: bool = False
    #: The last packet appended to the open PES was stuffed.
    tail_stuffed: bool = False
    #: The previous PES was completed early: payload must now come with a PES start.
    closed_early: bool = False


@dataclass(slots=True)
class Collected:
    """One PID's kept packets of a small batch: their payloads as pieces (one per packet, or
    one per run of plain packets, none when empty) with the position of each piece's first
    packet, events, packet rows, and the positions of packets padded with adaptation-field
    stuffing (video only). A position is a packet's index among the PID's kept packets."""

    pieces: list[Any] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    events: list[PesEvent] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    stuffed: list[int] = field(default_factory=list)


_PAYLOAD = PACKET_SIZE - 4

#: An open PES whose pieces keep alive a batch this much larger than itself is copied out.
_SLACK_BYTES = 64 * 1024

#: `deliver(stream, header, pieces, end)`: a whole PES (or an audio PES cut by lost data) of
#: `stream`: its parsed `header`, its bytes as `pieces` (the header at the start of the first),
#: `end` a negative index trimming bytes past its declared length, or None.
Deliver = Callable[[PesStream, PesHeader, list[Any], "int | None"], None]


class PesAssembler:
    """Cuts the payloads of each PID into PES packets; see the module docstring.

    `deliver` receives each PES; `lost(stream)` is called when data of an audio PID was lost
    (after its partial PES was delivered), so its framer forgets a cut frame. Counters go to
    `stats` (`pes`, `dropped_pes`, `continuity_gaps`), problems to `log`.
    """

    __slots__ = ("_deliver", "_log", "_lost", "_stats")

    def __init__(
        self,
        stats: ImportStats,
        log: ProblemLog,
        deliver: Deliver,
        lost: Callable[[PesStream], None],
    ) -> None:
        self._stats = stats
        self._log = log
        self._deliver = deliver
        self._lost = lost

    def flush_collected(self, collected: dict[PesStream, Collected], batch_bytes: int) -> None:
        """Assemble what `mux.es_packets.classify_small` collected per PID from a batch of
        `batch_bytes`, then clear it."""
        big = batch_bytes > _SLACK_BYTES
        for st, col in collected.items():
            if not col.events and not col.stuffed:
                self.continue_pes(st, col.pieces, col.rows)
                if big:
                    self.settle(st, batch_bytes)
                continue

            def take(a: int, b: int, st: PesStream = st, col: Collected = col) -> int:
                if not st.active:
                    return 0
                starts = col.starts
                part = col.pieces[bisect_left(starts, a) : bisect_left(starts, b)]
                st.pieces += part
                return sum(map(len, part))

            self.assemble(st, len(col.rows), col.events, take, col.rows.__getitem__, col.stuffed)
            if big:
                self.settle(st, batch_bytes)
        collected.clear()

    def assemble_rows(
        self,
        st: PesStream,
        rows: npt.NDArray[np.intp],
        payloads: memoryview,
        events: list[PesEvent],
        specials: list[int],
        special_start: list[int],
        stuffed: list[int],
        row_override: float | None,
    ) -> None:
        """`assemble` what `mux.es_packets.classify_rows` found (its fields, in order) among
        `st`'s packets of a numpy batch; `row_override` as given to it."""
        sp = 0  # index into specials of the next special packet >= the range start

        def take(a: int, b: int) -> int:
            """Append the payloads of kept packets [a, b) to the PES; return their size."""
            nonlocal sp
            while sp < len(specials) and specials[sp] < a:
                sp += 1
            if not st.active:
                return 0
            pieces = st.pieces
            cur = a
            added = 0
            while sp < len(specials) and specials[sp] < b:
                s = specials[sp]
                if s > cur:
                    pieces.append(payloads[cur * _PAYLOAD : s * _PAYLOAD])
                    added += (s - cur) * _PAYLOAD
                begin = special_start[sp]
                if begin < PACKET_SIZE:
                    pieces.append(payloads[s * _PAYLOAD + begin - 4 : (s + 1) * _PAYLOAD])
                    added += PACKET_SIZE - begin
                cur = s + 1
                sp += 1
            if b > cur:
                pieces.append(payloads[cur * _PAYLOAD : b * _PAYLOAD])
                added += (b - cur) * _PAYLOAD
            return added

        def row_of(i: int) -> float:
            return int(rows[i]) if row_override is None else row_override

        self.assemble(st, len(rows), events, take, row_of, stuffed)
        self.settle(st, len(payloads))

    def settle(self, st: PesStream, batch_bytes: int) -> None:
        """`st`'s packets of a batch of `batch_bytes` are assembled: if its open PES would keep
        the batch alive for far fewer bytes (pieces are views into it), copy the PES out."""
        if st.active and st.pieces and batch_bytes > st.size + _SLACK_BYTES:
            st.pieces = [b"".join(st.pieces)]

    def assemble(
        self,
        st: PesStream,
        count: int,
        events: list[PesEvent],
        take: Callable[[int, int], int],
        row_of: Callable[[int], float],
        stuffed: list[int],
    ) -> None:
        """Cut one PID's kept packets of a batch into PES: `count` packets, `events` where a
        PES starts or data was lost, `take(a, b)` appends the payloads of packets [a, b) to the
        open PES, `row_of(i)` gives packet i's row in the batch, to order problems, `stuffed`
        lists (ascending) the packets padded with adaptation-field stuffing (video only)."""
        log = self._log

        def add(a: int, b: int) -> None:
            added = take(a, b)
            if not st.active:
                if st.closed_early and b > a:
                    self._early_broken(st, row_of(a))
                return
            st.size += added
            if not st.checked:
                self._check_start(st)
            if st.total is not None and st.size >= st.total:
                log.row = row_of(b - 1)
                self.complete(st)
            elif stuffed and b > a and not st.early_off:
                self._early_end(st, a, b, stuffed, row_of)
            elif st.tail_stuffed and b > a:
                _stuffed_mid_pes(st)
            if st.size > st.limit:
                self._too_large(st)

        first = events[0].pos if events else count
        if first:
            add(0, first)
        for k, event in enumerate(events):
            log.row = event.row
            nxt = events[k + 1].pos if k + 1 < len(events) else count
            if event.gap:
                dropped = self._gap(st)
                if event.damaged:
                    log.add(
                        TransportError(
                            pid=st.pid, packets=event.damaged, dropped_bytes=dropped,
                            media=st.media,
                        )
                    )  # fmt: skip
                else:
                    self._stats.continuity_gaps += 1
                    log.add(
                        ContinuityGap(
                            pid=st.pid,
                            expected_cc=event.expected_cc,
                            got_cc=event.got_cc,
                            dropped_bytes=dropped,
                            media=st.media,
                        )
                    )
            if event.pusi:
                st.closed_early = False
                if st.active:
                    if st.tail_stuffed and not st.early_off:
                        st.early_pes += 1  # this PES ended on a stuffed packet
                    self.complete(st)
                st.active = True
                st.pieces = []
                st.size = 0
                st.total = None
                st.checked = False
            add(event.pos, nxt)

    def continue_pes(self, st: PesStream, pieces: list[Any], rows: Sequence[int]) -> None:
        """`assemble` for packets (`rows`, at least one) that hold no event and no stuffing:
        append their payload `pieces` to the open PES, or drop them if none is open."""
        if not st.active:
            if st.closed_early:
                self._early_broken(st, rows[0])
            return
        st.pieces += pieces
        st.size += sum(map(len, pieces))
        if not st.checked:
            self._check_start(st)
        if st.total is not None and st.size >= st.total:
            self._log.row = rows[-1]
            self.complete(st)
        elif st.tail_stuffed:
            _stuffed_mid_pes(st)
        if st.size > st.limit:
            self._too_large(st)

    def enforce_limit(self, st: PesStream) -> None:
        """Apply `st.limit` (just lowered) to its open PES now."""
        if st.size > st.limit:
            self._too_large(st)

    def _too_large(self, st: PesStream) -> None:
        """`st`'s open PES outgrew its limit: drop it (video) or salvage its whole frames
        (audio); what follows up to the next PES start is dropped as data without one."""
        size = st.size
        st.closed_early = False
        if st.video:
            self._stats.dropped_pes += 1
            reset_pes(st)
        else:
            self.complete(st, partial=True)
            self._lost(st)
            size = 0
        self._log.add(
            PesTooLarge(pid=st.pid, limit_bytes=st.limit, dropped_bytes=size, media=st.media)
        )

    def _early_end(
        self,
        st: PesStream,
        a: int,
        b: int,
        stuffed: list[int],
        row_of: Callable[[int], float],
    ) -> None:
        """Packets [a, b) were appended to `st`'s open video PES: note where stuffing sits,
        and complete the PES now if it ends on a stuffed packet and the stream is trusted."""
        if not st.active:
            return
        if st.tail_stuffed:
            _stuffed_mid_pes(st)  # the previous last packet was stuffed: not the end
            return
        k = bisect_left(stuffed, a)
        if k < len(stuffed) and stuffed[k] < b - 1:
            _stuffed_mid_pes(st)
            return
        st.tail_stuffed = k < len(stuffed) and stuffed[k] == b - 1
        if st.tail_stuffed and st.total is None and st.early_pes >= EARLY_AFTER:
            self._log.row = row_of(b - 1)
            self.complete(st)
            st.closed_early = True

    def _early_broken(self, st: PesStream, row: float) -> None:
        """Payload without a PES start followed a PES completed early: that PES was cut short.
        Its frame is written already; the continuation is dropped (as data without a PES
        start always is) and early completion is switched off for the stream."""
        st.closed_early = False
        st.early_off = True
        self._stats.dropped_pes += 1
        self._log.row = row
        self._log.add(
            BadPes(
                pid=st.pid,
                reason="PES went on after its stuffed last packet (completed early; the rest "
                "is dropped, early completion is now off for this PID)",
                dropped_bytes=0,
            )
        )

    def _check_start(self, st: PesStream) -> None:
        """Read PES_packet_length as soon as the first 6 bytes are in."""
        first = st.pieces[0] if st.pieces else b""
        if len(first) < 6:
            if st.size >= 6 and len(st.pieces) > 1:
                st.pieces = [b"".join(st.pieces)]
                first = st.pieces[0]
            else:
                return
        st.checked = True
        if first[0] != 0 or first[1] != 0 or first[2] != 1:
            self._stats.dropped_pes += 1
            self._log.add(
                BadPes(pid=st.pid, reason="PES does not start with 00 00 01", dropped_bytes=st.size)
            )
            reset_pes(st)
            return
        length = (first[4] << 8) | first[5]
        st.total = 6 + length if length else None

    def _gap(self, st: PesStream) -> int:
        """Data was lost on this PID: drop (video) or salvage (audio) the partial PES; return
        the bytes of the partial PES."""
        st.closed_early = False
        if not st.active:
            if not st.video:
                self._lost(st)
            return 0
        size = st.size
        if not st.video:
            self.complete(st, partial=True)
            self._lost(st)
        else:
            self._stats.dropped_pes += 1
            reset_pes(st)
        return size

    def complete(self, st: PesStream, *, partial: bool = False) -> None:
        """Close `st`'s open PES (whole, or an audio PES cut by lost data when `partial`) and
        deliver it: a PES whose header does not parse, or a video PES shorter than its
        declared length, is dropped and reported instead."""
        pieces, size, total = st.pieces, st.size, st.total
        reset_pes(st)
        if not pieces:
            return
        stats = self._stats
        stats.pes += 1
        first = pieces[0]
        need = pes_header_size(first)
        if need is None or len(first) < need:
            first = b"".join(pieces)
            pieces = [first]
        try:
            header = parse_pes_header(first)
        except Malformed as exc:
            stats.dropped_pes += 1
            self._log.add(BadPes(pid=st.pid, reason=str(exc), dropped_bytes=size))
            return
        if total is not None and size < total and not partial and st.video:
            stats.dropped_pes += 1
            reason = f"PES ends after {size} of its {total} bytes"
            self._log.add(BadPes(pid=st.pid, reason=reason, dropped_bytes=size))
            return
        end = None if total is None or size <= total else total - size  # trim trailing bytes
        self._deliver(st, header, pieces, end)


def reset_pes(st: PesStream) -> None:
    """Forget `st`'s open PES (no PES is open afterwards)."""
    st.active = False
    st.tail_stuffed = False
    st.pieces = []
    st.size = 0
    st.total = None
    st.checked = False


def _stuffed_mid_pes(st: PesStream) -> None:
    """A video PES went on after a stuffed packet: this muxer's stuffing does not mark the end
    of a PES, so never complete this stream's PES early."""
    st.early_off = True
    st.tail_stuffed = False
