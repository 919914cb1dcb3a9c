"""MPEG-TS import: a TS byte stream in, a broadcast (catalog + one track per stream) out.

`TsImporter(broadcast)` owns the writing side of `broadcast` from then on: `feed(data)` takes
bytes in chunks of any size, `finish()` flushes the last frames and finishes every track and the
broadcast, `abort(err)` aborts them. A large feed has its packets classified vectorized (numpy
over the whole batch: sync, PID, flags, continuity), so Python work happens per PES, not per
packet; a small one (a few SRT messages) is read in plain Python, a run of continuation packets
of one PID at a time. Garbage in the stream becomes `Problem` events (`problems`,
`problem_counts`), never an exception out of `feed`.

A bounded PES is written once its declared length is in. An unbounded video PES
(PES_packet_length 0, as ffmpeg writes video) is written at its packet padded with
adaptation-field stuffing, which muxers use for the last packet of a PES, once two PES of the
stream ended that way (stuffing before a PES's last packet turns this off for the stream);
otherwise when the next PES on its PID starts, or at `finish`.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from model import BroadcastProducer, Closed, GroupProducer, TrackInfo, TrackProducer
from mux.audio import Ac3, Adts, AudioFramer, Eac3, FrameFormat, MpegAudio, OpusTs
from mux.catalog import (
    AUDIO_PRIORITY,
    CATALOG_PRIORITY,
    CATALOG_TRACK,
    VIDEO_PRIORITY,
    Catalog,
)
from mux.container import encode_varint
from mux.errors import Malformed
from mux.h264 import H264
from mux.h265 import H265
from mux.pes import PesHeader, PtsUnwrapper, parse_pes_header, pes_header_size, to_us
from mux.problems import (
    AudioResync,
    BadCodecData,
    BadPes,
    ContinuityGap,
    GroupTooLarge,
    Problem,
    StreamWithoutConfig,
    SyncLost,
    TransportError,
    UnsupportedStream,
)
from mux.psi import Pmt, StreamKind, classify_stream
from mux.ts_packets import PACKET_SIZE, PacketColumns, TsSync, U8Array
from mux.ts_program import PmtMoved, ProgramTracker
from mux.video import VideoFramer

_PAYLOAD = PACKET_SIZE - 4
#: Packets kept from before the first PMT, replayed once it arrives (about 1.5 MB).
_STASH_PACKETS = 8192
_TRACK_SUFFIX = {
    "h264": H264.suffix,
    "h265": H265.suffix,
    "aac": ".aac",
    "mpa": ".mp2",
    "ac3": ".ac3",
    "eac3": ".eac3",
    "opus": ".opus",
}


#: An unbounded video PES is completed at its first packet padded with adaptation-field stuffing
#: (the muxer's last packet of a PES) once this many PES of the stream ended that way, with no
#: stuffing before their last packet (see `_Stream.early_pes`).
_EARLY_AFTER = 2

#: Batches up to this many packets (36 SRT messages) take the pure-Python path. It reads a run
#: of continuation packets at once, so on a usual stream (a few runs per message) it beats
#: numpy's fixed costs per call far past this; the bound caps its per-packet worst case (no
#: runs: numpy wins from about 110 packets when every other packet has an adaptation field).
_SMALL_BATCH = 256
#: ... and up to this many while the stream's recent batches were mostly runs (at least
#: `_RUNS_SHARE` of their packets): measured on an 8.5 Mbit/s H.264+AAC stream, 47-100
#: messages per feed cost 3.0-3.4 us per message this way against 4.0-5.2 through numpy.
_RUNNY_BATCH = 2048
_RUNS_SHARE = 0.5

#: `_run_length` compares this many packets' headers at a time.
_LOOKAHEAD = 64
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
    counting up from 0 (long enough for any CC then `_LOOKAHEAD` packets)."""
    ccs = range(16 + _LOOKAHEAD)
    return b"".join(b"\x47" + flags_pid + bytes([0x10 | (cc & 0x0F)]) for cc in ccs)


def _run_length(headers: bytes, i: int, left: int) -> int:
    """How many packets from packet `i` of a batch (`headers`: the 4-byte header of each;
    `left` packets from `i` to the end; packet i + 1 continues packet i) share its flags and
    PID and continue its CC one by one, with a payload and no adaptation field. Compared
    `_LOOKAHEAD` packets at a time (a short run never slices the whole rest of the batch)."""
    at = 4 * i
    pattern = _run_headers(headers[at + 1 : at + 3])
    cc = headers[at + 3]
    count = 2
    while count < left:
        span = min(left - count, _LOOKAHEAD)
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


