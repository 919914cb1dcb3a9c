"""Sans-I/O MPEG-TS exporter: a broadcast's catalog and media frames in, TS chunks out.

The caller owns the `TsExporter` and feeds it: `set_catalog()` with each catalog version, then
`push()` with every media frame (hang legacy frames, per track in decode order, tracks merged
roughly by time). Each call returns the `TsChunk`s it produced, at once (`push_frames()`: the
same output as `TsFrame`s, one per muxed frame, uncut); the exporter holds no output between
calls, so the end of a stream needs no flush. The driver that reads a model broadcast is
`gateway.ts_source.export_batches`.

Output layout (one program):
- PAT and PMT (PMT PID 0x1000) before the first frame, before every video keyframe, whenever
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
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from mux.aac import SAMPLE_RATES
from mux.catalog import AudioConfig, Catalog, VideoConfig
from mux.container import decode_frame
from mux.errors import Malformed
from mux.ts_mux import (
    PAT_PID,
    PCR_PER_90K,
    TS_PACKET_BYTES,
    BytesLike,
    PidWriter,
    PmtStream,
    StreamId,
    StreamType,
    opus_extension_descriptor,
    pat_section,
    pes_header,
    pmt_section,
    registration_descriptor,
)

#: Largest chunk the exporter returns: 7 packets, the SRT live-mode payload.
CHUNK_BYTES = 7 * TS_PACKET_BYTES

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

_H264_AUD = b"\x00\x00\x00\x01\x09\xf0"
_H265_AUD = b"\x00\x00\x00\x01\x46\x01\x50"
_START_CODE = b"\x00\x00\x00\x01"


class TsChunk(NamedTuple):
    """A run of whole TS packets (`data`, a multiple of 188 bytes, at most 1316) to send as one
    SRT message, and the media time it belongs to in microseconds (`media_ts_us`).

    `media_ts_us` is the decode time of the frame that produced the packets (for video the
    authored DTS, for audio the PTS), never lower than the previous chunk's, so a pacer can send
    each chunk at `anchor + (media_ts_us - base)`. Chunks of different frames never share one.
    The chunk holding a video keyframe's first packet (random_access_indicator set) starts
    with PAT and PMT, so a sender that skipped data can resume at it.

    A named tuple rather than a frozen dataclass: the exporter makes one per 1316 bytes, and a
    frozen dataclass costs three times as much to build (tests/bench/bench_export.py).
    """

    data: bytes
    media_ts_us: int


class TsFrame(NamedTuple):
    """The TS packets one frame produced (`data`, whole packets: PAT/PMT and PCR packets due
    before it, then its PES), and the media time they belong to in microseconds (`media_ts_us`,
    as in `TsChunk`). `data` is handed over: the exporter never touches it again.
    `cut_chunks` turns frames into the `TsChunk`s that `TsExporter.push` returns.
    """

    data: bytearray
    media_ts_us: int


class ExportProblemKind(StrEnum):
    """What went wrong with the input (never with the caller's use of the API)."""

    UNSUPPORTED_CODEC = "unsupported_codec"
    UNSUPPORTED_CONTAINER = "unsupported_container"
    BAD_CONFIG = "bad_config"
    MALFORMED_FRAME = "malformed_frame"
    REORDER_TOO_DEEP = "reorder_too_deep"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportProblem:
    """One problem found in the broadcast being exported; `track` is None for the catalog.

    Each (kind, track) pair is reported once; `ExportStats` counts every occurrence.
    """

    kind: ExportProblemKind
    track: str | None
    message: str


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


class _Codec(StrEnum):
    H264 = "h264"
    H265 = "h265"
    AAC = "aac"
    MPEG_AUDIO = "mpeg_audio"
    AC3 = "ac3"
    EAC3 = "eac3"
    OPUS = "opus"


@dataclass(slots=True, kw_only=True)
class _TrackPlan:
    """How one catalog rendition is written: what the PMT says and how frames are framed."""

    name: str
    codec: _Codec
    stream_type: int
    stream_id: int
    descriptors: bytes = b""
    #: Video with `description`: NAL length size and the parameter sets in Annex-B form.
    nal_length_size: int = 0
    parameter_sets: bytes = b""
    #: AAC: the first 3 bytes of every ADTS header plus the channel bits of byte 3.
    adts_profile_sfi_ch: tuple[int, int, int] = (0, 0, 0)
    #: What decides whether a new catalog is a change (codec string, description, ...).
    signature: tuple[object, ...] = ()

    @property
    def is_video(self) -> bool:
        return self.codec in (_Codec.H264, _Codec.H265)


@dataclass(slots=True, kw_only=True)
class _Track:
    plan: _TrackPlan
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
    """

    def __init__(
        self, *, reorder_ms: int | None = None, pcr_delay_ms: int = DEFAULT_PCR_DELAY_MS
    ) -> None:
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
        skipped with a problem. A track keeps its PID (and continuity counter) across versions.
        If what the PMT describes changes, the PMT version is bumped and PAT/PMT go out before
        the next frame.
        """
        plans: list[_TrackPlan] = []
        for name in sorted(catalog.video):
            plan = self._plan_video(name, catalog.video[name])
            if plan is not None:
                plans.append(plan)
        for name in sorted(catalog.audio):
            plan = self._plan_audio(name, catalog.audio[name])
            if plan is not None:
                plans.append(plan)

        tracks: dict[str, _Track] = {}
        for plan in plans:
            old = self._tracks.get(plan.name)
            if old is not None and old.plan.stream_type == plan.stream_type:
                old.plan = plan
                tracks[plan.name] = old
                continue
            pid = self._pids.get(plan.name)
            if pid is None:
                pid = FIRST_ES_PID + len(self._pids)
                self._pids[plan.name] = pid
            writer = old.writer if old is not None else PidWriter(pid)
            tracks[plan.name] = _Track(plan=plan, writer=writer)
        self._tracks = tracks
        self._has_video = any(t.plan.is_video for t in tracks.values())
        self._pcr_track = next(
            (t for t in tracks.values() if t.plan.is_video), next(iter(tracks.values()), None)
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

        signature = (
            None if self._pcr_track is None else self._pcr_track.writer.pid,
            tuple((t.writer.pid, t.plan.signature) for t in tracks.values()),
        )
        if signature != self._pmt_signature:
            if self._pmt_signature is not None:
                self._pmt_version = (self._pmt_version + 1) % 32
            self._pmt_signature = signature
            self._pmt = pmt_section(
                program_number=PROGRAM_NUMBER,
                pcr_pid=0x1FFF if self._pcr_track is None else self._pcr_track.writer.pid,
                version=self._pmt_version,
                streams=[
                    PmtStream(
                        stream_type=t.plan.stream_type,
                        pid=t.writer.pid,
                        descriptors=t.plan.descriptors,
                    )
                    for t in tracks.values()
                ],
            )
            self._psi_due = True

    def _plan_video(self, name: str, cfg: VideoConfig) -> _TrackPlan | None:
        if cfg.container.kind != "legacy":
            self._problem(
                ExportProblemKind.UNSUPPORTED_CONTAINER,
                name,
                f"video track {name!r} uses container {cfg.container.kind!r}; only legacy "
                "frames can be muxed into MPEG-TS, so the track is skipped",
            )
            return None
        family = cfg.codec.split(".", 1)[0]
        if family in ("avc1", "avc3"):
            codec, stream_type, descriptors = _Codec.H264, StreamType.H264, b""
        elif family in ("hev1", "hvc1"):
            codec, stream_type = _Codec.H265, StreamType.H265
            descriptors = registration_descriptor(b"HEVC")
        else:
            self._problem(
                ExportProblemKind.UNSUPPORTED_CODEC,
                name,
                f"video track {name!r} has codec {cfg.codec!r}; MPEG-TS export supports H.264 "
                "and H.265, so the track is skipped",
            )
            return None
        plan = _TrackPlan(
            name=name,
            codec=codec,
            stream_type=stream_type,
            stream_id=StreamId.VIDEO_0,
            descriptors=descriptors,
            signature=(cfg.codec, cfg.description),
        )
        if cfg.description is not None:
            try:
                if codec is _Codec.H264:
                    plan.nal_length_size, plan.parameter_sets = parse_avcc(cfg.description)
                else:
                    plan.nal_length_size, plan.parameter_sets = parse_hvcc(cfg.description)
            except Malformed as exc:
                self._problem(
                    ExportProblemKind.BAD_CONFIG,
                    name,
                    f"video track {name!r}: its description does not parse ({exc}); the "
                    "track is skipped",
                )
                return None
        return plan

    def _plan_audio(self, name: str, cfg: AudioConfig) -> _TrackPlan | None:
        if cfg.container.kind != "legacy":
            self._problem(
                ExportProblemKind.UNSUPPORTED_CONTAINER,
                name,
                f"audio track {name!r} uses container {cfg.container.kind!r}; only legacy "
                "frames can be muxed into MPEG-TS, so the track is skipped",
            )
            return None
        codec_str = cfg.codec.lower()
        signature = (cfg.codec, cfg.description, cfg.sample_rate, cfg.channels)
        if codec_str in ("mp2", "mp3", "mp4a.6b", "mp4a.69", "mp4a.40.34"):
            stream_type = (
                StreamType.MPEG2_AUDIO if codec_str == "mp4a.69" else StreamType.MPEG1_AUDIO
            )
            return _TrackPlan(
                name=name,
                codec=_Codec.MPEG_AUDIO,
                stream_type=stream_type,
                stream_id=StreamId.AUDIO_0,
                signature=signature,
            )
        if codec_str.startswith("mp4a.40."):
            try:
                if cfg.description is not None:
                    adts = adts_fields_from_asc(cfg.description)
                else:
                    adts = adts_fields_from_params(
                        int(codec_str.rsplit(".", 1)[1]), cfg.sample_rate, cfg.channels
                    )
            except (Malformed, ValueError) as exc:
                self._problem(
                    ExportProblemKind.BAD_CONFIG,
                    name,
                    f"audio track {name!r} ({cfg.codec}): no ADTS header can describe it "
                    f"({exc}); the track is skipped",
                )
                return None
            return _TrackPlan(
                name=name,
                codec=_Codec.AAC,
                stream_type=StreamType.ADTS_AAC,
                stream_id=StreamId.AUDIO_0,
                adts_profile_sfi_ch=adts,
                signature=signature,
            )
        if codec_str in ("ac-3", "ec-3"):
            ac3 = codec_str == "ac-3"
            return _TrackPlan(
                name=name,
                codec=_Codec.AC3 if ac3 else _Codec.EAC3,
                stream_type=StreamType.AC3 if ac3 else StreamType.EAC3,
                stream_id=StreamId.PRIVATE_STREAM_1,
                descriptors=registration_descriptor(b"AC-3" if ac3 else b"EAC3"),
                signature=signature,
            )
        if codec_str == "opus":
            if not 1 <= cfg.channels <= 8:
                self._problem(
                    ExportProblemKind.BAD_CONFIG,
                    name,
                    f"audio track {name!r}: Opus with {cfg.channels} channels has no MPEG-TS "
                    "channel configuration; the track is skipped",
                )
                return None
            return _TrackPlan(
                name=name,
                codec=_Codec.OPUS,
                stream_type=StreamType.PES_PRIVATE_DATA,
                stream_id=StreamId.PRIVATE_STREAM_1,
                descriptors=registration_descriptor(b"Opus")
                + opus_extension_descriptor(cfg.channels),
                signature=signature,
            )
        self._problem(
            ExportProblemKind.UNSUPPORTED_CODEC,
            name,
            f"audio track {name!r} has codec {cfg.codec!r}; MPEG-TS export supports AAC, "
            "MP2/MP3, AC-3, E-AC-3 and Opus, so the track is skipped",
        )
        return None

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

    def push_media(
        self, track: str, timestamp_us: int, payload: BytesLike, *, keyframe: bool
    ) -> list[TsChunk]:
        """Mux one frame given as its presentation time (µs) and codec payload; see `push`.

        `payload` is read during the call (audio arriving before the first video keyframe is
        copied and held until it, then written if it is not older than the keyframe's DTS).
        """
        self.stats.frames_in += 1
        return cut_chunks(self._mux(track, timestamp_us, payload, keyframe))

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
        if is_video:
            dts = self._video_dts(state, pts)
            tag_us = timestamp_us - ((pts - dts) * 100) // 9
        else:
            dts = pts
            tag_us = timestamp_us

        try:
            prefix, body = self._frame_parts(state, pts, dts, payload, keyframe)
        except Malformed as exc:
            stats.frames_dropped += 1
            self._problem(
                ExportProblemKind.MALFORMED_FRAME, track, f"track {track!r}: {exc}; dropped"
            )
            return []

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

        packets += state.writer.write_pes(out, prefix, body, random_access=is_video and keyframe)
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

    def _frame_parts(
        self, state: _Track, pts: int, dts: int, payload: BytesLike, keyframe: bool
    ) -> tuple[bytes, BytesLike]:
        """Return (PES header + small codec header, body) for one frame."""
        plan = state.plan
        codec = plan.codec
        if codec is _Codec.H264 or codec is _Codec.H265:
            h264 = codec is _Codec.H264
            body: BytesLike = payload
            if plan.nal_length_size:
                body = length_prefixed_to_annexb(payload, plan.nal_length_size)
                if keyframe:
                    body = plan.parameter_sets + body
            aud = b""
            if not _starts_with_aud(body, h264=h264):
                aud = _H264_AUD if h264 else _H265_AUD
            header = pes_header(plan.stream_id, pts_90k=pts, dts_90k=dts, payload_bytes=None)
            return header + aud, body
        size = len(payload)
        if codec is _Codec.AAC:
            frame_length = size + 7
            if frame_length > 0x1FFF:
                raise Malformed(f"a {size}-byte AAC frame exceeds ADTS's 8191-byte limit")
            profile, sfi, channels = plan.adts_profile_sfi_ch
            adts = bytes(
                (
                    0xFF,
                    0xF1,
                    (profile << 6) | (sfi << 2) | (channels >> 2),
                    ((channels & 3) << 6) | (frame_length >> 11),
                    (frame_length >> 3) & 0xFF,
                    ((frame_length & 7) << 5) | 0x1F,
                    0xFC,
                )
            )
            return pes_header(plan.stream_id, pts_90k=pts, payload_bytes=7 + size) + adts, payload
        if codec is _Codec.OPUS:
            control = bytearray(b"\x7f\xe0")
            remaining = size
            while remaining >= 255:
                control.append(255)
                remaining -= 255
            control.append(remaining)
            header = pes_header(plan.stream_id, pts_90k=pts, payload_bytes=len(control) + size)
            return header + control, payload
        return pes_header(plan.stream_id, pts_90k=pts, payload_bytes=size), payload


_CHUNK_STRUCT = struct.Struct(f"{CHUNK_BYTES}s")


def cut_chunks(frames: list[TsFrame]) -> list[TsChunk]:
    """Cut each frame into chunks of 1316 bytes from its start (its last chunk may be shorter),
    stamped with its `media_ts_us`.

    A hot loop (one object per 1316 bytes): `tuple.__new__` skips NamedTuple's Python-level
    constructor.
    """
    new = tuple.__new__
    return [new(TsChunk, (data, ts)) for out, ts in frames for data in cut_payloads(out)]


def cut_payloads(data: BytesLike, start: int = 0) -> list[bytes]:
    """`data[start:]` (whole TS packets) as SRT payloads: 1316 bytes each, the last shorter.

    `Struct.iter_unpack` slices in C, one copy per payload.
    """
    view = memoryview(data)[start:]
    whole = len(view) // CHUNK_BYTES * CHUNK_BYTES
    payloads = [payload for (payload,) in _CHUNK_STRUCT.iter_unpack(view[:whole])]
    if whole < len(view):
        payloads.append(view[whole:].tobytes())
    return payloads


def _starts_with_aud(data: BytesLike, *, h264: bool) -> bool:
    if len(data) < 5:
        return False
    if data[0] != 0 or data[1] != 0:
        return False
    if data[2] == 1:
        nal = data[3]
    elif data[2] == 0 and data[3] == 1:
        nal = data[4]
    else:
        return False
    return (nal & 0x1F) == 9 if h264 else ((nal >> 1) & 0x3F) == 35


def length_prefixed_to_annexb(data: BytesLike, length_size: int) -> bytes:
    """Rewrite length-prefixed NAL units (avcC/hvcC sample format) with 4-byte start codes.

    Raises `Malformed` if a length runs past the end of `data`.
    """
    view = memoryview(data).cast("B")
    parts: list[BytesLike] = []
    offset = 0
    end = len(view)
    while offset < end:
        if offset + length_size > end:
            raise Malformed("NAL length field truncated", offset=offset)
        size = int.from_bytes(view[offset : offset + length_size], "big")
        offset += length_size
        if offset + size > end:
            raise Malformed(f"NAL of {size} bytes runs past the frame", offset=offset)
        parts.append(_START_CODE)
        parts.append(view[offset : offset + size])
        offset += size
    return b"".join(parts)


def parse_avcc(description: bytes) -> tuple[int, bytes]:
    """Return (NAL length size, SPS and PPS as Annex-B) from an avcC record; `Malformed` if bad."""
    try:
        if len(description) < 7 or description[0] != 1:
            raise Malformed("avcC: not a version 1 record", offset=0)
        length_size = (description[4] & 3) + 1
        parts: list[bytes] = []
        offset = 5
        for count_mask in (0x1F, 0xFF):
            count = description[offset] & count_mask
            offset += 1
            offset = _read_nal_array(description, offset, count, parts, "avcC")
    except IndexError as exc:
        raise Malformed("avcC: truncated", offset=len(description)) from exc
    if length_size == 3:
        raise Malformed("avcC: 3-byte NAL lengths are not allowed", offset=4)
    return length_size, b"".join(parts)


def _read_nal_array(
    description: bytes, offset: int, count: int, parts: list[bytes], record: str
) -> int:
    """Append `count` 16-bit-length-prefixed NAL units at `offset` to `parts` as Annex-B;
    return the offset after them. `Malformed` (naming `record`) if one is truncated."""
    for _ in range(count):
        size = int.from_bytes(description[offset : offset + 2], "big")
        offset += 2
        nal = description[offset : offset + size]
        if len(nal) != size:
            raise Malformed(f"{record}: parameter set truncated", offset=offset)
        parts.append(_START_CODE + nal)
        offset += size
    return offset


def parse_hvcc(description: bytes) -> tuple[int, bytes]:
    """Return (NAL length size, VPS/SPS/PPS as Annex-B) from an hvcC record; `Malformed` if bad."""
    try:
        if len(description) < 23 or description[0] != 1:
            raise Malformed("hvcC: not a version 1 record", offset=0)
        length_size = (description[21] & 3) + 1
        parts: list[bytes] = []
        offset = 23
        for _ in range(description[22]):
            offset += 1  # array_completeness, reserved, NAL_unit_type
            count = int.from_bytes(description[offset : offset + 2], "big")
            offset += 2
            offset = _read_nal_array(description, offset, count, parts, "hvcC")
    except IndexError as exc:
        raise Malformed("hvcC: truncated", offset=len(description)) from exc
    if length_size == 3:
        raise Malformed("hvcC: 3-byte NAL lengths are not allowed", offset=21)
    return length_size, b"".join(parts)


class _Bits:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self._pos >> 3
            if byte >= len(self._data):
                raise Malformed("AudioSpecificConfig truncated", offset=byte)
            value = (value << 1) | ((self._data[byte] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value


def _sampling_index(bits: _Bits) -> int:
    index = bits.read(4)
    if index == 15:
        rate = bits.read(24)
        if rate not in SAMPLE_RATES:
            raise Malformed(f"sample rate {rate} Hz has no ADTS sampling index")
        index = SAMPLE_RATES.index(rate)
    return index


def _object_type(bits: _Bits) -> int:
    aot = bits.read(5)
    return 32 + bits.read(6) if aot == 31 else aot


def adts_fields_from_asc(asc: bytes) -> tuple[int, int, int]:
    """Return (ADTS profile, sampling index, channel config) for an AudioSpecificConfig.

    HE-AAC (object type 5 or 29) is written as its AAC-LC core with the core sample rate
    (implicit SBR signalling, as ADTS streams carry it). Raises `Malformed` when ADTS cannot
    describe the stream (object types other than AAC Main/LC/SSR/LTP, or a bad config).
    """
    bits = _Bits(asc)
    aot = _object_type(bits)
    sfi = _sampling_index(bits)
    channels = bits.read(4)
    if aot in (5, 29):
        _sampling_index(bits)
        aot = _object_type(bits)
    if not 1 <= aot <= 4:
        raise Malformed(f"audio object type {aot} cannot be carried in ADTS")
    if sfi > 12:
        raise Malformed(f"sampling frequency index {sfi} is reserved")
    return aot - 1, sfi, channels


def adts_fields_from_params(aot: int, sample_rate: int, channels: int) -> tuple[int, int, int]:
    """Return ADTS fields from a codec string's object type, a sample rate and channel count.

    For HE-AAC (5, 29) the catalog's rate is the output rate, twice the AAC-LC core's.
    """
    if aot in (5, 29):
        aot, sample_rate = 2, sample_rate // 2
    if not 1 <= aot <= 4:
        raise ValueError(f"audio object type {aot} cannot be carried in ADTS")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample rate {sample_rate} Hz has no ADTS sampling index")
    if not 1 <= channels <= 8:
        raise ValueError(f"{channels} channels have no AAC channel configuration")
    return aot - 1, SAMPLE_RATES.index(sample_rate), 7 if channels == 8 else channels
