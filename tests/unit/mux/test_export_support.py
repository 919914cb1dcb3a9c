"""Helpers for the exporter tests: a tiny independent TS reader, PyAV encoders and a decoder.

The reader here shares no code with `mux/` (it re-implements CRC, PSI and PES parsing from
ISO/IEC 13818-1), so a writer bug cannot hide behind a matching reader bug. Media comes from
PyAV's encoders; decoding goes through PyAV (FFmpeg), the independent judge of "it plays".
The tests at the bottom check the reader itself against ffmpeg-made TS.
"""

from __future__ import annotations

import fractions
import io
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.logging
import numpy as np

from mux.catalog import AudioConfig, Catalog, VideoConfig
from mux.container import encode_frame

# -- an independent TS reader --------------------------------------------------------------


def crc32_mpeg2_ref(data: bytes) -> int:
    """Bitwise CRC-32/MPEG-2 (no table), the reference the writer's table CRC is checked with."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


@dataclass(frozen=True, slots=True)
class Packet:
    """One parsed TS packet (index = position in the stream)."""

    index: int
    pid: int
    pusi: bool
    afc: int
    cc: int
    payload: bytes
    pcr_27m: int | None
    random_access: bool
    discontinuity: bool


def parse_packets(data: bytes) -> list[Packet]:
    """Parse a whole TS byte string; assert alignment, sync bytes and well-formed headers."""
    assert len(data) % 188 == 0, f"{len(data)} bytes is not a multiple of 188"
    out = []
    for index, off in enumerate(range(0, len(data), 188)):
        pkt = data[off : off + 188]
        assert pkt[0] == 0x47, f"packet {index}: sync byte {pkt[0]:#x}"
        assert not pkt[1] & 0x80, f"packet {index}: transport_error_indicator set"
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        afc = (pkt[3] >> 4) & 3
        assert afc != 0, f"packet {index}: reserved adaptation_field_control"
        pos = 4
        pcr = None
        rai = disc = False
        if afc & 2:
            af_len = pkt[4]
            assert af_len <= 183, f"packet {index}: adaptation field too long"
            if afc == 2:
                assert af_len == 183, f"packet {index}: AF-only packet must fill it"
            if af_len:
                flags = pkt[5]
                disc = bool(flags & 0x80)
                rai = bool(flags & 0x40)
                if flags & 0x10:
                    b = pkt[6:12]
                    base = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
                    assert b[4] & 0x7E == 0x7E, "PCR reserved bits must be 1"
                    pcr = base * 300 + (((b[4] & 1) << 8) | b[5])
                # stuffing after the used fields must be 0xFF
                used = 1 + (6 if flags & 0x10 else 0)
                assert all(x == 0xFF for x in pkt[5 + used : 5 + af_len]), "bad AF stuffing"
            pos = 5 + af_len
        payload = pkt[pos:] if afc & 1 else b""
        if afc & 1:
            assert payload, f"packet {index}: payload flag with no payload"
        out.append(
            Packet(index, pid, bool(pkt[1] & 0x40), afc, pkt[3] & 0x0F, payload, pcr, rai, disc)
        )
    return out


def check_continuity(packets: Sequence[Packet]) -> None:
    """Assert the continuity counter of every PID counts payload packets mod 16 without gaps."""
    last: dict[int, int] = {}
    for p in packets:
        if p.pid == 0x1FFF:
            continue
        if p.pid in last:
            expected = (last[p.pid] + 1) & 15 if p.afc & 1 else last[p.pid]
            assert p.cc == expected, f"packet {p.index} PID {p.pid:#x}: cc {p.cc} != {expected}"
        last[p.pid] = p.cc


@dataclass(frozen=True, slots=True)
class Section:
    """One PSI section whose CRC checked out; `index` is its first packet's."""

    index: int
    table_id: int
    extension: int
    version: int
    body: bytes


