"""Export planning: how each catalog rendition becomes an elementary stream of the TS program.

`plan_track` reads one `VideoConfig` or `AudioConfig` and returns a `TrackPlan`: the codec,
the PMT's stream_type, stream_id and descriptors, and what framing its frames need (avcC/hvcC
parameter sets, ADTS fields), or raises `Unexportable` saying why the track is skipped. Given
the track's source stream (the catalog's `mpegts` section, `mux.opaque.StreamInfo`), the plan
keeps its PID, stream_type and descriptors; `plan_opaque` plans a track carried undecoded.
Stateless; `mux.export.TsExporter` plans each catalog version and keeps PIDs across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mux.aac import AdtsFields, adts_fields_from_asc, adts_fields_from_params
from mux.catalog import AudioConfig, VideoConfig
from mux.errors import Malformed, MuxError
from mux.h264 import parse_avcc
from mux.h265 import parse_hvcc
from mux.opaque import UNITS_FRAMES, UNITS_SECTION, StreamInfo
from mux.problems import ExportProblemKind
from mux.psi import StreamType
from mux.ts_mux import StreamId, opus_extension_descriptor, registration_descriptor


class Codec(StrEnum):
    """The codecs the exporter frames."""

    H264 = "h264"
    H265 = "h265"
    AAC = "aac"
    MPEG_AUDIO = "mpeg_audio"
    AC3 = "ac3"
    EAC3 = "eac3"
    OPUS = "opus"
    #: Carried undecoded: each frame is one whole PES / one whole section of the stream.
    OPAQUE_PES = "opaque_pes"
    OPAQUE_SECTION = "opaque_section"


@dataclass(slots=True, kw_only=True)
class TrackPlan:
    """How one catalog rendition is written: what the PMT says and how frames are framed."""

    name: str
    codec: Codec
    stream_type: int
    stream_id: int
    descriptors: bytes = b""
    #: Video with `description`: NAL length size and the parameter sets in Annex-B form.
    nal_length_size: int = 0
    parameter_sets: bytes = b""
    #: AAC: the fixed ADTS header fields (profile, sampling index, channel config).
    adts_fields: AdtsFields = (0, 0, 0)
    #: What decides whether a new catalog is a change (codec string, description, ...).
    signature: tuple[object, ...] = ()
    #: The PID of the source stream (the catalog's `mpegts` section), if known.
    source_pid: int | None = None
    #: Carried undecoded (`Codec.OPAQUE_PES` / `OPAQUE_SECTION`); `section` for the latter.
    opaque: bool = False
    section: bool = False
    #: Opaque video (MPEG-1/2): its groups start at keyframes, it leads like H.264 does.
    opaque_video: bool = False

    @property
    def is_video(self) -> bool:
        """True for H.264, H.265 and opaque video."""
        return self.codec in (Codec.H264, Codec.H265) or self.opaque_video


class Unexportable(MuxError):
    """A catalog rendition that cannot be exported: `kind` and the message say why."""

    def __init__(self, kind: ExportProblemKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def plan_track(
    name: str, cfg: VideoConfig | AudioConfig, source: StreamInfo | None = None
) -> TrackPlan:
    """Plan rendition `name` of a catalog; `Unexportable` if it is skipped. With `source`
    (decoded media of a TS stream), the plan takes its PID, stream_type and descriptors."""
    plan = _plan_video(name, cfg) if isinstance(cfg, VideoConfig) else _plan_audio(name, cfg)
    if source is not None and source.units == UNITS_FRAMES:
        plan.source_pid = source.pid
        plan.stream_type = source.stream_type
        plan.descriptors = source.descriptors
        plan.signature += (source.stream_type, source.descriptors)
    return plan


def plan_opaque(name: str, source: StreamInfo) -> TrackPlan:
    """Plan track `name` carried undecoded (`source.units` is `pes` or `section`): written
    back as the same stream, each frame's PES or section as it came."""
    section = source.units == UNITS_SECTION
    return TrackPlan(
        name=name,
        codec=Codec.OPAQUE_SECTION if section else Codec.OPAQUE_PES,
        stream_type=source.stream_type,
        stream_id=0,
        descriptors=source.descriptors,
        signature=(source.units, source.stream_type, source.descriptors),
        source_pid=source.pid,
        opaque=True,
        section=section,
        opaque_video=source.video and not section,
    )


