"""What the TS path carries besides decoded media: opaque units and the PMT's own words.

The importer carries every stream it does not decode as an opaque track (one frame per PES or
per section, see `mux.ts_tracks`), and describes every track's source stream (PID, stream_type,
descriptors) and the program (number, PMT PID, descriptors) in the catalog's `mpegts` section,
a non-hang root section that hang readers ignore (`TsProgramInfo`). The exporter reads it back
to write the same PMT. `SectionReader` cuts one section PID's packets into checked sections;
`mpeg_video_keyframe` finds where an MPEG-1/2 video GOP starts. Sans-I/O, stateless but for
`SectionReader`'s partial section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mux.errors import Malformed, MalformedCatalog, MalformedSection
from mux.psi import Descriptor, SectionAssembler, crc32_mpeg2
from mux.ts_packets import PACKET_SIZE

#: Root key of the catalog section that describes the TS program and every track's stream.
CATALOG_SECTION = "mpegts"

#: How the frames of a track are units of its stream: decoded media, whole PES, whole sections.
UNITS_FRAMES = "frames"
UNITS_PES = "pes"
UNITS_SECTION = "section"
_UNITS = (UNITS_FRAMES, UNITS_PES, UNITS_SECTION)

#: Longest private section (section_length is 12 bits, at most 4093 for private sections).
MAX_PRIVATE_SECTION = 4093
#: SCTE 35's splice_info_section table_id: short syntax, but always ends in a CRC_32.
SCTE35_TABLE_ID = 0xFC


def descriptors_bytes(descriptors: tuple[Descriptor, ...]) -> bytes:
    """The raw descriptor loop (tag, length, body each) of parsed `descriptors`."""
    return b"".join(bytes((d.tag, len(d.data))) + d.data for d in descriptors)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamInfo:
    """The source stream of one track: its PID, stream_type and ES_info descriptor loop (raw
    bytes, written back verbatim); `units` says what the track's frames are (`frames`: decoded
    media; `pes` / `section`: each frame is one whole PES / section, after the legacy
    timestamp); `kind` names the stream (`aac`, `scte35`, `dvbsub`, ...), `language` its ISO
    639 code, `video` whether its groups start at video keyframes (opaque MPEG video)."""

    pid: int
    stream_type: int
    descriptors: bytes = b""
    units: str = UNITS_FRAMES
    kind: str = ""
    language: str | None = None
    video: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this stream (camelCase, descriptors as hex)."""
        out: dict[str, Any] = {
            "pid": self.pid,
            "streamType": self.stream_type,
            "descriptors": self.descriptors.hex(),
            "units": self.units,
            "kind": self.kind,
        }
        if self.language is not None:
            out["language"] = self.language
        if self.video:
            out["video"] = True
        return out

    @classmethod
    def from_dict(cls, value: object) -> StreamInfo:
        """Parse one stream object; `MalformedCatalog` if a field is missing or out of range."""
        obj = _object(value, "mpegts track")
        pid = _int(obj, "pid", 0x10, 0x1FFE)
        stream_type = _int(obj, "streamType", 0, 0xFF)
        units = obj.get("units", UNITS_FRAMES)
        if units not in _UNITS:
            raise MalformedCatalog(f"mpegts track units must be one of {_UNITS}, got {units!r}")
        language = obj.get("language")
        kind = obj.get("kind", "")
        if not isinstance(kind, str) or not (language is None or isinstance(language, str)):
            raise MalformedCatalog("mpegts track kind and language must be strings")
        return cls(
            pid=pid,
            stream_type=stream_type,
            descriptors=_hex(obj, "descriptors"),
            units=units,
            kind=kind,
            language=language,
            video=obj.get("video") is True,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TsProgramInfo:
    """The catalog's `mpegts` section: the source program's number, PMT PID and program_info
    descriptors (raw), and the source stream of each track, by track name, in the order of the
    source PMT (the exporter writes its PMT in that order)."""

    program_number: int
    pmt_pid: int
    descriptors: bytes = b""
    tracks: dict[str, StreamInfo] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the section (tracks in the source PMT's order)."""
        return {
            "program": self.program_number,
            "pmtPid": self.pmt_pid,
            "descriptors": self.descriptors.hex(),
            "tracks": {name: info.to_dict() for name, info in self.tracks.items()},
        }

    @classmethod
    def from_dict(cls, value: object) -> TsProgramInfo:
        """Parse the section; `MalformedCatalog` if it is not one."""
        obj = _object(value, "mpegts section")
        tracks = _object(obj.get("tracks", {}), "mpegts tracks")
        return cls(
            program_number=_int(obj, "program", 1, 0xFFFF),
            pmt_pid=_int(obj, "pmtPid", 0x10, 0x1FFE),
            descriptors=_hex(obj, "descriptors"),
            tracks={str(k): StreamInfo.from_dict(v) for k, v in tracks.items()},
        )


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedCatalog(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _int(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedCatalog(f"{key} must be an integer in {low}..{high}, got {value!r}")
    return value


def _hex(obj: dict[str, Any], key: str) -> bytes:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise MalformedCatalog(f"{key} must be a hex string, got {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise MalformedCatalog(f"{key} is not hex: {value!r}") from exc


def check_private_section(section: bytes) -> None:
    """Check one section of a section stream: its length field, and its CRC_32 when it has one
    (long syntax, or SCTE 35's splice_info_section). `MalformedSection` says what is wrong."""
    if len(section) < 3 or 3 + (((section[1] & 0x0F) << 8) | section[2]) != len(section):
        raise MalformedSection("section_length disagrees with the section size", offset=1)
    if (section[1] & 0x80 or section[0] == SCTE35_TABLE_ID) and crc32_mpeg2(section) != 0:
        if len(section) < 8:
            raise MalformedSection("section too short for its CRC_32", offset=0)
        carried = int.from_bytes(section[-4:], "big")
        raise MalformedSection(
            f"CRC mismatch (carried 0x{carried:08x}, computed 0x{crc32_mpeg2(section[:-4]):08x})",
            offset=len(section) - 4,
        )


class SectionReader:
    """The packets of one section-stream PID in, whole checked sections out.

    `packet(data)` takes one 188-byte packet of the PID and returns `(sections, errors)`:
    the sections it completed, and a reason for each section or payload that was dropped
    (a bad pointer_field, a bad length or CRC). A continuity gap drops the partial section
    (`gap` tells the caller); a duplicate packet is ignored.
    """

    __slots__ = ("_assembler", "last_cc")

    def __init__(self) -> None:
        self._assembler = SectionAssembler(MAX_PRIVATE_SECTION)
        self.last_cc = -1

    @property
    def held_bytes(self) -> int:
        """Bytes of the partial section held (under 4 KiB)."""
        return self._assembler.held_bytes

    def packet(self, data: bytes) -> tuple[list[bytes], list[str], tuple[int, int] | None]:
        """Read one packet; return its sections, the reasons of what was dropped, and
        `(expected_cc, got_cc)` when packets were lost before it (else None)."""
        b1, b3 = data[1], data[3]
        if b1 & 0x80 or not b3 & 0x10:
            return [], [], None
        cc = b3 & 0x0F
        last, self.last_cc = self.last_cc, cc
        if cc == last:
            return [], [], None
        gap = None
        if last >= 0 and cc != (last + 1) & 0x0F:
            self._assembler.reset()
            gap = ((last + 1) & 0x0F, cc)
        start = 5 + data[4] if b3 & 0x20 else 4
        if start >= PACKET_SIZE:
            return [], [], gap
        errors: list[str] = []
        try:
            found = self._assembler.push(data[start:PACKET_SIZE], bool(b1 & 0x40))
        except Malformed as exc:
            return [], [str(exc)], gap
        sections = []
        for section in found:
            try:
                check_private_section(section)
            except Malformed as exc:
                errors.append(str(exc))
                continue
            sections.append(section)
        return sections, errors, gap


def mpeg_video_keyframe(payload: bytes | memoryview) -> bool:
    """Whether an MPEG-1/2 video PES payload starts a GOP: it holds a sequence header
    (start code 0xB3) and an I picture (picture_coding_type 1 in a picture header, 0x00)."""
    data = bytes(payload)
    seq = data.find(b"\x00\x00\x01\xb3")
    if seq < 0:
        return False
    at = data.find(b"\x00\x00\x01\x00", seq)
    while at >= 0 and at + 6 <= len(data):
        if (data[at + 5] >> 3) & 0x07 == 1:
            return True
        at = data.find(b"\x00\x00\x01\x00", at + 4)
    return False