def psi_sections(packets: Sequence[Packet], pid: int) -> list[Section]:
    """Reassemble the sections on `pid` (pointer_field honoured); assert every CRC."""
    sections = []
    buf = b""
    start = -1
    for p in packets:
        if p.pid != pid or not p.afc & 1:
            continue
        if p.pusi:
            pointer = p.payload[0]
            buf = p.payload[1 + pointer :]
            start = p.index
        elif start < 0:
            continue
        else:
            buf += p.payload
        if len(buf) >= 3:
            length = ((buf[1] & 0x0F) << 8) | buf[2]
            if len(buf) >= 3 + length:
                section = buf[: 3 + length]
                assert crc32_mpeg2_ref(section) == 0, f"section at packet {start}: bad CRC"
                assert buf[1] & 0x80, "section_syntax_indicator must be 1"
                assert all(x == 0xFF for x in buf[3 + length :]), "PSI fill must be 0xFF"
                sections.append(
                    Section(
                        start,
                        section[0],
                        (section[3] << 8) | section[4],
                        (section[5] >> 1) & 0x1F,
                        section[8:-4],
                    )
                )
                start = -1
    return sections


def parse_pat(section: Section) -> dict[int, int]:
    """Return {program_number: PMT PID} from a PAT section."""
    assert section.table_id == 0
    out = {}
    for off in range(0, len(section.body), 4):
        entry = section.body[off : off + 4]
        out[(entry[0] << 8) | entry[1]] = ((entry[2] & 0x1F) << 8) | entry[3]
    return out


@dataclass(frozen=True, slots=True)
class PmtEntry:
    """One elementary stream of a PMT."""

    stream_type: int
    pid: int
    descriptors: bytes


def parse_pmt(section: Section) -> tuple[int, list[PmtEntry]]:
    """Return (PCR PID, streams) from a PMT section."""
    assert section.table_id == 2
    body = section.body
    pcr_pid = ((body[0] & 0x1F) << 8) | body[1]
    info_len = ((body[2] & 0x0F) << 8) | body[3]
    off = 4 + info_len
    streams = []
    while off < len(body):
        es_len = ((body[off + 3] & 0x0F) << 8) | body[off + 4]
        pid = ((body[off + 1] & 0x1F) << 8) | body[off + 2]
        streams.append(PmtEntry(body[off], pid, body[off + 5 : off + 5 + es_len]))
        off += 5 + es_len
    return pcr_pid, streams


def _timestamp(b: bytes) -> int:
    assert b[0] & b[2] & b[4] & 1, "PTS/DTS marker bits must be 1"
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


@dataclass(frozen=True, slots=True)
class Pes:
    """One reassembled PES on a PID."""

    index: int
    stream_id: int
    pts_90k: int | None
    dts_90k: int | None
    random_access: bool
    data: bytes


def pes_units(packets: Sequence[Packet], pid: int) -> list[Pes]:
    """Reassemble the PES packets on `pid`; assert headers and bounded lengths."""
    groups: list[tuple[Packet, list[bytes]]] = []
    for p in packets:
        if p.pid != pid or not p.afc & 1:
            continue
        if p.pusi:
            groups.append((p, [p.payload]))
        elif groups:
            groups[-1][1].append(p.payload)
    out = []
    for first, parts in groups:
        raw = b"".join(parts)
        assert raw[:3] == b"\x00\x00\x01", f"packet {first.index}: no PES start code"
        length = (raw[4] << 8) | raw[5]
        if length:
            assert len(raw) == 6 + length, f"PES length {length} != {len(raw) - 6}"
        assert raw[6] & 0xC0 == 0x80, "PES header must start with '10'"
        flags = raw[7] >> 6
        hdr_len = raw[8]
        pts = dts = None
        if flags & 2:
            assert raw[9] >> 4 == (3 if flags == 3 else 2)
            pts = _timestamp(raw[9:14])
        if flags == 3:
            assert raw[14] >> 4 == 1
            dts = _timestamp(raw[14:19])
        out.append(Pes(first.index, raw[3], pts, dts, first.random_access, raw[9 + hdr_len :]))
    return out


def nal_types(annexb: bytes, *, h265: bool = False) -> list[int]:
    """List the NAL unit types of an Annex-B byte string."""
    types: list[int] = []
    i = 0
    while True:
        i = annexb.find(b"\x00\x00\x01", i)
        if i < 0 or i + 3 >= len(annexb):
            return types
        header = annexb[i + 3]
        types.append((header >> 1) & 0x3F if h265 else header & 0x1F)
        i += 3


