"""Sans-I/O MPEG-TS exporter: a broadcast's catalog and media frames in, TS chunks out.

The caller owns the `TsExporter` and feeds it: `set_catalog()` with each catalog version, then
`push()` with every media frame (hang legacy frames, per track in decode order, tracks merged
roughly by time). Each call returns the `TsChunk`s it produced, at once (`push_frames()`: the
same output as `TsFrame`s, one per muxed frame, uncut); the exporter holds no output between
calls, so the end of a stream needs no flush. The driver that reads a model broadcast is
`gateway.ts_source.export_batches`.

Output layout (one program):
- PIDs, program number and PMT PID: the source's, from the catalog's `mpegts` section (each
  track's source stream, `mux.opaque.TsProgramInfo`), so downstream decoders configured by PID
  keep working; with `renumber=True`, or for tracks the section does not describe, program 1,
  PMT PID 0x1000 and elementary PIDs from 0x100. Each stream's stream_type and descriptors
  (language, registration, DVB subtitling/teletext, ...) and the program's descriptors are
  the source's too.
- Opaque tracks (streams the importer did not decode) go back as they came: each frame's PES
  (header, PTS and DTS included) or section, repacketized on its PID.
- PAT and PMT before the first frame, before every video keyframe, whenever
  the media clock enters a new 500 ms slot (slots are absolute on the media timeline), and
  after a catalog change (with the PMT version bumped).
- PCR in dedicated adaptation-only packets on the PCR PID (first video track, else first
  audio track), one per 25 ms slot of the media clock; a push that crosses several slots writes
  up to four (a longer gap in the media is a gap in the PCR ramp too). The media clock is the
  highest DTS pushed so far; PCR = slot time - (reorder reserve + `pcr_delay_ms`), so a frame's
  bytes arrive before its DTS on the receiver's clock.
- PES: video (stream_id 0xE0, unbounded length) carries PTS and an authored DTS (legacy
  frames carry only PTS): max(previous DTS + 1 tick, highest PTS so far - reorder reserve), so
  DTS increases and stays at or below PTS for B-frame reordering within the reserve. Audio
  carries PTS. Continuity counters count per PID.
- Video is Annex-B with an access unit delimiter first; AAC gets a 7-byte ADTS header.
- Chunks: the packets one push produced, cut into 1316-byte pieces (the last may be shorter),
  all stamped with that frame's time; a frame's bytes never share a chunk with the next one's.

This module is the facade: PIDs, PSI and PCR cadence, DTS authoring, the start at a keyframe.
Behind it: `mux.export_plan` (which tracks, and how), `mux.export_pes` (one frame's PES and
codec headers), `mux.ts_mux` (packetization, sections) and `mux.ts_chunks` (the output units).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from mux.catalog import AudioConfig, Catalog, VideoConfig
from mux.container import decode_frame
from mux.errors import Malformed, MalformedFrame
from mux.export_pes import frame_parts
from mux.export_plan import TrackPlan, Unexportable, plan_opaque, plan_track
from mux.opaque import CATALOG_SECTION, UNITS_FRAMES, TsProgramInfo
from mux.pes import parse_pes_header
from mux.problems import ExportProblem, ExportProblemKind
from mux.ts_chunks import CHUNK_BYTES, TsChunk, TsFrame, cut_chunks, cut_payloads
from mux.ts_mux import (
    PAT_PID,
    PCR_PER_90K,
    PTS_MASK,
    BytesLike,
    PidWriter,
    PmtStream,
    pat_section,
    pmt_section,
)

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_PCR_DELAY_MS",
    "DEFAULT_REORDER_MS",
    "ExportProblem",
    "ExportProblemKind",
    "ExportStats",
    "TsChunk",
    "TsExporter",
    "TsFrame",
    "cut_chunks",
    "cut_payloads",
]

PMT_PID = 0x1000
FIRST_ES_PID = 0x100
PROGRAM_NUMBER = 1
TRANSPORT_STREAM_ID = 1

#: Video DTS reserve when the catalog gives no `jitter`: three reordered frames at 24 fps.
DEFAULT_REORDER_MS = 150
#: Extra PCR lead beyond the reorder reserve (how early bytes arrive before their DTS).
DEFAULT_PCR_DELAY_MS = 100
PSI_INTERVAL_MS = 500
PCR_INTERVAL_MS = 25
#: At most this many PCR packets are written for one push (the rest of a gap is skipped).
PCR_BACKFILL_SLOTS = 4
#: Margin added to a catalog's video `jitter` so the +1 tick DTS steps never reach a PTS.
_REORDER_MARGIN_90K = 900
_MAX_PROBLEMS = 64
#: Audio frames held, all tracks together, while waiting for the first video keyframe.
_HELD_FRAMES = 128


@dataclass(slots=True)
class ExportStats:
    """Counters of one exporter (cumulative; frames by outcome, output by unit)."""

    frames_in: int = 0
    frames_out: int = 0
    #: Frames dropped: unknown or skipped track, before the start keyframe, or malformed.
    frames_dropped: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    psi_out: int = 0
    pcr_out: int = 0
    problems: int = 0


@dataclass(slots=True, kw_only=True)
class _Track:
    plan: TrackPlan
    writer: PidWriter
    started: bool = False
    max_pts_90k: int = -1
    last_dts_90k: int = -1


@dataclass(slots=True)
class _Problems:
    items: list[ExportProblem] = field(default_factory=list)
    seen: set[tuple[ExportProblemKind, str | None]] = field(default_factory=set)


class TsExporter:
    """Turns one broadcast (catalog + legacy media frames) into a playable MPEG-TS stream.

    Sans-I/O: nothing is read or sent here, and every method returns at once. Call
    `set_catalog()` before pushing frames and again for each new catalog version; `push()`
    each media frame of the catalog's tracks (per track in the order the track delivers them,
    tracks interleaved by time). Output starts at the first video keyframe (audio-only
    broadcasts: the first audio frame), preceded by PAT, PMT and PCR, so a late joiner's stream
    plays from its first byte; audio pushed before that keyframe is held (up to 128 frames) and
    written after it when it decodes no earlier than the keyframe's DTS. Problems in the input
    (unsupported codecs, malformed frames) are collected in `problems` and never raised.

    `reorder_ms` is how far video DTS runs behind PTS (B-frame reordering it can absorb); None
    takes the largest video `jitter` of the first catalog, else 150 ms. It and `pcr_delay_ms`
    are fixed once output starts, since the PCR they shape must never go backwards.
    `renumber=True` gives the output program 1, PMT PID 0x1000 and PIDs from 0x100 instead of
    the source's (descriptors are kept either way).
    """

    def __init__(
        self,
        *,
        reorder_ms: int | None = None,
        pcr_delay_ms: int = DEFAULT_PCR_DELAY_MS,
        renumber: bool = False,
    ) -> None:
        self._renumber = renumber
        self._program_number = PROGRAM_NUMBER
        self._reorder_override = reorder_ms
        self._pcr_delay_90k = pcr_delay_ms * 90
        self._reorder_90k = (reorder_ms if reorder_ms is not None else DEFAULT_REORDER_MS) * 90
        self._pcr_lead_90k = self._pcr_delay_90k
        self._tracks: dict[str, _Track] = {}
        self._pids: dict[str, int] = {}
        self._pat_writer = PidWriter(PAT_PID)
        self._pmt_writer = PidWriter(PMT_PID)
        self._pcr_track: _Track | None = None
        self._has_video = False
        self._pmt_signature: tuple[object, ...] | None = None
        self._pmt_version = 0
        self._pat_version = 0
        self._pat = pat_section(
            transport_stream_id=TRANSPORT_STREAM_ID,
            program_number=PROGRAM_NUMBER,
            pmt_pid=PMT_PID,
            version=0,
        )
        self._pmt = b""
        self._psi_due = False
        self._started = False
        self._clock_90k = 0
        self._last_psi_slot = -1
        self._last_pcr_slot = -1
        self._last_tag_us = 0
        self._problems = _Problems()
        #: Audio (timestamp µs, track, payload) that arrived before the first video keyframe.
        self._held: deque[tuple[int, str, bytes]] = deque(maxlen=_HELD_FRAMES)
        self.stats = ExportStats()
        """Cumulative counters; read them at any time."""

    # -- configuration ---------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once the first frame has been written (after its PAT, PMT and PCR)."""
        return self._started

    @property
    def problems(self) -> list[ExportProblem]:
        """Problems found so far, each (kind, track) once, at most 64 (a copy)."""
        return list(self._problems.items)

    @property
    def pmt_version(self) -> int:
        """The version_number (0..31) of the PMT being sent; bumped by each catalog change."""
        return self._pmt_version

    def track_pids(self) -> dict[str, int]:
        """Return the PID of each exported track, by track name."""
        return {name: track.writer.pid for name, track in self._tracks.items()}

    def set_catalog(self, catalog: Catalog) -> None:
        """Adopt a catalog version: which tracks to export and how.

        Every video and audio rendition with a supported codec (H.264, H.265, AAC, MP2/MP3,
        AC-3, E-AC-3, Opus) in the `legacy` container becomes an elementary stream; others are
        skipped with a problem. So does every opaque track the catalog's `mpegts` section
        describes. A track keeps its PID (and continuity counter) across versions unless its
        source PID moves. If what the PMT describes changes, the PMT version is bumped and
        PAT/PMT go out before the next frame.
        """
        program = self._program_info(catalog)
        sources = program.tracks if program is not None else {}
        plans: list[TrackPlan] = []
        renditions: list[tuple[str, VideoConfig | AudioConfig]] = sorted(catalog.video.items())
        renditions += sorted(catalog.audio.items())
        for name, cfg in renditions:
            try:
                plans.append(plan_track(name, cfg, sources.get(name)))
            except Unexportable as exc:
                self._problem(exc.kind, name, str(exc))
        for name, source in sources.items():
            if source.units != UNITS_FRAMES:
                plans.append(plan_opaque(name, source))
        if sources:  # the source PMT's order; tracks it does not describe after
            order = {name: i for i, name in enumerate(sources)}
            plans.sort(key=lambda plan: order.get(plan.name, len(order)))

        keep = program is not None and not self._renumber
        program_number = program.program_number if keep and program else PROGRAM_NUMBER
        pmt_pid = program.pmt_pid if keep and program else PMT_PID
        used = {PAT_PID, 0x1FFF, pmt_pid}
        wanted = set() if self._renumber else {p.source_pid for p in plans}
        tracks: dict[str, _Track] = {}
        for plan in plans:
            pid = self._pick_pid(plan, used, wanted)
            used.add(pid)
            old = self._tracks.get(plan.name)
            if (
                old is not None
                and old.writer.pid == pid
                and old.plan.stream_type == plan.stream_type
            ):
                old.plan = plan
                tracks[plan.name] = old
                continue
            writer = old.writer if old is not None and old.writer.pid == pid else PidWriter(pid)
            tracks[plan.name] = _Track(plan=plan, writer=writer)
        self._tracks = tracks
        self._has_video = any(t.plan.is_video for t in tracks.values())
        self._pcr_track = next(
            (t for t in tracks.values() if t.plan.is_video),
            next((t for t in tracks.values() if not t.plan.section), None),
        )

        if not self._started:
            if self._reorder_override is None:
                jitters = [
                    cfg.jitter_ms
                    for name, cfg in catalog.video.items()
                    if name in tracks and cfg.jitter_ms is not None
                ]
                self._reorder_90k = (
                    max(jitters) * 90 + _REORDER_MARGIN_90K if jitters else DEFAULT_REORDER_MS * 90
                )
            reorder = self._reorder_90k if self._has_video else 0
            self._pcr_lead_90k = reorder + self._pcr_delay_90k

        if (program_number, pmt_pid) != (self._program_number, self._pmt_writer.pid):
            if self._pmt_writer.pid != pmt_pid:
                self._pmt_writer = PidWriter(pmt_pid)
            self._program_number = program_number
            self._pat_version = (self._pat_version + 1) % 32
            self._pat = pat_section(
                transport_stream_id=TRANSPORT_STREAM_ID,
                program_number=program_number,
                pmt_pid=pmt_pid,
                version=self._pat_version,
            )
            self._psi_due = True
        program_descriptors = program.descriptors if program is not None else b""
        signature = (
            program_number,
            pmt_pid,
            program_descriptors,
            None if self._pcr_track is None else self._pcr_track.writer.pid,
            tuple((t.writer.pid, t.plan.signature) for t in tracks.values()),
        )
        if signature != self._pmt_signature:
            if self._pmt_signature is not None:
                self._pmt_version = (self._pmt_version + 1) % 32
            self._pmt_signature = signature
            self._pmt = self._pmt_for(program_number, program_descriptors)
            self._psi_due = True

    def _program_info(self, catalog: Catalog) -> TsProgramInfo | None:
        """The catalog's `mpegts` section, or None (absent, or malformed: reported)."""
        section = catalog.extra.get(CATALOG_SECTION)
        if section is None:
            return None
        try:
            return TsProgramInfo.from_dict(section)
        except Malformed as exc:
            self._problem(
                ExportProblemKind.BAD_CONFIG,
                None,
                f"the catalog's mpegts section is malformed ({exc}); PIDs are renumbered, "
                "descriptors and opaque tracks are left out",
            )
            return None

    def _pick_pid(self, plan: TrackPlan, used: set[int], wanted: set[int | None]) -> int:
        """The PID of `plan`'s track: its source PID (unless renumbering or taken), else the
        one it had, else the first free one from 0x100 that no track's source PID claims."""
        if not self._renumber and plan.source_pid is not None and plan.source_pid not in used:
            return plan.source_pid
        old = self._tracks.get(plan.name)
        if old is not None and old.writer.pid not in used and old.writer.pid not in wanted:
            return old.writer.pid
        pid = FIRST_ES_PID
        while pid in used or pid in wanted:
            pid += 1
        return pid

    def _pmt_for(self, program_number: int, program_descriptors: bytes) -> bytes:
        """The PMT of the current tracks; when the source's descriptors do not fit one
        section, it is written without them (reported)."""
        pcr_pid = 0x1FFF if self._pcr_track is None else self._pcr_track.writer.pid
        streams = [
            PmtStream(
                stream_type=t.plan.stream_type, pid=t.writer.pid, descriptors=t.plan.descriptors
            )
            for t in self._tracks.values()
        ]
        try:
            return pmt_section(
                program_number=program_number,
                pcr_pid=pcr_pid,
                version=self._pmt_version,
                streams=streams,
                program_descriptors=program_descriptors,
            )
        except ValueError as exc:
            self._problem(
                ExportProblemKind.BAD_CONFIG,
                None,
                f"the PMT with the source's descriptors does not fit one section ({exc}); "
                "it is written without them",
            )
            bare = [PmtStream(stream_type=s.stream_type, pid=s.pid) for s in streams]
            return pmt_section(
                program_number=program_number,
                pcr_pid=pcr_pid,
                version=self._pmt_version,
                streams=bare,
            )

    def _problem(self, kind: ExportProblemKind, track: str | None, message: str) -> None:
        self.stats.problems += 1
        key = (kind, track)
        if key in self._problems.seen or len(self._problems.items) >= _MAX_PROBLEMS:
            return
        self._problems.seen.add(key)
        self._problems.items.append(ExportProblem(kind=kind, track=track, message=message))

    # -- frames ----------------------------------------------------------------------------

    def push(self, track: str, frame: bytes, *, keyframe: bool) -> list[TsChunk]:
        """Mux one legacy frame (varint timestamp in µs + codec payload) of `track`.

        `keyframe` is True for the first frame of a group (a video keyframe; every audio frame
        may say either). Returns the chunks this frame produced, possibly none: frames of
        unknown or skipped tracks, video before the start keyframe, audio older than it and
        malformed frames are dropped (counted in `stats`, malformed ones also reported in
        `problems`).
        """
        return cut_chunks(self.push_frames(track, frame, keyframe=keyframe))

    def push_frames(self, track: str, frame: bytes, *, keyframe: bool) -> list[TsFrame]:
        """`push`, returning the muxed frames uncut: usually one, none when the frame was
        dropped, more when a start keyframe releases held audio."""
        try:
            timestamp_us, payload = decode_frame(frame)
        except Malformed as exc:
            self.stats.frames_in += 1
            self.stats.frames_dropped += 1
            self._problem(
                ExportProblemKind.MALFORMED_FRAME,
                track,
                f"track {track!r}: a frame is not a legacy frame ({exc}); dropped",
            )
            return []
        self.stats.frames_in += 1
        return self._mux(track, timestamp_us, payload, keyframe)

    def _mux(
        self, track: str, timestamp_us: int, payload: BytesLike, keyframe: bool
    ) -> list[TsFrame]:
        stats = self.stats
        state = self._tracks.get(track)
        if state is None:
            stats.frames_dropped += 1
            return []
        plan = state.plan
        is_video = plan.is_video
        if is_video:
            if not state.started and not keyframe:
                stats.frames_dropped += 1
                return []
        elif not self._started and self._has_video:
            held = self._held
            if len(held) == held.maxlen:
                stats.frames_dropped += 1
            held.append((timestamp_us, track, bytes(payload)))
            return []

        pts = (timestamp_us * 9 + 50) // 100
        try:
            if plan.opaque:
                dts = _opaque_dts(plan, pts, payload)
                prefix, body = b"", payload
            else:
                dts = self._video_dts(state, pts) if is_video else pts
                prefix, body = frame_parts(plan, pts, dts, payload, keyframe)
        except Malformed as exc:
            stats.frames_dropped += 1
            self._problem(
                ExportProblemKind.MALFORMED_FRAME, track, f"track {track!r}: {exc}; dropped"
            )
            return []
        tag_us = timestamp_us if dts == pts else timestamp_us - ((pts - dts) * 100) // 9

        out = bytearray()
        packets = 0
        psi = self._psi_due or (is_video and keyframe)
        if self._started:
            if dts > self._clock_90k:
                self._clock_90k = dts
        else:
            self._clock_90k = dts
            psi = True
        clock = self._clock_90k
        psi_slot = clock // (PSI_INTERVAL_MS * 90)
        if psi or psi_slot > self._last_psi_slot:
            packets += self._pat_writer.write_section(out, self._pat)
            packets += self._pmt_writer.write_section(out, self._pmt)
            stats.psi_out += 1
            self._last_psi_slot = psi_slot
            self._psi_due = False
        pcr_track = self._pcr_track
        pcr_slot = clock // (PCR_INTERVAL_MS * 90)
        if pcr_track is not None and pcr_slot > self._last_pcr_slot:
            backfill = PCR_BACKFILL_SLOTS if self._started else 1
            first = max(self._last_pcr_slot + 1, pcr_slot - backfill + 1)
            writer = pcr_track.writer
            lead = self._pcr_lead_90k
            for slot in range(first, pcr_slot + 1):
                pcr_90k = max(0, slot * PCR_INTERVAL_MS * 90 - lead)
                packets += writer.write_pcr(out, pcr_90k * PCR_PER_90K)
            stats.pcr_out += pcr_slot + 1 - first
            self._last_pcr_slot = pcr_slot

        if plan.section:
            packets += state.writer.write_section(out, bytes(body))
        else:
            packets += state.writer.write_pes(
                out, prefix, body, random_access=is_video and keyframe
            )
        state.started = True
        starting = not self._started
        self._started = True
        stats.frames_out += 1
        stats.packets_out += packets
        stats.bytes_out += len(out)

        if tag_us < self._last_tag_us:
            tag_us = self._last_tag_us
        self._last_tag_us = tag_us
        frames = [TsFrame(out, tag_us)]
        if starting and self._held:
            frames += self._release_held(dts)
        return frames

    def _release_held(self, start_dts_90k: int) -> list[TsFrame]:
        """Write the audio held before the start keyframe that decodes at or after it."""
        held = sorted(self._held, key=lambda item: item[0])
        self._held.clear()
        frames: list[TsFrame] = []
        for timestamp_us, track, payload in held:
            if (timestamp_us * 9 + 50) // 100 >= start_dts_90k:
                frames += self._mux(track, timestamp_us, payload, True)
            else:
                self.stats.frames_dropped += 1
        return frames

    def _video_dts(self, state: _Track, pts: int) -> int:
        """Author a DTS: monotonic, at most PTS, `reorder` behind the highest PTS seen.

        DTS = max(previous DTS + 1, highest PTS so far - reserve), never below 0. Frames in
        decode order whose PTS falls more than the reserve below an earlier frame's would need
        a DTS above their PTS; they get DTS = PTS instead and a problem is reported.
        """
        if pts > state.max_pts_90k:
            state.max_pts_90k = pts
        dts = max(state.last_dts_90k + 1, state.max_pts_90k - self._reorder_90k, 0)
        if dts > pts:
            self._problem(
                ExportProblemKind.REORDER_TOO_DEEP,
                state.plan.name,
                f"video track {state.plan.name!r} reorders frames by more than the "
                f"{self._reorder_90k // 90} ms DTS reserve; some DTS values equal PTS and may "
                "not increase",
            )
            dts = pts
        state.last_dts_90k = dts
        return dts


def _opaque_dts(plan: TrackPlan, pts: int, payload: BytesLike) -> int:
    """The decode time (90 kHz, on the exporter's timeline) of an opaque frame whose
    presentation time is `pts`: its PES's DTS when it carries one, else `pts`. `Malformed`
    if the frame is not a whole PES (or section) of the kind its track carries."""
    if plan.section:
        if len(payload) < 3 or 3 + (((payload[1] & 0x0F) << 8) | payload[2]) != len(payload):
            raise MalformedFrame("an opaque section frame is not one whole section")
        return pts
    if len(payload) < 6 or payload[0] != 0 or payload[1] != 0 or payload[2] != 1:
        raise MalformedFrame("an opaque PES frame does not start with a PES start code")
    if not plan.opaque_video:
        return pts
    header = parse_pes_header(memoryview(payload)[:19])
    if header.pts_90k is None or header.dts_90k is None:
        return pts
    return pts - ((header.pts_90k - header.dts_90k) & PTS_MASK)