class _Event(NamedTuple):
    """A packet of one PID that starts a PES and/or follows lost data, at `pos` in the PID's
    kept packets of a batch; `row` orders the problems it causes. (A named tuple: a frozen
    dataclass costs a setattr call per field, and every PES start makes one.)"""

    pos: int
    row: float
    pusi: bool
    gap: bool
    damaged: int
    expected_cc: int
    got_cc: int


@dataclass(slots=True)
class _Collected:
    """One PID's kept packets of a small batch: their payloads as pieces (one per packet, or
    one per run of plain packets, none when empty) with the position of each piece's first
    packet, events, packet rows, and the positions of packets padded with adaptation-field
    stuffing (video only). A position is a packet's index among the PID's kept packets."""

    pieces: list[Any] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    stuffed: list[int] = field(default_factory=list)


def _af_fixed(flags: int) -> int:
    """Bytes of an adaptation field (after its length) that its flags and fixed-size optional
    fields (PCR, OPCR, splice countdown) take."""
    return 1 + (6 if flags & 0x10 else 0) + (6 if flags & 0x08 else 0) + (flags >> 2 & 1)


#: By adaptation-field flags: the payload start (5 + adaptation_field_length) past which the
#: field holds stuffing; 255 (never) when private data or an extension must be walked.
_PAD_BEGIN = bytes(
    5 if flags == 0 else 255 if flags & 0x03 else 5 + _af_fixed(flags) for flags in range(256)
)


def _af_stuffed(packet: bytes | memoryview, at: int, af_len: int) -> bool:
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


@dataclass(slots=True)
class ImportStats:
    """Cumulative counters of one importer (packets and bytes are TS-level)."""

    bytes: int = 0
    packets: int = 0
    ignored_packets: int = 0
    skipped_bytes: int = 0
    sync_losses: int = 0
    transport_errors: int = 0
    continuity_gaps: int = 0
    duplicate_packets: int = 0
    pes: int = 0
    dropped_pes: int = 0
    frames: int = 0
    groups: int = 0
    frames_before_keyframe: int = 0
    catalog_versions: int = 0


@dataclass(slots=True)
class TrackCounts:
    """What the importer wrote into one media track: groups, frames and frame bytes (legacy
    frames as written, timestamp prefix included), plus the PID it came from."""

    pid: int
    frames: int = 0
    groups: int = 0
    bytes: int = 0


@dataclass(slots=True, eq=False)
class _Stream:
    """Import state of one elementary stream (one PID of the PMT)."""

    pid: int
    stream_type: int
    kind: StreamKind
    track: TrackProducer
    counts: TrackCounts
    video: VideoFramer | None = None
    audio: AudioFramer | None = None
    group: GroupProducer | None = None
    last_cc: int = -1
    pending_tei: int = 0
    active: bool = False
    pieces: list[Any] = field(default_factory=list)
    size: int = 0
    total: int | None = None
    checked: bool = False
    last_ts_us: int = 0
    reported_skip: int = 0
    #: Early completion of unbounded video PES (PES_packet_length 0, as ffmpeg writes video):
    #: muxers pad the last packet of a PES with adaptation-field stuffing, so such a packet
    #: ends the access unit without waiting for the next PES start. Trusted after
    #: `_EARLY_AFTER` PES of this stream ended on a stuffed packet; switched off for good when
    #: one carries stuffing before its last packet (the muxer stuffs mid-PES).
    early_pes: int = 0
    early_off: bool = False
    #: The last packet appended to the open PES was stuffed.
    tail_stuffed: bool = False
    #: The previous PES was completed early: payload must now come with a PES start.
    closed_early: bool = False

    @property
    def media(self) -> str:
        return "video" if self.video is not None else "audio"


def _has_config(st: _Stream) -> bool:
    if st.video is not None:
        return st.video.config is not None
    return st.audio is not None and st.audio.config is not None


def _audio_format(kind: StreamKind) -> FrameFormat:
    if kind.codec == "aac":
        return Adts()
    if kind.codec == "mpa":
        return MpegAudio()
    if kind.codec == "ac3":
        return Ac3()
    if kind.codec == "eac3":
        return Eac3()
    return OpusTs(kind.channels or 2)


