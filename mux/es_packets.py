"""The per-packet path of the importer: aligned TS packets of elementary-stream PIDs in, per PID
payload pieces and PES events out (`PesEvent` in `Collected` or `RowsFound`), for
`mux.pes_assembly`.

It reads continuity counters (duplicates dropped, gaps and transport_error_indicator marked),
adaptation fields (payload start, discontinuity, stuffing) and runs of plain continuation
packets, which it copies out whole. Three entry points, stateless but for each PID's
`PesStream` continuity fields: `plain_run` (a read that only continues one PES: the usual live
case), `classify_small` (a few packets, in plain Python) and `classify_rows` (one PID's rows of a
large numpy batch). Nothing here knows PSI, codecs or the model.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from mux.pes_assembly import Collected, PesEvent, PesStream
from mux.problems import ImportStats
from mux.ts_packets import PACKET_SIZE, PacketColumns, U8Array

_PAYLOAD = PACKET_SIZE - 4
#: `_run_length` compares this many packets' headers at a time; `plain_run` takes at most this
#: many packets.
LOOKAHEAD = 64
#: Up to this many packets, struct copies payloads out faster than numpy's fixed cost.
_STRUCT_RUN = 48
_PAYLOAD_STRUCTS = [struct.Struct("4x184s" * count) for count in range(_STRUCT_RUN + 1)]


def _run_payloads(raw: bytes, at: int, count: int) -> bytes:
    """The payloads of the `count` packets at `raw[at:]` (all without adaptation field), joined."""
    if count <= _STRUCT_RUN:
        return b"".join(_PAYLOAD_STRUCTS[count].unpack_from(raw, at))
    rows = np.frombuffer(raw, np.uint8, count * PACKET_SIZE, at).reshape(count, PACKET_SIZE)
    return rows[:, 4:].tobytes()


@lru_cache(maxsize=64)
def _run_headers(flags_pid: bytes) -> bytes:
    """The 4-byte headers of a run of plain packets with bytes 1 and 2 `flags_pid`, the CC
    counting up from 0 (long enough for any CC then `LOOKAHEAD` packets)."""
    ccs = range(16 + LOOKAHEAD)
    return b"".join(b"\x47" + flags_pid + bytes([0x10 | (cc & 0x0F)]) for cc in ccs)


def _run_length(headers: bytes, i: int, left: int) -> int:
    """How many packets from packet `i` of a batch (`headers`: the 4-byte header of each;
    `left` packets from `i` to the end; packet i + 1 continues packet i) share its flags and
    PID and continue its CC one by one, with a payload and no adaptation field. Compared
    `LOOKAHEAD` packets at a time (a short run never slices the whole rest of the batch)."""
    at = 4 * i
    pattern = _run_headers(headers[at + 1 : at + 3])
    cc = headers[at + 3]
    count = 2
    while count < left:
        span = min(left - count, LOOKAHEAD)
        first = at + 4 * count
        got = headers[first : first + 4 * span]
        expected = 4 * ((cc + count) & 0x0F)
        want = pattern[expected : expected + 4 * span]
        if got != want:
            # The first differing byte is the highest one set in got ^ want.
            diff = int.from_bytes(got, "big") ^ int.from_bytes(want, "big")
            return count + (4 * span - 1 - (diff.bit_length() - 1) // 8) // 4
        count += span
    return count


def _af_fixed(flags: int) -> int:
    """Bytes of an adaptation field (after its length) that its flags and fixed-size optional
    fields (PCR, OPCR, splice countdown) take."""
    return 1 + (6 if flags & 0x10 else 0) + (6 if flags & 0x08 else 0) + (flags >> 2 & 1)


#: By adaptation-field flags: the payload start (5 + adaptation_field_length) past which the
#: field holds stuffing; 255 (never) when private data or an extension must be walked.
_PAD_BEGIN = bytes(
    5 if flags == 0 else 255 if flags & 0x03 else 5 + _af_fixed(flags) for flags in range(256)
)


def af_stuffed(packet: bytes | memoryview, at: int, af_len: int) -> bool:
    """Whether the adaptation field of the packet at `packet[at:]` (its length `af_len`, the
    field present) only pads the packet: it carries stuffing bytes after its flags and
    optional fields, or is empty, or all its flags are clear (then it can mean nothing else)."""
    if af_len == 0:
        return True  # an empty adaptation field is one stuffing byte
    flags = packet[at + 5]
    if flags == 0:
        return True
    used = _af_fixed(flags)
    for bit in (0x02, 0x01):  # private data, extension: a length byte, then that many bytes
        if flags & bit:
            if used >= af_len:
                return False
            used += 1 + packet[at + 5 + used]
    return af_len > used


def plain_run(
    raw: bytes, streams: dict[int, PesStream], pmt_pid: int | None
) -> tuple[PesStream, bytes] | None:
    """If every packet of `raw` (whole packets, at most `LOOKAHEAD`) is a plain continuation
    packet of the open PES of one stream of `streams` (by PID), CC one more each time, advance
    that stream's CC and return it with the packets' payloads joined (the usual live read);
    otherwise return None, having changed nothing."""
    b1 = raw[1]
    b3 = raw[3]
    n = len(raw) // PACKET_SIZE
    if b1 & 0xC0 or b3 & 0xF0 != 0x10 or n > LOOKAHEAD:
        return None
    pid = ((b1 & 0x1F) << 8) | raw[2]
    st = streams.get(pid)
    if st is None or pid == pmt_pid:
        return None
    prev = st.last_cc
    if prev < 0 or (b3 - prev) & 0x0F != 1 or st.pending_tei or not st.active:
        return None
    headers = memoryview(raw).cast("I")[:: PACKET_SIZE // 4].tobytes()
    start = 4 * (b3 & 0x0F)
    if headers != _run_headers(headers[1:3])[start : start + 4 * n]:
        return None
    st.last_cc = (b3 + n - 1) & 0x0F
    return st, _run_payloads(raw, 0, n)


def classify_small(
    raw: bytes,
    i: int,
    streams: dict[int, PesStream],
    pmt_pid: int | None,
    collected: dict[PesStream, Collected],
    stats: ImportStats,
    headers: bytes | None,
) -> tuple[int, int, int, bytes | None]:
    """Classify the packets of `raw` (whole packets) from packet `i` on, in stream order, into
    `collected` (per stream of `streams`, by PID), until a packet of PID 0 or `pmt_pid` (PSI,
    for the caller to read) or the end. Packets of other PIDs are skipped. A run of plain
    continuation packets of one stream (no TEI, no PUSI, no adaptation field, each CC one more
    than the last) is classified at once.

    Returns (where it stopped: the PSI packet's index or the packet count, packets that
    belonged to streams, packets of those in runs, `headers`). `headers` caches each packet's
    4-byte header between calls on one batch (pass None first).
    """
    n = len(raw) // PACKET_SIZE
    view = memoryview(raw)
    in_runs = 0
    handled = 0
    while i < n:
        at = i * PACKET_SIZE
        b1 = raw[at + 1]
        pid = ((b1 & 0x1F) << 8) | raw[at + 2]
        if pid == 0 or pid == pmt_pid:
            break
        st = streams.get(pid)
        if st is None:
            i += 1
            continue
        b3 = raw[at + 3]
        prev = st.last_cc
        nxt = at + PACKET_SIZE
        if (
            # Plain, following `prev`, and so is the next packet: a run of two or more.
            not b1 & 0xC0
            and b3 & 0xF0 == 0x10
            and prev >= 0
            and (b3 - prev) & 0x0F == 1
            and not st.pending_tei
            and nxt < len(raw)
            and raw[nxt + 1] == b1
            and raw[nxt + 2] == raw[at + 2]
            and raw[nxt + 3] == 0x10 | ((b3 + 1) & 0x0F)
        ):
            if headers is None:
                headers = view.cast("I")[:: PACKET_SIZE // 4].tobytes()
            count = _run_length(headers, i, n - i)
            st.last_cc = (b3 + count - 1) & 0x0F
            # One copy of the run's payloads: cheaper to make and to join than a view per
            # packet. A run holds no event, so `take` never splits it.
            payload = _run_payloads(raw, at, count)
            in_runs += count
            col = collected.get(st)
            if col is None:
                col = collected[st] = Collected()
            col.starts.append(len(col.rows))
            col.pieces.append(payload)
            col.rows += range(i, i + count)
            handled += count
            i += count
            continue
        handled += 1
        i += 1
        if b1 & 0x80:
            stats.transport_errors += 1
            st.pending_tei += 1
            continue
        if not b3 & 0x10:
            continue
        cc = b3 & 0x0F
        st.last_cc = cc
        damaged = st.pending_tei
        if cc == prev and not damaged:
            stats.duplicate_packets += 1
            continue
        st.pending_tei = 0
        begin = 4
        disc = False
        stuffed = False
        if b3 & 0x20:
            af_len = raw[at + 4]
            begin = 5 + af_len
            disc = af_len > 0 and raw[at + 5] & 0x80 != 0
            stuffed = st.video and not st.early_off and af_stuffed(raw, at, af_len)
        gap = damaged > 0 or (prev >= 0 and cc != (prev + 1) & 0x0F and not disc)
        pusi = b1 & 0x40 != 0
        col = collected.get(st)
        if col is None:
            col = collected[st] = Collected()
        pos = len(col.rows)
        if stuffed:
            col.stuffed.append(pos)
        if pusi or gap:
            event = PesEvent(pos, i - 1, pusi, gap, damaged, (prev + 1) & 0x0F, cc)
            col.events.append(event)
        if begin < PACKET_SIZE:
            col.starts.append(pos)
            # A copy, not a view: cheaper to make and to join, and a PES that stays open
            # never keeps the whole batch alive for one packet's payload.
            col.pieces.append(raw[at + begin : at + PACKET_SIZE])
        col.rows.append(i - 1)
    return i, handled, in_runs, headers


class RowsFound(NamedTuple):
    """What `classify_rows` found among one PID's packets of a numpy batch, for
    `PesAssembler.assemble_rows`: the kept packets' rows (`rows`; a packet's position is its
    index here) and payload areas (`payloads`: 184 bytes each, back to back), where a PES
    starts or data was lost (`events`), the packets whose payload does not start right after
    the 4-byte header (`specials`, ascending, with `special_start`: the payload's offset in
    the packet, 188 when it has none), and the packets padded with stuffing (`stuffed`)."""

    rows: npt.NDArray[np.intp]
    payloads: memoryview
    events: list[PesEvent]
    specials: list[int]
    special_start: list[int]
    stuffed: list[int]


def classify_rows(
    st: PesStream,
    packets: U8Array,
    cols: PacketColumns,
    rows: npt.NDArray[np.intp],
    stats: ImportStats,
    row_override: float | None,
) -> RowsFound | None:
    """Continuity and payload extraction, vectorized, for `st`'s packets of a numpy batch
    (`rows` of `packets`, whose header columns are `cols`); None when no packet is kept.
    `row_override` (if not None) replaces every packet's row in the events. The payloads are
    a copy: `packets` may change afterwards."""
    b1 = cols.b1[rows]
    b3 = cols.b3[rows]
    tei = b1 >= 0x80
    drop = tei | ((b3 & 0x10) == 0)  # damaged, or no payload (adaptation field only)
    n_tei = int(np.count_nonzero(tei))
    damaged = None
    if drop.any():
        kept = np.flatnonzero(~drop)
        if n_tei or st.pending_tei:
            # Damaged packets count against the next packet kept: it follows a hole.
            stats.transport_errors += n_tei
            seen = np.cumsum(tei)[kept]
            damaged = np.diff(seen, prepend=0)
            if kept.size:
                damaged[0] += st.pending_tei
                st.pending_tei = n_tei - int(seen[-1])
            else:
                st.pending_tei += n_tei
        rows, b1, b3 = rows[kept], b1[kept], b3[kept]
    elif st.pending_tei:
        damaged = np.zeros(rows.size, np.int64)
        damaged[0] = st.pending_tei
        st.pending_tei = 0
    if not rows.size:
        return None
    has_af = (b3 & 0x20) != 0
    cc = (b3 & 0x0F).astype(np.int16)
    prev = np.empty_like(cc)
    prev[0] = st.last_cc
    prev[1:] = cc[:-1]
    st.last_cc = int(cc[-1])
    dup = cc == prev
    af_len = cols.af_len[rows].astype(np.int16)
    disc = has_af & (af_len > 0) & ((cols.af_flags[rows] & 0x80) != 0)
    gap = (cc != ((prev + 1) & 0x0F)) & ~dup & (prev >= 0) & ~disc
    if damaged is not None:
        dup &= damaged == 0
        gap |= damaged > 0
    if dup.any():
        stats.duplicate_packets += int(np.count_nonzero(dup))
        keep = ~dup
        rows, b1, has_af, af_len, gap, cc, prev = (
            rows[keep], b1[keep], has_af[keep], af_len[keep], gap[keep], cc[keep], prev[keep]
        )  # fmt: skip
        if damaged is not None:
            damaged = damaged[keep]
        if not rows.size:
            return None
    start = np.where(has_af, af_len + 5, 4)
    pusi = (b1 & 0x40) != 0
    positions = np.flatnonzero(pusi | gap).tolist()
    specials = np.flatnonzero(start != 4).tolist()
    special_start = start[specials].tolist() if specials else []
    grid = packets[rows, 4:]
    flat = grid.data.cast("B")
    stuffed: list[int] = []
    if specials and st.video and not st.early_off:
        for s, begin in zip(specials, special_start, strict=True):
            at = s * _PAYLOAD  # flat[at] is the adaptation_field_length byte
            flags = flat[at + 1]
            if (
                begin == 5
                or begin > _PAD_BEGIN[flags]
                or (flags & 0x03 and af_stuffed(flat, at - 4, begin - 5))
            ):
                stuffed.append(s)

    events = [
        PesEvent(
            pos=e,
            row=int(rows[e]) if row_override is None else row_override,
            pusi=bool(pusi[e]),
            gap=bool(gap[e]),
            damaged=0 if damaged is None else int(damaged[e]),
            expected_cc=(int(prev[e]) + 1) & 0x0F,
            got_cc=int(cc[e]),
        )
        for e in positions
    ]
    return RowsFound(rows, flat, events, specials, special_start, stuffed)