# -- media made with PyAV's encoders ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Encoded:
    """One encoded frame: times in microseconds (PTS, DTS), keyframe flag, payload."""

    pts_us: int
    dts_us: int
    keyframe: bool
    data: bytes


@dataclass(slots=True)
class EncodedTrack:
    """An encoded stream and the catalog rendition that describes it."""

    name: str
    frames: list[Encoded]
    video: VideoConfig | None = None
    audio: AudioConfig | None = None


def _us(value: int, time_base: fractions.Fraction) -> int:
    return int(value * time_base * 1_000_000)


def encode_video(
    *,
    name: str = "0.avc3",
    codec: str = "libx264",
    frames: int = 60,
    fps: int = 30,
    gop: int = 30,
    size: tuple[int, int] = (160, 96),
    bframes: int = 3,
    start_us: int = 10_000_000,
) -> EncodedTrack:
    """Encode a moving test pattern; keyframes carry in-band parameter sets (avc3/hev1)."""
    width, height = size
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps)
    ctx.gop_size = gop
    if codec == "libx264":
        ctx.options = {"preset": "veryfast", "bf": str(bframes), "sc_threshold": "0"}
    else:
        ctx.options = {
            "preset": "ultrafast",
            "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
            ":log-level=error:repeat-headers=1",
        }
    packets = []
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(frames):
        img = np.stack(
            [(xx * 2 + i * 5) % 256, (yy * 3 + i * 2) % 256, ((xx + yy) // 2 + i * 3) % 256],
            axis=-1,
        ).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    tb = fractions.Fraction(1, fps)
    out = [
        Encoded(
            start_us + _us(p.pts, tb),
            start_us + _us(p.dts, tb),
            bool(p.is_keyframe),
            bytes(p),
        )
        for p in packets
        if p.pts is not None and p.dts is not None
    ]
    family = "avc3.64000c" if codec == "libx264" else "hev1.1.6.L63.90"
    return EncodedTrack(
        name, out, video=VideoConfig(codec=family, coded_width=width, coded_height=height)
    )


_AUDIO_CODECS = {
    "aac": ("aac", "mp4a.40.2", "fltp"),
    "mp2": ("mp2", "mp2", "s16"),
    "ac3": ("ac3", "ac-3", "fltp"),
    "eac3": ("eac3", "ec-3", "fltp"),
    "opus": ("libopus", "opus", "s16"),
}


def encode_audio(
    *,
    name: str = "1.aac",
    kind: str = "aac",
    seconds: float = 2.0,
    sample_rate: int = 48000,
    channels: int = 2,
    start_us: int = 10_000_000,
) -> EncodedTrack:
    """Encode a sine tone with one of PyAV's audio encoders (aac, mp2, ac3, eac3, opus)."""
    encoder, codec_string, sample_fmt = _AUDIO_CODECS[kind]
    ctx = av.CodecContext.create(encoder, "w")
    assert isinstance(ctx, av.AudioCodecContext)
    layout = "stereo" if channels == 2 else "mono"
    ctx.sample_rate = sample_rate
    ctx.layout = layout
    ctx.format = sample_fmt
    ctx.time_base = fractions.Fraction(1, sample_rate)
    ctx.open()
    step = ctx.frame_size or 1024
    total = int(seconds * sample_rate)
    packets = []
    for t in range(0, total, step):
        tone = np.sin(np.arange(t, t + step) / sample_rate * 2 * np.pi * 440) * 0.3
        planes = np.stack([tone] * channels)
        if sample_fmt == "s16":
            arr = (planes.T.reshape(1, -1) * 32767).astype(np.int16)
        else:
            arr = planes.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(arr, format=sample_fmt, layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = t
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    tb = fractions.Fraction(1, sample_rate)
    frames = [
        Encoded(start_us + _us(p.pts, tb), start_us + _us(p.pts, tb), True, bytes(p))
        for p in packets
        if p.pts is not None
    ]
    description = bytes(ctx.extradata) if kind == "aac" and ctx.extradata else None
    return EncodedTrack(
        name,
        frames,
        audio=AudioConfig(
            codec=codec_string,
            sample_rate=sample_rate,
            channels=channels,
            description=description,
        ),
    )


def catalog_of(tracks: Iterable[EncodedTrack]) -> Catalog:
    """Return the catalog naming each track's rendition."""
    catalog = Catalog()
    for t in tracks:
        if t.video is not None:
            catalog.video[t.name] = t.video
        if t.audio is not None:
            catalog.audio[t.name] = t.audio
    return catalog


@dataclass(frozen=True, slots=True)
class Push:
    """One exporter input: track, legacy frame, keyframe flag, and the source frame."""

    track: str
    frame: bytes
    keyframe: bool
    source: Encoded


def interleave(tracks: Iterable[EncodedTrack]) -> list[Push]:
    """Merge tracks by DTS (ties: video first), each kept in decode order: the driver's job."""
    keyed = []
    for order, t in enumerate(tracks):
        keyed += [(f.dts_us, order, i, t.name, f) for i, f in enumerate(t.frames)]
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [Push(name, encode_frame(f.pts_us, f.data), f.keyframe, f) for _, _, _, name, f in keyed]


# -- decoding with PyAV --------------------------------------------------------------------


@dataclass(slots=True)
class Decoded:
    """What PyAV made of a TS byte string."""

    video_frames: int = 0
    audio_frames: int = 0
    video_pts_us: list[int] = field(default_factory=list)
    audio_pts_us: list[int] = field(default_factory=list)
    first_video_key: bool | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    errors: list[str] = field(default_factory=list)


def decode_ts(data: bytes) -> Decoded:
    """Demux and decode every stream with PyAV from the first byte; collect error logs."""
    result = Decoded()
    with av.logging.Capture(local=False) as logs:
        container = av.open(io.BytesIO(data), mode="r", format="mpegts")
        try:
            for stream in container.streams:
                if stream.type == "video":
                    result.video_codec = stream.codec_context.name
                elif stream.type == "audio":
                    result.audio_codec = stream.codec_context.name
            for packet in container.demux():
                stream = packet.stream
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame | av.AudioFrame)
                    if frame.pts is None or frame.time_base is None:
                        pts_us = -1
                    else:
                        pts_us = int(frame.pts * frame.time_base * 1_000_000)
                    if stream.type == "video":
                        assert isinstance(frame, av.VideoFrame)
                        if result.first_video_key is None:
                            result.first_video_key = bool(frame.key_frame)
                        result.video_frames += 1
                        result.video_pts_us.append(pts_us)
                    elif stream.type == "audio":
                        result.audio_frames += 1
                        result.audio_pts_us.append(pts_us)
        finally:
            container.close()
    result.errors = [
        f"{name}: {message}" for level, name, message in logs if level <= av.logging.ERROR
    ]
    return result


def ts_of(chunks: Iterable[object]) -> bytes:
    """Join the `data` of exporter chunks."""
    return b"".join(getattr(c, "data") for c in chunks)  # noqa: B009


# -- the reader checked against ffmpeg -----------------------------------------------------


def test_reader_parses_an_ffmpeg_made_stream_with_valid_crcs(tmp_path: Path) -> None:
    path = tmp_path / "ref.ts"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", "1", "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mpegts", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    packets = parse_packets(path.read_bytes())
    check_continuity(packets)
    pat = psi_sections(packets, 0)
    assert pat, "ffmpeg writes a PAT"
    pmt_pid = parse_pat(pat[0])[1]
    pcr_pid, streams = parse_pmt(psi_sections(packets, pmt_pid)[0])
    assert [s.stream_type for s in streams] == [0x1B, 0x0F]
    assert pcr_pid == streams[0].pid
    video = pes_units(packets, streams[0].pid)
    assert len(video) == 30
    assert all(v.pts_90k is not None for v in video)
    assert any(p.pcr_27m is not None for p in packets)


def test_reference_crc_matches_known_value() -> None:
    # CRC-32/MPEG-2 check value of "123456789" (catalogue of parametrised CRC algorithms).
    assert crc32_mpeg2_ref(b"123456789") == 0x0376E6E7
