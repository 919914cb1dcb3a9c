"""The model side of the importer: whole PES packets in, frames, groups and catalog versions out.

`ImportTracks` owns the writing side of a broadcast's tracks for `mux.ts_import.TsImporter`:
one track per elementary stream (`open_stream` when a PMT lists it, `close_stream` when it
goes), whose PES (`pes`) it frames with the stream's codec (`mux.video.VideoFramer`,
`mux.audio.AudioFramer`) into hang legacy frames: one group per video keyframe, one per audio
frame. A stream it does not decode is an opaque track: each PES (header included) or each
section (`section`) is one frame after the legacy timestamp, one group per frame (opaque MPEG
video: one per GOP). The catalog track gets a new version whenever the stream set, the PMT or a
config changes, the first one once every stream of the first PMT has its config (see
`maybe_publish_catalog`); its `mpegts` section (`mux.opaque.TsProgramInfo`) describes the
program and every track's source stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
from mux.opaque import (
    CATALOG_SECTION,
    UNITS_FRAMES,
    UNITS_PES,
    UNITS_SECTION,
    StreamInfo,
    TsProgramInfo,
    descriptors_bytes,
    mpeg_video_keyframe,
)
from mux.pes import PesHeader, PtsUnwrapper, to_us
from mux.pes_assembly import PesStream
from mux.problems import (
    AudioResync,
    BadCodecData,
    BadPes,
    BadSection,
    GroupTooLarge,
    ImportStats,
    ProblemLog,
    StreamWithoutConfig,
)
from mux.psi import EsInfo, Pmt, StreamKind, language
from mux.video import VideoFramer

_TRACK_SUFFIX = {
    "h264": H264.suffix,
    "h265": H265.suffix,
    "aac": ".aac",
    "mpa": ".mp2",
    "ac3": ".ac3",
    "eac3": ".eac3",
    "opus": ".opus",
}
#: Delivery priority of opaque tracks other than video: below audio, above video.
DATA_PRIORITY = 70


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
    """Codec and track state of one elementary stream (one PID of the PMT)."""

    pid: int
    kind: StreamKind
    track: TrackProducer
    counts: TrackCounts
    info: StreamInfo
    #: `kind.opaque`, read per PES.
    opaque: bool = False
    video: VideoFramer | None = None
    audio: AudioFramer | None = None
    group: GroupProducer | None = None
    last_ts_us: int = 0
    reported_skip: int = 0


def _has_config(st: _Stream) -> bool:
    if st.kind.opaque:
        return True
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


def is_video(kind: StreamKind) -> bool:
    """Whether a stream kind is video (H.264, H.265, opaque MPEG video)."""
    return kind.codec in ("h264", "h265") or kind.video


class ImportTracks:
    """Writes the PES of each stream into `broadcast`; see the module docstring.

    The catalog track is created at once. Counters go to `stats`, problems to `log`;
    `tracks` (what was written, per media track name) and `catalog` (the catalog last
    published, None before) are what `TsImporter` shows of them. Any write may raise
    `model.Closed` once the broadcast was closed by someone else.
    """

    def __init__(
        self,
        broadcast: BroadcastProducer,
        stats: ImportStats,
        log: ProblemLog,
        *,
        catalog_wait_s: float,
    ) -> None:
        self._broadcast = broadcast
        self._catalog_track = broadcast.create_track(
            TrackInfo(CATALOG_TRACK, priority=CATALOG_PRIORITY)
        )
        self._stats = stats
        self._log = log
        self._streams: dict[int, _Stream] = {}
        self._clock = PtsUnwrapper()
        self._initial_pids: set[int] | None = None
        self._catalog_wait_us = int(catalog_wait_s * 1_000_000)
        self._first_ts_us: int | None = None
        self._latest_ts_us = 0
        self._catalog_json: bytes | None = None
        self.catalog_dirty = False
        """Set when the stream set or a config changed and the catalog is not yet published."""
        self.tracks: dict[str, TrackCounts] = {}
        self.catalog: Catalog | None = None
        self._program: tuple[Pmt, int] | None = None

    def open_stream(self, pid: int, kind: StreamKind, es: EsInfo | None = None) -> None:
        """Create the track of a new stream `pid` of `kind` (`es`: its PMT entry, described
        in the catalog's `mpegts` section); marks the catalog."""
        video = is_video(kind)
        if kind.opaque:
            suffix = "." + kind.label
            priority = VIDEO_PRIORITY if video else DATA_PRIORITY
            units = UNITS_SECTION if kind.section else UNITS_PES
        else:
            suffix = _TRACK_SUFFIX[kind.codec]
            priority = VIDEO_PRIORITY if video else AUDIO_PRIORITY
            units = UNITS_FRAMES
        track = self._broadcast.unique_track(suffix, priority)
        counts = TrackCounts(pid=pid)
        self.tracks[track.name] = counts
        info = StreamInfo(
            pid=pid,
            stream_type=0 if es is None else es.stream_type,
            descriptors=b"" if es is None else descriptors_bytes(es.descriptors),
            units=units,
            kind=kind.label or kind.codec,
            language=None if es is None else language(es.descriptors),
            video=kind.opaque and video,
        )
        st = _Stream(pid=pid, kind=kind, track=track, counts=counts, info=info, opaque=kind.opaque)
        if kind.opaque:
            pass  # no framer: each PES or section is a frame as it came
        elif video:
            st.video = VideoFramer(H264() if kind.codec == "h264" else H265())
        else:
            st.audio = AudioFramer(_audio_format(kind))
        self._streams[pid] = st
        self.catalog_dirty = True

    def describe(self, pid: int, es: EsInfo) -> None:
        """The PMT entry of open stream `pid` is now `es` (its descriptors may have changed);
        marks the catalog when its description changed."""
        st = self._streams[pid]
        info = StreamInfo(
            pid=pid,
            stream_type=es.stream_type,
            descriptors=descriptors_bytes(es.descriptors),
            units=st.info.units,
            kind=st.info.kind,
            language=language(es.descriptors),
            video=st.info.video,
        )
        if info != st.info:
            st.info = info
            self.catalog_dirty = True

    def kind(self, pid: int) -> StreamKind:
        """The kind of the open stream `pid` (KeyError if none)."""
        return self._streams[pid].kind

    def close_stream(self, pid: int) -> None:
        """Finish the track of stream `pid` (its last PES already delivered); marks the
        catalog."""
        st = self._streams.pop(pid)
        if st.group is not None:
            st.group.finish()
            st.group = None
        st.track.finish()
        self.catalog_dirty = True

    def program_set(self, pids: set[int], pmt: Pmt | None = None, pmt_pid: int = 0) -> None:
        """A PMT (`pmt`, on `pmt_pid`) was applied; the first one's `pids` are the streams the
        first catalog waits for. Publishes the catalog if it can."""
        if pmt is not None:
            self._program = (pmt, pmt_pid)
        if self._initial_pids is None:
            self._initial_pids = pids
        self.catalog_dirty = True
        self.maybe_publish_catalog()

    def lost(self, pes: PesStream) -> None:
        """Data of audio stream `pes.pid` was lost: its framer forgets a cut frame."""
        audio = self._streams[pes.pid].audio
        if audio is not None:
            audio.reset()

    def pes(self, pes: PesStream, header: PesHeader, pieces: list[Any], end: int | None) -> None:
        """Frame one PES of stream `pes.pid` (see `mux.pes_assembly.Deliver`)."""
        st = self._streams[pes.pid]
        ts_us = st.last_ts_us
        if header.pts_90k is None and st.opaque:
            ts_us = self._latest_ts_us  # e.g. asynchronous KLV: stamped with the media time
        if header.pts_90k is not None:
            ts_us = to_us(self._clock.unwrap(header.pts_90k))
            st.last_ts_us = ts_us
            if self._first_ts_us is None:
                self._first_ts_us = ts_us
            if ts_us > self._latest_ts_us:
                self._latest_ts_us = ts_us
        if st.opaque:
            self._opaque_pes(st, header, pieces, end, ts_us)
        elif st.video is not None:
            self._video_pes(st, header, pieces, end, ts_us)
        else:
            pts_us = ts_us if header.pts_90k is not None else None
            self._audio_pes(st, header, pieces, end, pts_us)

    def section(self, pid: int, section: bytes, row_problem: str | None = None) -> None:
        """Write one section of opaque section stream `pid` as a frame (its own group),
        stamped with the latest media time; `row_problem`, when given, is a reason a section
        of the stream was dropped (reported, nothing written)."""
        st = self._streams[pid]
        if row_problem is not None:
            self._log.add(BadSection(pid=pid, table=st.kind.name, reason=row_problem))
            return
        frame = encode_varint(self._latest_ts_us) + section
        st.track.write_frame(frame)
        counts = st.counts
        counts.frames += 1
        counts.groups += 1
        counts.bytes += len(frame)
        self._stats.frames += 1
        self._stats.groups += 1

    def finish(self) -> None:
        """Finish every track (and its open group) and the catalog track."""
        for st in self._streams.values():
            if st.group is not None:
                st.group.finish()
            st.track.finish()
        self._catalog_track.finish()

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
        stats = self._stats
        try:
            unit = framer.push(frame, len(prefix))
        except Malformed as exc:
            stats.dropped_pes += 1
            self._log.add(BadCodecData(pid=st.pid, codec=framer.codec.name, reason=str(exc)))
            return
        if framer.config_changed:
            framer.config_changed = False
            self.catalog_dirty = True
        if self.catalog_dirty:
            self.maybe_publish_catalog()
        self._write_in_gop(st, unit.frame, keyframe=unit.keyframe)

    def _write_in_gop(self, st: _Stream, frame: bytes, *, keyframe: bool) -> None:
        """Write one video frame into its stream's current group (a keyframe opens a new
        one); frames before the first keyframe, or after their group outgrew the cache, are
        counted and dropped until the next keyframe."""
        counts = st.counts
        stats = self._stats
        if keyframe:
            if st.group is not None:
                st.group.finish()
            st.group = st.track.append_group()
            counts.groups += 1
            stats.groups += 1
        elif st.group is None:
            stats.frames_before_keyframe += 1
            return
        try:
            st.group.write_frame(frame)
        except Closed:
            if st.track.is_closed:
                raise
            self._log.add(GroupTooLarge(track=st.track.name))
            st.group = None
            return
        counts.frames += 1
        counts.bytes += len(frame)
        stats.frames += 1

    def _opaque_pes(
        self, st: _Stream, header: PesHeader, pieces: list[Any], end: int | None, ts_us: int
    ) -> None:
        """One PES of an opaque stream, header and all, as one frame: its own group, or for
        MPEG video a group per GOP. A bounded PES cut short is dropped and reported."""
        data = b"".join(pieces)
        if end is not None:
            data = data[:end]
        total = header.total_length
        stats = self._stats
        if total is not None and len(data) < total:
            stats.dropped_pes += 1
            reason = f"PES ends after {len(data)} of its {total} bytes"
            self._log.add(BadPes(pid=st.pid, reason=reason, dropped_bytes=len(data)))
            return
        if self.catalog_dirty:
            self.maybe_publish_catalog()
        frame = encode_varint(ts_us) + data
        if st.kind.video:
            keyframe = mpeg_video_keyframe(memoryview(data)[header.payload_offset :])
            self._write_in_gop(st, frame, keyframe=keyframe)
            return
        st.track.write_frame(frame)
        counts = st.counts
        counts.groups += 1
        stats.groups += 1
        counts.frames += 1
        counts.bytes += len(frame)
        stats.frames += 1

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
            self._log.add(
                AudioResync(
                    pid=st.pid,
                    codec=framer.fmt.name,
                    skipped_bytes=framer.skipped_bytes - st.reported_skip,
                )
            )
            st.reported_skip = framer.skipped_bytes
        if framer.config_changed:
            framer.config_changed = False
            self.catalog_dirty = True
        if self.catalog_dirty:
            self.maybe_publish_catalog()
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
        self._stats.frames += len(frames)
        self._stats.groups += len(frames)
        st.last_ts_us = frames[-1][0]

    def _build_catalog(self) -> Catalog:
        catalog = Catalog()
        described: dict[str, StreamInfo] = {}
        for st in self._streams.values():
            if st.video is not None and st.video.config is not None:
                catalog.video[st.track.name] = st.video.config
            elif st.audio is not None and st.audio.config is not None:
                catalog.audio[st.track.name] = st.audio.config
            elif not st.kind.opaque:
                continue  # not in the catalog (yet): not described either
            described[st.track.name] = st.info
        if self._program is not None:
            pmt, pmt_pid = self._program
            program = TsProgramInfo(
                program_number=pmt.program_number,
                pmt_pid=pmt_pid,
                descriptors=descriptors_bytes(pmt.descriptors),
                tracks=described,
            )
            catalog.extra[CATALOG_SECTION] = program.to_dict()
        return catalog

    def maybe_publish_catalog(self, *, final: bool = False, batch_end: bool = False) -> None:
        """Publish the catalog if it changed. The first time, wait until every stream of the
        first PMT has its config; past `catalog_wait_s` of media (checked only between
        batches, `batch_end`, where every PID has caught up) or at `final`, publish without
        the laggards (each reported)."""
        if not self.catalog_dirty and not (final and self._catalog_json is None):
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
                    self._log.add(
                        StreamWithoutConfig(pid=st.pid, name=st.kind.name, waited_s=waited / 1e6)
                    )
        self.catalog_dirty = False
        catalog = self._build_catalog()
        payload = catalog.to_json()
        if payload == self._catalog_json:
            return
        self._catalog_json = payload
        self.catalog = catalog
        self._catalog_track.write_frame(payload)
        self._stats.catalog_versions += 1