def _plan_video(name: str, cfg: VideoConfig) -> TrackPlan:
    if cfg.container.kind != "legacy":
        raise Unexportable(
            ExportProblemKind.UNSUPPORTED_CONTAINER,
            f"video track {name!r} uses container {cfg.container.kind!r}; only legacy "
            "frames can be muxed into MPEG-TS, so the track is skipped",
        )
    family = cfg.codec.split(".", 1)[0]
    if family in ("avc1", "avc3"):
        codec, stream_type, descriptors = Codec.H264, StreamType.H264, b""
    elif family in ("hev1", "hvc1"):
        codec, stream_type = Codec.H265, StreamType.H265
        descriptors = registration_descriptor(b"HEVC")
    else:
        raise Unexportable(
            ExportProblemKind.UNSUPPORTED_CODEC,
            f"video track {name!r} has codec {cfg.codec!r}; MPEG-TS export supports H.264 "
            "and H.265, so the track is skipped",
        )
    plan = TrackPlan(
        name=name,
        codec=codec,
        stream_type=stream_type,
        stream_id=StreamId.VIDEO_0,
        descriptors=descriptors,
        signature=(cfg.codec, cfg.description),
    )
    if cfg.description is not None:
        try:
            if codec is Codec.H264:
                plan.nal_length_size, plan.parameter_sets = parse_avcc(cfg.description)
            else:
                plan.nal_length_size, plan.parameter_sets = parse_hvcc(cfg.description)
        except Malformed as exc:
            raise Unexportable(
                ExportProblemKind.BAD_CONFIG,
                f"video track {name!r}: its description does not parse ({exc}); the "
                "track is skipped",
            ) from exc
    return plan


def _plan_audio(name: str, cfg: AudioConfig) -> TrackPlan:
    if cfg.container.kind != "legacy":
        raise Unexportable(
            ExportProblemKind.UNSUPPORTED_CONTAINER,
            f"audio track {name!r} uses container {cfg.container.kind!r}; only legacy "
            "frames can be muxed into MPEG-TS, so the track is skipped",
        )
    codec_str = cfg.codec.lower()
    signature = (cfg.codec, cfg.description, cfg.sample_rate, cfg.channels)
    if codec_str in ("mp2", "mp3", "mp4a.6b", "mp4a.69", "mp4a.40.34"):
        stream_type = StreamType.MPEG2_AUDIO if codec_str == "mp4a.69" else StreamType.MPEG1_AUDIO
        return TrackPlan(
            name=name,
            codec=Codec.MPEG_AUDIO,
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
            raise Unexportable(
                ExportProblemKind.BAD_CONFIG,
                f"audio track {name!r} ({cfg.codec}): no ADTS header can describe it "
                f"({exc}); the track is skipped",
            ) from exc
        return TrackPlan(
            name=name,
            codec=Codec.AAC,
            stream_type=StreamType.AAC_ADTS,
            stream_id=StreamId.AUDIO_0,
            adts_fields=adts,
            signature=signature,
        )
    if codec_str in ("ac-3", "ec-3"):
        ac3 = codec_str == "ac-3"
        return TrackPlan(
            name=name,
            codec=Codec.AC3 if ac3 else Codec.EAC3,
            stream_type=StreamType.AC3 if ac3 else StreamType.EAC3,
            stream_id=StreamId.PRIVATE_STREAM_1,
            descriptors=registration_descriptor(b"AC-3" if ac3 else b"EAC3"),
            signature=signature,
        )
    if codec_str == "opus":
        if not 1 <= cfg.channels <= 8:
            raise Unexportable(
                ExportProblemKind.BAD_CONFIG,
                f"audio track {name!r}: Opus with {cfg.channels} channels has no MPEG-TS "
                "channel configuration; the track is skipped",
            )
        return TrackPlan(
            name=name,
            codec=Codec.OPUS,
            stream_type=StreamType.PRIVATE_PES,
            stream_id=StreamId.PRIVATE_STREAM_1,
            descriptors=registration_descriptor(b"Opus") + opus_extension_descriptor(cfg.channels),
            signature=signature,
        )
    raise Unexportable(
        ExportProblemKind.UNSUPPORTED_CODEC,
        f"audio track {name!r} has codec {cfg.codec!r}; MPEG-TS export supports AAC, "
        "MP2/MP3, AC-3, E-AC-3 and Opus, so the track is skipped",
    )