class TsImporter:
    """Imports one MPEG-TS stream (single program) into `broadcast`; see the module docstring.

    Tracks: `catalog.json` (created at once; one group per catalog version) and, per supported
    elementary stream of the PMT, `broadcast.unique_track(".avc3" | ".hev1" | ".aac" | ...)`,
    created when the PMT arrives. The catalog is first published when every stream of the first
    PMT has its decoder config (or `catalog_wait_s` seconds of media later, or at `finish`),
    then again whenever the stream set or a config changes. `max_problems` bounds the list of
    retained problem events (counts are kept for all).
    """

    def __init__(
        self,
        broadcast: BroadcastProducer,
        *,
        catalog_wait_s: float = 3.0,
        max_problems: int = 1000,
    ) -> None:
        self._broadcast = broadcast
        self._catalog_track = broadcast.create_track(
            TrackInfo(CATALOG_TRACK, priority=CATALOG_PRIORITY)
        )
        self._sync = TsSync()
        self._clock = PtsUnwrapper()
        self._psi = ProgramTracker()
        self._streams: dict[int, _Stream] = {}
        self._stash: list[U8Array] = []
        self._stash_packets = 0
        self._pid_list: list[int] = []
        self._reported: set[tuple[Any, ...]] = set()
        self._initial_pids: set[int] | None = None
        self._catalog_wait_us = int(catalog_wait_s * 1_000_000)
        self._first_ts_us: int | None = None
        self._latest_ts_us = 0
        self._catalog_json: bytes | None = None
        self._catalog_dirty = False
        self._closed = False
        self._problems: deque[Problem] = deque(maxlen=max_problems)
        self._new_problems: list[Problem] = []
        self._batch_problems: list[tuple[float, int, Problem]] | None = None
        #: Packets `_batch_small` takes; `_RUNNY_BATCH` while recent batches were mostly runs.
        self._small_limit = _SMALL_BATCH
        self._array_batches = 0  # batches that came as numpy arrays (the first is a probe)
        self._row: float = 0
        self._row_override: float | None = None
        self.problem_counts: Counter[str] = Counter()
        """Problems seen so far, by `Problem.kind` (never truncated)."""
        self.stats = ImportStats()
        """Cumulative counters."""
        self.tracks: dict[str, TrackCounts] = {}
        """Per media track created: what was written into it."""
        self.catalog: Catalog | None = None
        """The catalog last published (None before the first publish)."""

    # -- public API -----------------------------------------------------------------------

    @property
    def problems(self) -> list[Problem]:
        """The most recent problems (at most `max_problems`), oldest first."""
        return list(self._problems)

    def take_problems(self) -> list[Problem]:
        """Return the problems recorded since the previous call (for a caller that logs them)."""
        out, self._new_problems = self._new_problems, []
        return out

    def feed(self, data: bytes | bytearray) -> None:
        """Import `data` (any length, any alignment); writes whatever frames it completes.

        A bytearray `data` is copied where it is kept, so the caller may reuse its buffer.
        Problems in the stream are recorded, never raised. After `finish`/`abort`, or once the
        broadcast was closed by someone else, data is ignored.
        """
        if self._closed:
            return
        self.stats.bytes += len(data)
        try:
            small = len(data) <= self._small_limit * PACKET_SIZE
            raw = self._sync.take_aligned(data) if small else None
            if raw is not None:
                self._batch(raw)
            else:
                for packets in self._sync.push(data):
                    if self._sync.losses:
                        self._check_sync()  # report a sync loss before what follows it
                    self._batch(packets)
                self._check_sync()
            if self._catalog_dirty:
                self._maybe_publish_catalog(batch_end=True)
        except Closed:
            self._closed = True

    def finish(self) -> None:
        """End of input: emit the last PES of each stream, publish the final catalog, finish
        every track and the broadcast. Idempotent."""
        if self._closed:
            return
        try:
            self._sync.flush()
            self._check_sync()
            for st in list(self._streams.values()):
                if st.active:
                    self._complete(st)
            self._maybe_publish_catalog(final=True)
        except Closed:
            pass
        self._closed = True
        for st in self._streams.values():
            if st.group is not None:
                st.group.finish()
            st.track.finish()
        self._catalog_track.finish()
        self._broadcast.finish()

    def abort(self, err: BaseException) -> None:
        """Abort the broadcast (every track) with `err`; further data is ignored. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._broadcast.abort(err)

    # -- problems ------------------------------------------------------------------------

    def _problem(self, problem: Problem) -> None:
        pending = self._batch_problems
        if pending is not None:
            # Inside a batch streams are handled PID by PID: keep stream order by packet row.
            pending.append((self._row, len(pending), problem))
            return
        self._record(problem)

    def _record(self, problem: Problem) -> None:
        self._problems.append(problem)
        self._new_problems.append(problem)
        if len(self._new_problems) > self._problems.maxlen:  # type: ignore[operator]
            del self._new_problems[0]
        self.problem_counts[problem.kind] += 1

    def _once(self, key: tuple[Any, ...], problem: Problem) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self._problem(problem)

    def _check_sync(self) -> None:
        sync = self._sync
        self.stats.skipped_bytes = sync.skipped_bytes
        if sync.losses:
            for loss in sync.losses:
                self.stats.sync_losses += 1
                self._problem(SyncLost(offset=loss.offset, skipped_bytes=loss.skipped_bytes))
            sync.losses.clear()

    # -- packets -------------------------------------------------------------------------

    def _batch(self, packets: U8Array | bytes) -> None:
        """Handle one aligned batch (a numpy batch, or the bytes of at most `_small_limit`
        packets): PSI packets in order, ES packets per PID. Batches up to `_small_limit` go the
        per-packet way; every 32nd numpy batch small enough for it goes that way too, to see
        whether the stream has turned into runs."""
        n = len(packets) if isinstance(packets, np.ndarray) else len(packets) // PACKET_SIZE
        self.stats.packets += n
        self._batch_problems = []
        try:
            if isinstance(packets, bytes):
                if not self._continue_run(packets):
                    self._batch_small(packets, None)
            elif n <= self._small_limit or (n <= _RUNNY_BATCH and self._array_batches & 31 == 0):
                self._array_batches += 1
                self._batch_small(packets.tobytes(), packets)
            else:
                self._array_batches += 1
                self._batch_rows(packets)
        finally:
            pending, self._batch_problems = self._batch_problems, None
            if pending:
                pending.sort(key=lambda item: item[:2])
                for _, _, problem in pending:
                    self._record(problem)

    def _continue_run(self, raw: bytes) -> bool:
        """If every packet of `raw` (at most `_LOOKAHEAD`) is a plain continuation packet of
        the open PES of one stream, CC one more each time, append them to it (the usual live
        read) and return True; otherwise return False, having changed nothing."""
        b1 = raw[1]
        b3 = raw[3]
        n = len(raw) // PACKET_SIZE
        if b1 & 0xC0 or b3 & 0xF0 != 0x10 or n > _LOOKAHEAD:
            return False
        psi = self._psi
        pid = ((b1 & 0x1F) << 8) | raw[2]
        st = self._streams.get(pid)
        if st is None or psi.program is None or pid == psi.pmt_pid:
            return False
        prev = st.last_cc
        if prev < 0 or (b3 - prev) & 0x0F != 1 or st.pending_tei or not st.active:
            return False
        headers = memoryview(raw).cast("I")[:: PACKET_SIZE // 4].tobytes()
        start = 4 * (b3 & 0x0F)
        if headers != _run_headers(headers[1:3])[start : start + 4 * n]:
            return False
        st.last_cc = (b3 + n - 1) & 0x0F
        self._continue_pes(st, [_run_payloads(raw, 0, n)], range(n))
        return True

    def _batch_rows(self, packets: U8Array) -> None:
        n = len(packets)
        cols = PacketColumns.of(packets)
        pid = cols.pid
        psi = self._psi
        rows = psi.rows(pid, 0)
        handled = 0
        segment = 0
        i = 0
        while i < len(rows):
            row = rows[i]
            i += 1
            self._row = row
            change = psi.packet(packets[row], int(pid[row]))
            if psi.problems:
                self._take_psi_problems()
            handled += 1
            if change is None:
                continue
            handled += self._es_segment(packets, cols, segment, row)
            segment = row
            self._apply(change)
            if isinstance(change, PmtMoved):
                rows = rows[:i] + psi.rows(pid, row + 1)
            if self._stash and psi.program is not None:
                self._row_override = row - 0.5  # all of the stash came before this PMT
                self._replay_stash()
                self._row_override = None
        handled += self._es_segment(packets, cols, segment, n)
        self.stats.ignored_packets += n - handled

    def _batch_small(self, raw: bytes, packets: U8Array | None) -> None:
        """`_batch_rows` for a few packets (`raw`, and `packets` its numpy view or None), in
        plain Python, with the same results: packets are classified in stream order, then each
        PID's are cut into PES. A run of plain continuation packets of one stream (no TEI, no
        PUSI, no adaptation field, each CC one more than the last) is classified at once."""
        n = len(raw) // PACKET_SIZE
        view = memoryview(raw)
        headers: bytes | None = None  # each packet's 4-byte header, once a run needs them
        in_runs = 0
        collected: dict[_Stream, _Collected] = {}
        handled = 0
        segment = 0
        streams = self._streams
        psi = self._psi
        stats = self.stats
        i = 0
        while i < n:
            at = i * PACKET_SIZE
            b1 = raw[at + 1]
            pid = ((b1 & 0x1F) << 8) | raw[at + 2]
            if pid == 0 or pid == psi.pmt_pid:
                if packets is None:
                    packets = np.frombuffer(raw, np.uint8).reshape(n, PACKET_SIZE)
                self._row = i
                change = psi.packet(packets[i], pid)
                if psi.problems:
                    self._take_psi_problems()
                handled += 1
                i += 1
                if change is None:
                    continue
                self._flush_collected(collected)
                if psi.program is None:
                    self._stash_rows(packets, segment, i - 1)
                segment = i - 1
                self._apply(change)
                streams = self._streams
                if self._stash and psi.program is not None:
                    self._row_override = i - 1.5
                    self._replay_stash()
                    self._row_override = None
                continue
            if psi.program is None:
                i += 1
                continue
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
                if count == n:
                    self._continue_pes(st, [payload], range(n))  # the usual live read
                    self._small_limit = _RUNNY_BATCH
                    return
                in_runs += count
                col = collected.get(st)
                if col is None:
                    col = collected[st] = _Collected()
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
                stuffed = st.video is not None and not st.early_off and _af_stuffed(raw, at, af_len)
            gap = damaged > 0 or (prev >= 0 and cc != (prev + 1) & 0x0F and not disc)
            pusi = b1 & 0x40 != 0
            col = collected.get(st)
            if col is None:
                col = collected[st] = _Collected()
            pos = len(col.rows)
            if stuffed:
                col.stuffed.append(pos)
            if pusi or gap:
                event = _Event(pos, i - 1, pusi, gap, damaged, (prev + 1) & 0x0F, cc)
                col.events.append(event)
            if begin < PACKET_SIZE:
                col.starts.append(pos)
                col.pieces.append(view[at + begin : at + PACKET_SIZE])
            col.rows.append(i - 1)
        if collected:
            self._flush_collected(collected)
        if psi.program is None:
            if packets is None:
                packets = np.frombuffer(raw, np.uint8).reshape(n, PACKET_SIZE)
            self._stash_rows(packets, segment, n)
            handled = n
        stats.ignored_packets += n - handled
        self._small_limit = _RUNNY_BATCH if in_runs >= _RUNS_SHARE * n else _SMALL_BATCH

    def _flush_collected(self, collected: dict[_Stream, _Collected]) -> None:
        for st, col in collected.items():
            if not col.events and not col.stuffed:
                self._continue_pes(st, col.pieces, col.rows)
                continue

            def take(a: int, b: int, st: _Stream = st, col: _Collected = col) -> int:
                if not st.active:
                    return 0
                starts = col.starts
                part = col.pieces[bisect_left(starts, a) : bisect_left(starts, b)]
                st.pieces += part
                return sum(map(len, part))

            self._assemble(st, len(col.rows), col.events, take, col.rows.__getitem__, col.stuffed)
        collected.clear()

    def _continue_pes(self, st: _Stream, pieces: list[Any], rows: Sequence[int]) -> None:
        """`_assemble` for packets (`rows`, at least one) that hold no event and no stuffing:
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
            self._row = rows[-1]
            self._complete(st)
        elif st.tail_stuffed:
            self._stuffed_mid_pes(st)

    def _take_psi_problems(self) -> None:
        for problem in self._psi.problems:
            self._problem(problem)
        self._psi.problems.clear()

    def _apply(self, change: PmtMoved | Pmt) -> None:
        """Make a PAT or PMT change current; a new PMT also updates the streams."""
        self._psi.apply(change)
        if isinstance(change, Pmt):
            self._set_program(change)

    def _set_program(self, pmt: Pmt) -> None:
        wanted: dict[int, tuple[int, StreamKind]] = {}
        for es in pmt.streams:
            if es.pid in wanted or es.pid < 0x10 or es.pid == 0x1FFF or es.pid == self._psi.pmt_pid:
                continue
            kind = classify_stream(es, pmt.descriptors)
            if kind.codec is None:
                self._once(
                    ("unsupported", es.pid, es.stream_type),
                    UnsupportedStream(pid=es.pid, stream_type=es.stream_type, name=kind.name),
                )
                continue
            wanted[es.pid] = (es.stream_type, kind)
        for pid in list(self._streams):
            st = self._streams[pid]
            if pid not in wanted or wanted[pid][1] != st.kind:
                self._close_stream(st)
        for pid, (stream_type, kind) in wanted.items():
            if pid not in self._streams:
                self._streams[pid] = self._open_stream(pid, stream_type, kind)
        self._pid_list = list(self._streams)
        if self._initial_pids is None:
            self._initial_pids = set(wanted)
        self._catalog_dirty = True
        self._maybe_publish_catalog()

    def _open_stream(self, pid: int, stream_type: int, kind: StreamKind) -> _Stream:
        is_video = kind.codec in ("h264", "h265")
        suffix = _TRACK_SUFFIX[kind.codec or ""]
        priority = VIDEO_PRIORITY if is_video else AUDIO_PRIORITY
        track = self._broadcast.unique_track(suffix, priority)
        counts = TrackCounts(pid=pid)
        self.tracks[track.name] = counts
        st = _Stream(pid=pid, stream_type=stream_type, kind=kind, track=track, counts=counts)
        if is_video:
            st.video = VideoFramer(H264() if kind.codec == "h264" else H265())
        else:
            st.audio = AudioFramer(_audio_format(kind))
        return st

    def _close_stream(self, st: _Stream) -> None:
        if st.active:
            self._complete(st)
        if st.group is not None:
            st.group.finish()
            st.group = None
        st.track.finish()
        del self._streams[st.pid]
        self._pid_list = list(self._streams)
        self._catalog_dirty = True

    def _stash_rows(self, packets: U8Array, start: int, end: int) -> int:
        """Keep rows [start, end) (at most the last `_STASH_PACKETS`) until the first PMT."""
        if end <= start:
            return 0
        kept = packets[max(start, end - _STASH_PACKETS) : end].copy()
        self._stash.append(kept)
        self._stash_packets += len(kept)
        while self._stash_packets - len(self._stash[0]) >= _STASH_PACKETS:
            self._stash_packets -= len(self._stash.pop(0))
        return end - start

    def _replay_stash(self) -> None:
        """The first PMT is in: import the packets that came before it (a file or a capture
        that starts just before a PMT loses nothing; a live join loses at most the stash)."""
        stash = np.concatenate(self._stash) if len(self._stash) > 1 else self._stash[0]
        self._stash = []
        self._stash_packets = 0
        self._es_segment(stash, PacketColumns.of(stash), 0, len(stash))

    def _es_segment(self, packets: U8Array, cols: PacketColumns, start: int, end: int) -> int:
        """Import the ES packets among rows [start, end); return how many belonged to streams.

        Before the first PMT nothing is known about the PIDs: the rows are kept for replay.
        """
        if end <= start:
            return 0
        if self._psi.program is None:
            return self._stash_rows(packets, start, end)
        if not self._streams:
            return 0
        pid = cols.pid[start:end] if start or end < len(packets) else cols.pid
        used = 0
        for p in self._pid_list:
            rows = np.flatnonzero(pid == p)
            if rows.size:
                if start:
                    rows += start
                used += rows.size
                self._stream_packets(self._streams[p], packets, cols, rows)
        return used

    def _stream_packets(
        self, st: _Stream, packets: U8Array, cols: PacketColumns, rows: npt.NDArray[np.intp]
    ) -> None:
        """Continuity, payload extraction and PES cutting for one PID's packets of a batch."""
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
                self.stats.transport_errors += n_tei
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
            return
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
            self.stats.duplicate_packets += int(np.count_nonzero(dup))
            keep = ~dup
            rows, b1, has_af, af_len, gap, cc, prev = (
                rows[keep], b1[keep], has_af[keep], af_len[keep], gap[keep], cc[keep], prev[keep]
            )  # fmt: skip
            if damaged is not None:
                damaged = damaged[keep]
            if not rows.size:
                return
        start = np.where(has_af, af_len + 5, 4)
        pusi = (b1 & 0x40) != 0
        positions = np.flatnonzero(pusi | gap).tolist()
        specials = np.flatnonzero(start != 4).tolist()
        special_start = start[specials].tolist() if specials else []
        grid = packets[rows, 4:]
        flat = grid.data.cast("B")
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
                    pieces.append(flat[cur * _PAYLOAD : s * _PAYLOAD])
                    added += (s - cur) * _PAYLOAD
                begin = special_start[sp]
                if begin < PACKET_SIZE:
                    pieces.append(flat[s * _PAYLOAD + begin - 4 : (s + 1) * _PAYLOAD])
                    added += PACKET_SIZE - begin
                cur = s + 1
                sp += 1
            if b > cur:
                pieces.append(flat[cur * _PAYLOAD : b * _PAYLOAD])
                added += (b - cur) * _PAYLOAD
            return added

        override = self._row_override

        def row_of(i: int) -> float:
            return int(rows[i]) if override is None else override

        stuffed: list[int] = []
        if specials and st.video is not None and not st.early_off:
            for s, begin in zip(specials, special_start, strict=True):
                at = s * _PAYLOAD  # flat[at] is the adaptation_field_length byte
                flags = flat[at + 1]
                if (
                    begin == 5
                    or begin > _PAD_BEGIN[flags]
                    or (flags & 0x03 and _af_stuffed(flat, at - 4, begin - 5))
                ):
                    stuffed.append(s)

        events = [
            _Event(
                pos=e,
                row=row_of(e),
                pusi=bool(pusi[e]),
                gap=bool(gap[e]),
                damaged=0 if damaged is None else int(damaged[e]),
                expected_cc=(int(prev[e]) + 1) & 0x0F,
                got_cc=int(cc[e]),
            )
            for e in positions
        ]
        self._assemble(st, len(rows), events, take, row_of, stuffed)

    def _assemble(
        self,
        st: _Stream,
        count: int,
        events: list[_Event],
        take: Callable[[int, int], int],
        row_of: Callable[[int], float],
        stuffed: list[int],
    ) -> None:
        """Cut one PID's kept packets of a batch into PES: `count` packets, `events` where a
        PES starts or data was lost, `take(a, b)` appends the payloads of packets [a, b) to the
        open PES, `row_of(i)` gives packet i's row in the batch, to order problems, `stuffed`
        lists (ascending) the packets padded with adaptation-field stuffing (video only)."""

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
                self._row = row_of(b - 1)
                self._complete(st)
            elif stuffed and b > a and not st.early_off:
                self._early_end(st, a, b, stuffed, row_of)
            elif st.tail_stuffed and b > a:
                self._stuffed_mid_pes(st)

        first = events[0].pos if events else count
        if first:
            add(0, first)
        for k, event in enumerate(events):
            self._row = event.row
            nxt = events[k + 1].pos if k + 1 < len(events) else count
            if event.gap:
                dropped = self._gap(st)
                if event.damaged:
                    self._problem(
                        TransportError(
                            pid=st.pid, packets=event.damaged, dropped_bytes=dropped,
                            media=st.media,
                        )
                    )  # fmt: skip
                else:
                    self.stats.continuity_gaps += 1
                    self._problem(
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
                    self._complete(st)
                st.active = True
                st.pieces = []
                st.size = 0
                st.total = None
                st.checked = False
            add(event.pos, nxt)

    def _early_end(
        self,
        st: _Stream,
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
            self._stuffed_mid_pes(st)  # the previous last packet was stuffed: not the end
            return
        k = bisect_left(stuffed, a)
        if k < len(stuffed) and stuffed[k] < b - 1:
            self._stuffed_mid_pes(st)
            return
        st.tail_stuffed = k < len(stuffed) and stuffed[k] == b - 1
        if st.tail_stuffed and st.total is None and st.early_pes >= _EARLY_AFTER:
            self._row = row_of(b - 1)
            self._complete(st)
            st.closed_early = True

    def _stuffed_mid_pes(self, st: _Stream) -> None:
        """A video PES went on after a stuffed packet: this muxer's stuffing does not mark
        the end of a PES, so never complete this stream's PES early."""
        st.early_off = True
        st.tail_stuffed = False

    def _early_broken(self, st: _Stream, row: float) -> None:
        """Payload without a PES start followed a PES completed early: that PES was cut short.
        Its frame is written already; the continuation is dropped (as data without a PES
        start always is) and early completion is switched off for the stream."""
        st.closed_early = False
        st.early_off = True
        self.stats.dropped_pes += 1
        self._row = row
        self._problem(
            BadPes(
                pid=st.pid,
                reason="PES went on after its stuffed last packet (completed early; the rest "
                "is dropped, early completion is now off for this PID)",
                dropped_bytes=0,
            )
        )

    def _check_start(self, st: _Stream) -> None:
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
            self.stats.dropped_pes += 1
            self._problem(
                BadPes(pid=st.pid, reason="PES does not start with 00 00 01", dropped_bytes=st.size)
            )
            self._reset_pes(st)
            return
        length = (first[4] << 8) | first[5]
        st.total = 6 + length if length else None

    def _reset_pes(self, st: _Stream) -> None:
        st.active = False
        st.tail_stuffed = False
        st.pieces = []
        st.size = 0
        st.total = None
        st.checked = False

    def _gap(self, st: _Stream) -> int:
        """Data was lost on this PID: drop (video) or salvage (audio) the partial PES."""
        st.closed_early = False
        if not st.active:
            if st.audio is not None:
                st.audio.reset()
            return 0
        size = st.size
        if st.audio is not None:
            self._complete(st, partial=True)
            st.audio.reset()
        else:
            self.stats.dropped_pes += 1
            self._reset_pes(st)
        return size

    # -- PES -----------------------------------------------------------------------------

    def _complete(self, st: _Stream, *, partial: bool = False) -> None:
        """A whole PES (or an audio PES cut by a gap) is in `st.pieces`: frame it."""
        pieces, size, total = st.pieces, st.size, st.total
        self._reset_pes(st)
        if not pieces:
            return
        self.stats.pes += 1
        first = pieces[0]
        need = pes_header_size(first)
        if need is None or len(first) < need:
            first = b"".join(pieces)
            pieces = [first]
            need = pes_header_size(first)
        try:
            header = parse_pes_header(first)
        except Malformed as exc:
            self.stats.dropped_pes += 1
            self._problem(BadPes(pid=st.pid, reason=str(exc), dropped_bytes=size))
            return
        if total is not None and size < total and not partial:
            if st.video is not None:
                self.stats.dropped_pes += 1
                reason = f"PES ends after {size} of its {total} bytes"
                self._problem(BadPes(pid=st.pid, reason=reason, dropped_bytes=size))
                return
            partial = True
        end = None if total is None or size <= total else total - size  # trim trailing bytes
        ts_us = st.last_ts_us
        if header.pts_90k is not None:
            ts_us = to_us(self._clock.unwrap(header.pts_90k))
            st.last_ts_us = ts_us
            if self._first_ts_us is None:
                self._first_ts_us = ts_us
            if ts_us > self._latest_ts_us:
                self._latest_ts_us = ts_us
        if st.video is not None:
            self._video_pes(st, header, pieces, end, ts_us)
        else:
            pts_us = ts_us if header.pts_90k is not None else None
            self._audio_pes(st, header, pieces, end, pts_us)

    def _video_pes(
        self, st: _Stream, header: PesHeader, pieces: list[Any], end: int | None, ts_us: int
    ) -> None:
        assert st.video is not None
        prefix = encode_varint(ts_us)
        parts = [prefix, pieces[0][header.payload_offset :]]
        parts.extend(pieces[1:])
        frame = b"".join(parts)
        if end is not None:
            frame = frame[:end]
        framer = st.video
        try:
            unit = framer.push(frame, len(prefix))
        except Malformed as exc:
            self.stats.dropped_pes += 1
            self._problem(BadCodecData(pid=st.pid, codec=framer.codec.name, reason=str(exc)))
            return
        if framer.config_changed:
            framer.config_changed = False
            self._catalog_dirty = True
        if self._catalog_dirty:
            self._maybe_publish_catalog()
        counts = st.counts
        if unit.keyframe:
            if st.group is not None:
                st.group.finish()
            st.group = st.track.append_group()
            counts.groups += 1
            self.stats.groups += 1
        elif st.group is None:
            self.stats.frames_before_keyframe += 1
            return
        try:
            st.group.write_frame(unit.frame)
        except Closed:
            if st.track.is_closed:
                raise
            self._problem(GroupTooLarge(track=st.track.name))
            st.group = None
            return
        counts.frames += 1
        counts.bytes += len(unit.frame)
        self.stats.frames += 1

    def _audio_pes(
        self,
        st: _Stream,
        header: PesHeader,
        pieces: list[Any],
        end: int | None,
        pts_us: int | None,
    ) -> None:
        assert st.audio is not None
        parts = [pieces[0][header.payload_offset :]]
        parts.extend(pieces[1:])
        data = b"".join(parts)
        if end is not None:
            data = data[:end]
        framer = st.audio
        frames = framer.push(data, pts_us)
        if framer.skipped_bytes > st.reported_skip:
            self._problem(
                AudioResync(
                    pid=st.pid,
                    codec=framer.fmt.name,
                    skipped_bytes=framer.skipped_bytes - st.reported_skip,
                )
            )
            st.reported_skip = framer.skipped_bytes
        if framer.config_changed:
            framer.config_changed = False
            self._catalog_dirty = True
        if self._catalog_dirty:
            self._maybe_publish_catalog()
        if not frames:
            return
        counts = st.counts
        track = st.track
        for ts_us, payload in frames:
            frame = encode_varint(ts_us) + payload
            track.write_frame(frame)
            counts.bytes += len(frame)
        counts.frames += len(frames)
        counts.groups += len(frames)
        self.stats.frames += len(frames)
        self.stats.groups += len(frames)
        st.last_ts_us = frames[-1][0]

    # -- catalog -------------------------------------------------------------------------

    def _build_catalog(self) -> Catalog:
        catalog = Catalog()
        for st in self._streams.values():
            if st.video is not None and st.video.config is not None:
                catalog.video[st.track.name] = st.video.config
            elif st.audio is not None and st.audio.config is not None:
                catalog.audio[st.track.name] = st.audio.config
        return catalog

    def _maybe_publish_catalog(self, *, final: bool = False, batch_end: bool = False) -> None:
        """Publish the catalog if it changed. The first time, wait until every stream of the
        first PMT has its config; past `catalog_wait_s` of media (checked only between
        batches, where every PID has caught up) or at `final`, publish without the laggards."""
        if not self._catalog_dirty and not (final and self._catalog_json is None):
            return
        if self._catalog_json is None and not final:
            initial = self._initial_pids
            if initial is None:
                return
            missing = [
                st
                for pid in sorted(initial)
                if (st := self._streams.get(pid)) is not None and not _has_config(st)
            ]
            if missing:
                if self._first_ts_us is None or not batch_end:
                    return
                waited = self._latest_ts_us - self._first_ts_us
                if waited < self._catalog_wait_us:
                    return
                for st in missing:
                    self._problem(
                        StreamWithoutConfig(pid=st.pid, name=st.kind.name, waited_s=waited / 1e6)
                    )
        self._catalog_dirty = False
        catalog = self._build_catalog()
        payload = catalog.to_json()
        if payload == self._catalog_json:
            return
        self._catalog_json = payload
        self.catalog = catalog
        self._catalog_track.write_frame(payload)
        self.stats.catalog_versions += 1
