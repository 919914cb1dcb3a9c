"""MPEG-TS import: a TS byte stream in, a broadcast (catalog + one track per stream) out.

`TsImporter(broadcast)` owns the writing side of `broadcast` from then on: `feed(data)` takes
bytes in chunks of any size, `finish()` flushes the last frames and finishes every track and the
broadcast, `abort(err)` aborts them. A large feed has its packets classified vectorized (numpy
over the whole batch: sync, PID, flags, continuity), so Python work happens per PES, not per
packet; a small one (a few SRT messages) is read in plain Python, a run of continuation packets
of one PID at a time. Garbage in the stream becomes `Problem` events (`problems`,
`problem_counts`), never an exception out of `feed`.

Memory stays bounded whatever a peer sends: the streams followed (`max_streams`), the bytes
one PES may hold (`max_pes_bytes`) and those all partial PES hold together
(`max_pending_bytes`, shared out by weight: a video stream 16 shares, any other 1) are capped,
as are the packets kept before the first PMT; what is dropped is reported.

This module is the facade: packet sync (`mux.ts_packets`), PAT/PMT (`mux.ts_program`), the
packets kept before the first PMT, and which path a batch takes. The roles behind it: the
per-packet path (`mux.es_packets`), PES assembly (`mux.pes_assembly`: when a bounded or
unbounded PES is complete) and the per-stream codecs, tracks and catalog (`mux.ts_tracks`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from model import DEFAULT_MAX_GROUP_BYTES, BroadcastProducer, Closed
from mux import _impl
from mux.catalog import Catalog
from mux.es_packets import classify_rows
from mux.opaque import SectionReader
from mux.pes_assembly import Collected, PesAssembler, PesStream
from mux.problems import (
    ContinuityGap,
    ImportStats,
    Problem,
    ProblemLog,
    SyncLost,
    TooManyStreams,
)
from mux.psi import EsInfo, Pmt, StreamKind, classify_stream
from mux.ts_packets import PACKET_SIZE, PacketColumns, TsSync, U8Array
from mux.ts_program import PmtMoved, ProgramTracker
from mux.ts_tracks import ImportTracks, TrackCounts, is_video

__all__ = ["ImportStats", "TrackCounts", "TsImporter"]

#: Packets kept from before the first PMT, replayed once it arrives (about 1.5 MB).
_STASH_PACKETS = 8192
#: Default `max_streams`: well past real programs (a video, a few dozen audio languages).
DEFAULT_MAX_STREAMS = 64
#: Default `max_pending_bytes`: two of the model's largest groups, so one largest frame fits
#: beside everything else held.
DEFAULT_MAX_PENDING_BYTES = 2 * DEFAULT_MAX_GROUP_BYTES
#: Shares of `max_pending_bytes` a video stream gets against 1 for any other stream: an
#: access unit is far larger than an audio PES.
_VIDEO_SHARES = 16

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


class TsImporter:
    """Imports one MPEG-TS stream (single program) into `broadcast`; see the module docstring.

    Tracks: `catalog.json` (created at once; one group per catalog version) and, per elementary
    stream of the PMT, `broadcast.unique_track(".avc3" | ".hev1" | ".aac" | ...)` for a decoded
    stream, or an opaque track (`".scte35" | ".klv" | ".dvbsub" | ".mpeg2video" | ...`: one
    frame per PES or section, see `mux.ts_tracks`) for any other, created when the PMT arrives.
    The catalog is first published when every decoded stream of the first PMT has its decoder
    config (or `catalog_wait_s` seconds of media later, or at `finish`), then again whenever
    the stream set, the PMT or a config changes. `max_problems` bounds the list of retained
    problem events (counts are kept for all).

    Bounds (see the module docstring): only the first `max_streams` streams of a PMT
    are imported; a PES may hold at most `max_pes_bytes` (default: the model's largest group,
    `model.DEFAULT_MAX_GROUP_BYTES`), and its stream's share of `max_pending_bytes`. `ValueError`
    if a bound is below 1.
    """

    def __init__(
        self,
        broadcast: BroadcastProducer,
        *,
        catalog_wait_s: float = 3.0,
        max_problems: int = 1000,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_pes_bytes: int = DEFAULT_MAX_GROUP_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        if min(max_streams, max_pes_bytes, max_pending_bytes) < 1:
            raise ValueError("max_streams, max_pes_bytes and max_pending_bytes must be >= 1")
        self._max_streams = max_streams
        self._max_pes_bytes = max_pes_bytes
        self._max_pending_bytes = max_pending_bytes
        self._broadcast = broadcast
        self._sync = TsSync()
        self._psi = ProgramTracker()
        self._log = ProblemLog(max_problems)
        self.stats = ImportStats()
        """Cumulative counters."""
        self._tracks = ImportTracks(broadcast, self.stats, self._log, catalog_wait_s=catalog_wait_s)
        self._pes = PesAssembler(self.stats, self._log, self._tracks.pes, self._tracks.lost)
        self._streams: dict[int, PesStream] = {}
        self._sections: dict[int, SectionReader] = {}
        self._stash: list[U8Array] = []
        self._stash_packets = 0
        self._pid_list: list[int] = []
        self._closed = False
        #: Packets `_batch_small` takes; `_RUNNY_BATCH` while recent batches were mostly runs.
        self._small_limit = _SMALL_BATCH
        self._array_batches = 0  # batches that came as numpy arrays (the first is a probe)
        self._row_override: float | None = None
        self.problem_counts: Counter[str] = self._log.counts
        """Problems seen so far, by `Problem.kind` (never truncated)."""
        self.tracks: dict[str, TrackCounts] = self._tracks.tracks
        """Per media track created: what was written into it."""

    # -- public API -----------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog | None:
        """The catalog last published (None before the first publish)."""
        return self._tracks.catalog

    @property
    def held_bytes(self) -> int:
        """Input bytes held for later right now: partial PES payloads and sections, packets
        kept before the first PMT, and an incomplete packet. Between calls at most
        `max_pending_bytes`, plus under 3 MB of packets before the first PMT, plus 4 KiB per
        section stream, plus 188 (the pieces of a stream's PES may keep up to 64 KiB more of a
        batch alive)."""
        pending = sum(st.size for st in self._streams.values())
        pending += sum(reader.held_bytes for reader in self._sections.values())
        return pending + self._stash_packets * PACKET_SIZE + self._sync.buffered_bytes

    @property
    def problems(self) -> list[Problem]:
        """The most recent problems (at most `max_problems`), oldest first."""
        return self._log.recent()

    def take_problems(self) -> list[Problem]:
        """Return the problems recorded since the previous call (for a caller that logs them)."""
        return self._log.take_new()

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
            small = len(data) <= self._small_limit * PACKET_SIZE or _impl.classify_any_batch
            raw = self._sync.take_aligned(data) if small else None
            if raw is not None:
                cont = _impl.continue_run
                if cont is None or not cont(raw, self._streams, self._psi.pmt_pid, self.stats):
                    self._batch(raw)
            else:
                for packets in self._sync.push(data):
                    if self._sync.losses:
                        self._check_sync()  # report a sync loss before what follows it
                    self._batch(packets)
                self._check_sync()
            if self._tracks.catalog_dirty:
                self._tracks.maybe_publish_catalog(batch_end=True)
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
                    self._pes.complete(st)
            self._tracks.maybe_publish_catalog(final=True)
        except Closed:
            pass
        self._closed = True
        self._tracks.finish()
        self._broadcast.finish()

    def abort(self, err: BaseException) -> None:
        """Abort the broadcast (every track) with `err`; further data is ignored. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._broadcast.abort(err)

    # -- problems ------------------------------------------------------------------------

    def _check_sync(self) -> None:
        sync = self._sync
        self.stats.skipped_bytes = sync.skipped_bytes
        if sync.losses:
            for loss in sync.losses:
                self.stats.sync_losses += 1
                self._log.add(SyncLost(offset=loss.offset, skipped_bytes=loss.skipped_bytes))
            sync.losses.clear()

    def _take_psi_problems(self) -> None:
        for problem in self._psi.problems:
            self._log.add(problem)
        self._psi.problems.clear()

    # -- packets -------------------------------------------------------------------------

    def _batch(self, packets: U8Array | bytes) -> None:
        """Handle one aligned batch (a numpy batch, or the bytes of at most `_small_limit`
        packets): PSI packets in order, ES packets per PID. Batches up to `_small_limit` go the
        per-packet way; every 32nd numpy batch small enough for it goes that way too, to see
        whether the stream has turned into runs."""
        if isinstance(packets, bytes):
            n = len(packets) // PACKET_SIZE
            self.stats.packets += n
            run = _impl.plain_run(packets, self._streams, self._psi.pmt_pid)
            if run is not None:
                # One PID, one PES: its problems come in stream order without holding them.
                self._pes.continue_pes(run[0], [run[1]], range(n))
                return
        else:
            n = len(packets)
            self.stats.packets += n
        self._log.begin_batch()
        try:
            if isinstance(packets, bytes):
                self._batch_small(packets, None)
            elif _impl.classify_any_batch:
                # Compiled: packet by packet at any size, reading the batch in place.
                self._batch_small(packets.data.cast("B"), packets)
            elif n <= self._small_limit or (n <= _RUNNY_BATCH and self._array_batches & 31 == 0):
                self._array_batches += 1
                self._batch_small(packets.tobytes(), packets)
            else:
                self._array_batches += 1
                self._batch_rows(packets)
        finally:
            self._log.end_batch()

    def _batch_rows(self, packets: U8Array) -> None:
        n = len(packets)
        cols = PacketColumns.of(packets)
        pid = cols.pid
        psi = self._psi
        log = self._log
        rows = psi.rows(pid, 0)
        handled = 0
        segment = 0
        i = 0
        while i < len(rows):
            row = rows[i]
            i += 1
            log.row = row
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

    def _batch_small(self, raw: bytes | memoryview, packets: U8Array | None) -> None:
        """`_batch_rows` for a few packets (`raw`, and `packets` its numpy view or None), in
        plain Python (or compiled, then for any number of packets, and `raw` may be a view of
        the caller's buffer), with the same results: packets are classified in stream order
        (`mux.es_packets.classify_small`, which stops at each PSI packet), then each PID's are
        cut into PES."""
        n = len(raw) // PACKET_SIZE
        headers: bytes | None = None
        collected: dict[PesStream, Collected] = {}
        handled = 0
        in_runs = 0
        segment = 0
        psi = self._psi
        streams = self._streams
        stats = self.stats
        # Packets from here on are read under a program (earlier ones go to the stash).
        scan_from = 0 if psi.program is not None else None
        i = 0
        while True:
            i, used, runs, headers = _impl.classify_small(
                raw, i, streams, psi.pmt_pid, collected, stats, headers
            )
            handled += used
            in_runs += runs
            if i >= n:
                break
            if packets is None:
                packets = np.frombuffer(raw, np.uint8).reshape(n, PACKET_SIZE)
            pid = ((raw[i * PACKET_SIZE + 1] & 0x1F) << 8) | raw[i * PACKET_SIZE + 2]
            self._log.row = i
            change = psi.packet(packets[i], pid)
            if psi.problems:
                self._take_psi_problems()
            handled += 1
            i += 1
            if change is None:
                continue
            self._pes.flush_collected(collected, len(raw))
            if psi.program is None:
                self._stash_rows(packets, segment, i - 1)
            segment = i - 1
            self._apply(change)
            if scan_from is None and psi.program is not None:
                scan_from = i
            if self._stash and psi.program is not None:
                self._row_override = i - 1.5
                self._replay_stash()
                self._row_override = None
        if collected:
            self._pes.flush_collected(collected, len(raw))
        if psi.program is None:
            if packets is None:
                packets = np.frombuffer(raw, np.uint8).reshape(n, PACKET_SIZE)
            self._stash_rows(packets, segment, n)
            handled = n
        if self._sections and scan_from is not None:
            handled += self._scan_sections(raw, scan_from)
        stats.ignored_packets += n - handled
        self._small_limit = _RUNNY_BATCH if in_runs >= _RUNS_SHARE * n else _SMALL_BATCH

    def _apply(self, change: PmtMoved | Pmt) -> None:
        """Make a PAT or PMT change current; a new PMT also updates the streams."""
        self._psi.apply(change)
        if isinstance(change, Pmt):
            self._set_program(change)

    def _set_program(self, pmt: Pmt) -> None:
        wanted: dict[int, StreamKind] = {}
        entries: dict[int, EsInfo] = {}
        declared = 0
        for es in pmt.streams:
            if es.pid in wanted or es.pid < 0x10 or es.pid == 0x1FFF or es.pid == self._psi.pmt_pid:
                continue
            declared += 1
            if len(wanted) < self._max_streams:
                wanted[es.pid] = classify_stream(es, pmt.descriptors)
                entries[es.pid] = es
        if declared > len(wanted):
            self._log.once(
                ("too_many_streams", declared),
                TooManyStreams(declared=declared, kept=len(wanted)),
            )
        tracks = self._tracks
        for pid in list(self._streams):
            if pid not in wanted or wanted[pid] != tracks.kind(pid):
                st = self._streams[pid]
                if st.active:
                    self._pes.complete(st)
                tracks.close_stream(pid)
                del self._streams[pid]
        for pid in list(self._sections):
            if pid not in wanted or wanted[pid] != tracks.kind(pid):
                tracks.close_stream(pid)
                del self._sections[pid]
        for pid, kind in wanted.items():
            if kind.section:
                if pid not in self._sections:
                    self._sections[pid] = SectionReader()
                    tracks.open_stream(pid, kind, entries[pid])
            elif pid not in self._streams:
                video = is_video(kind)
                media = "video" if video else "data" if kind.opaque else "audio"
                self._streams[pid] = PesStream(pid, video, media, self._max_pes_bytes)
                tracks.open_stream(pid, kind, entries[pid])
            tracks.describe(pid, entries[pid])
        self._pid_list = list(self._streams)
        self._share_budget()
        tracks.program_set(set(wanted), pmt, self._psi.pmt_pid or 0)

    def _scan_sections(self, raw: bytes | memoryview, start: int) -> int:
        """Read the packets of section streams among the packets of `raw` from `start` on
        (the plain-Python path; only called when the program has section streams); return
        how many there were."""
        sections = self._sections
        count = 0
        for i in range(start, len(raw) // PACKET_SIZE):
            off = i * PACKET_SIZE
            pid = ((raw[off + 1] & 0x1F) << 8) | raw[off + 2]
            reader = sections.get(pid)
            if reader is not None:
                count += 1
                self._log.row = i
                self._section_packet(pid, reader, bytes(raw[off : off + PACKET_SIZE]))
        return count

    def _section_packet(self, pid: int, reader: SectionReader, data: bytes) -> None:
        """One packet of section stream `pid`: write the sections it completes, report the
        ones that were dropped and a continuity gap."""
        sections, errors, gap = reader.packet(data)
        if gap is not None:
            self.stats.continuity_gaps += 1
            self._log.add(
                ContinuityGap(
                    pid=pid, expected_cc=gap[0], got_cc=gap[1], dropped_bytes=0, media="psi"
                )
            )
        for reason in errors:
            self._tracks.section(pid, b"", reason)
        for section in sections:
            self._tracks.section(pid, section)

    def _share_budget(self) -> None:
        """Give each stream its limit: its share of `max_pending_bytes` by weight, at most
        `max_pes_bytes`, so all partial PES together stay within the budget."""
        streams = self._streams.values()
        shares = sum(_VIDEO_SHARES if st.video else 1 for st in streams)
        for st in streams:
            share = self._max_pending_bytes * (_VIDEO_SHARES if st.video else 1) // shares
            st.limit = min(self._max_pes_bytes, share)
            self._pes.enforce_limit(st)

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
        if not self._streams and not self._sections:
            return 0
        pid = cols.pid[start:end] if start or end < len(packets) else cols.pid
        used = 0
        for p, reader in self._sections.items():
            for row in (np.flatnonzero(pid == p) + start).tolist():
                used += 1
                self._log.row = row
                self._section_packet(p, reader, packets[row].tobytes())
        for p in self._pid_list:
            rows = np.flatnonzero(pid == p)
            if rows.size:
                if start:
                    rows += start
                used += rows.size
                st = self._streams[p]
                override = self._row_override
                found = classify_rows(st, packets, cols, rows, self.stats, override)
                if found is not None:
                    self._pes.assemble_rows(st, *found, override)
        return used
