"""Program-specific information: section reassembly from TS payloads, CRC-32/MPEG-2, and the
PAT and PMT tables (ISO/IEC 13818-1 sections 2.4.4.3 to 2.4.4.9), parsed with `construct`.

`SectionAssembler` (one per PSI PID) turns packet payloads into whole sections; `parse_pat` and
`parse_pmt` check the CRC and return frozen tables; `classify_stream` says how the importer
handles each elementary stream of a PMT. Tables arrive about ten times a second, so `construct`
(~100 us a table) is affordable here and never used per packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from construct import Bytes, ConstructError, GreedyRange, Int8ub, Int16ub, Struct, Terminated, this

from mux.errors import MalformedSection

MAX_SECTION = 1024


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, init 0xFFFFFFFF, no reflection, no final xor).

    Over a whole section including its CRC field the result is 0 (the importer checks PAT and
    PMT sections so; `mux.ts_mux` writes it).
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in memoryview(data).cast("B"):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


class StreamType(IntEnum):
    """PMT stream_type values (ISO/IEC 13818-1 table 2-34 and ATSC A/53) the importer names
    and the exporter writes."""

    MPEG1_VIDEO = 0x01
    MPEG2_VIDEO = 0x02
    MPEG1_AUDIO = 0x03
    MPEG2_AUDIO = 0x04
    PRIVATE_SECTIONS = 0x05
    PRIVATE_PES = 0x06
    DSMCC_B = 0x0B
    DSMCC_C = 0x0C
    DSMCC_D = 0x0D
    AAC_ADTS = 0x0F
    MPEG4_VIDEO = 0x10
    AAC_LATM = 0x11
    METADATA_PES = 0x15
    H264 = 0x1B
    H265 = 0x24
    AC3 = 0x81
    SCTE35 = 0x86
    EAC3 = 0x87


class DescriptorTag(IntEnum):
    """Descriptor tags the importer reads and the exporter writes."""

    REGISTRATION = 0x05
    ISO639_LANGUAGE = 0x0A
    METADATA = 0x26
    STREAM_IDENTIFIER = 0x52
    DVB_TELETEXT = 0x56
    DVB_SUBTITLING = 0x59
    DVB_AC3 = 0x6A
    DVB_EAC3 = 0x7A
    DVB_EXTENSION = 0x7F


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One descriptor: its tag and body bytes."""

    tag: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PatEntry:
    """One PAT entry: program 0 points at the NIT, any other at its PMT PID."""

    program_number: int
    pid: int


@dataclass(frozen=True, slots=True)
class EsInfo:
    """One elementary stream of a PMT."""

    stream_type: int
    pid: int
    descriptors: tuple[Descriptor, ...]

    def registration(self) -> bytes | None:
        """The format_identifier of its registration descriptor (`b"Opus"`), if any."""
        return _registration(self.descriptors)


@dataclass(frozen=True, slots=True)
class Pmt:
    """A program map table; `version` is its version_number (0-31)."""

    program_number: int
    version: int
    pcr_pid: int
    descriptors: tuple[Descriptor, ...]
    streams: tuple[EsInfo, ...]


def _registration(descriptors: tuple[Descriptor, ...]) -> bytes | None:
    for d in descriptors:
        if d.tag == DescriptorTag.REGISTRATION and len(d.data) >= 4:
            return d.data[:4]
    return None


_DESCRIPTOR = Struct("tag" / Int8ub, "length" / Int8ub, "data" / Bytes(this.length))
_DESCRIPTORS = GreedyRange(_DESCRIPTOR)
_LONG_HEADER = Struct(
    "table_id" / Int8ub,
    "length_field" / Int16ub,
    "id" / Int16ub,
    "version_field" / Int8ub,
    "section_number" / Int8ub,
    "last_section_number" / Int8ub,
)
_PAT_BODY = Struct(
    "entries" / GreedyRange(Struct("program" / Int16ub, "pid_field" / Int16ub)), Terminated
)
_ES_ENTRY = Struct(
    "stream_type" / Int8ub,
    "pid_field" / Int16ub,
    "info_length_field" / Int16ub,
    "descriptors" / Bytes(this.info_length_field & 0x0FFF),
)
_PMT_BODY = Struct(
    "pcr_pid_field" / Int16ub,
    "info_length_field" / Int16ub,
    "descriptors" / Bytes(this.info_length_field & 0x0FFF),
    "streams" / GreedyRange(_ES_ENTRY),
    Terminated,
)


def _descriptors(data: bytes) -> tuple[Descriptor, ...]:
    try:
        parsed = _DESCRIPTORS.parse(data)
    except ConstructError as exc:
        raise MalformedSection(f"bad descriptor loop: {exc}") from exc
    if sum(2 + d.length for d in parsed) != len(data):
        raise MalformedSection("descriptor loop ends inside a descriptor")
    return tuple(Descriptor(d.tag, bytes(d.data)) for d in parsed)


def parse_descriptors(data: bytes) -> tuple[Descriptor, ...]:
    """Parse a raw descriptor loop (as a PMT carries it); `MalformedSection` if it is not one."""
    return _descriptors(data)


#: Names of the descriptors `moqsrt probe` shows (ISO/IEC 13818-1 2.6, EN 300 468 6.2).
DESCRIPTOR_NAMES: dict[int, str] = {
    0x02: "video stream",
    0x03: "audio stream",
    0x05: "registration",
    0x06: "data stream alignment",
    0x0A: "ISO 639 language",
    0x0E: "maximum bitrate",
    0x26: "metadata",
    0x28: "AVC video",
    0x2B: "MPEG-2 AAC audio",
    0x38: "HEVC video",
    0x45: "VBI data",
    0x52: "stream identifier",
    0x56: "teletext",
    0x59: "subtitling",
    0x6A: "AC-3",
    0x7A: "E-AC-3",
    0x7C: "AAC",
    0x7F: "extension",
    0x8A: "cue identifier",
}


def check_section(section: bytes, table_id: int) -> tuple[int, int, bool, bytes]:
    """Check a long-form section's table id, length and CRC.

    Returns `(id_extension, version, current, body)` where body excludes the 8-byte header and
    the CRC; raises `MalformedSection` saying what is wrong.
    """
    if len(section) < 12:
        raise MalformedSection(f"section of {len(section)} bytes is too short", offset=0)
    header = _LONG_HEADER.parse(section)
    if header.table_id != table_id:
        raise MalformedSection(
            f"table_id 0x{header.table_id:02x}, expected 0x{table_id:02x}", offset=0
        )
    if not header.length_field & 0x8000:
        raise MalformedSection("section_syntax_indicator is 0", offset=1)
    if 3 + (header.length_field & 0x0FFF) != len(section):
        raise MalformedSection("section_length disagrees with the section size", offset=1)
    if crc32_mpeg2(section) != 0:
        crc = int.from_bytes(section[-4:], "big")
        raise MalformedSection(
            f"CRC mismatch (carried 0x{crc:08x}, computed 0x{crc32_mpeg2(section[:-4]):08x})",
            offset=len(section) - 4,
        )
    version = (header.version_field >> 1) & 0x1F
    return header.id, version, bool(header.version_field & 1), section[8:-4]


def parse_pat(section: bytes) -> tuple[PatEntry, ...]:
    """Parse a PAT section (CRC checked); `MalformedSection` if it is not a valid one."""
    _, _, _, body = check_section(section, 0x00)
    try:
        parsed = _PAT_BODY.parse(body)
    except ConstructError as exc:
        raise MalformedSection(f"PAT program loop is malformed: {exc}") from exc
    return tuple(PatEntry(e.program, e.pid_field & 0x1FFF) for e in parsed.entries)


def parse_pmt(section: bytes) -> Pmt:
    """Parse a PMT section (CRC checked); `MalformedSection` if it is not a valid one."""
    program_number, version, _, body = check_section(section, 0x02)
    try:
        parsed = _PMT_BODY.parse(body)
    except ConstructError as exc:
        raise MalformedSection(f"PMT stream loop is malformed: {exc}") from exc
    streams = tuple(
        EsInfo(s.stream_type, s.pid_field & 0x1FFF, _descriptors(s.descriptors))
        for s in parsed.streams
    )
    return Pmt(
        program_number=program_number,
        version=version,
        pcr_pid=parsed.pcr_pid_field & 0x1FFF,
        descriptors=_descriptors(parsed.descriptors),
        streams=streams,
    )


class SectionAssembler:
    """Reassembles the sections of one PSI PID from its packet payloads.

    `push` returns the sections completed by one payload (several may end in one packet);
    `reset` drops a partial section after a continuity gap. A section longer than
    `max_section` bytes of section_length (1021 for PAT/PMT, 4093 for private sections) is
    dropped with everything up to the next unit start.
    """

    __slots__ = ("_active", "_buf", "_max_section")

    def __init__(self, max_section: int = MAX_SECTION) -> None:
        self._buf = b""
        self._active = False
        self._max_section = max_section

    @property
    def held_bytes(self) -> int:
        """Bytes of the partial section held (at most `max_section` + 3 between pushes)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial section."""
        self._buf = b""
        self._active = False

    def push(self, payload: bytes, unit_start: bool) -> list[bytes]:
        """Add one packet payload; `unit_start` is the packet's payload_unit_start_indicator.

        Raises `MalformedSection` if the pointer field points past the payload (the partial
        section is dropped first).
        """
        out: list[bytes] = []
        if unit_start:
            if not payload or 1 + payload[0] > len(payload):
                self.reset()
                raise MalformedSection("pointer_field points past the packet")
            pointer = payload[0]
            if self._active:
                # The bytes before the pointer end the previous section; anything left over
                # is a section the new unit cut short.
                self._buf += payload[1 : 1 + pointer]
                self._drain(out)
            self._buf = payload[1 + pointer :]
            self._active = True
        elif self._active:
            self._buf += payload
        else:
            return out
        self._drain(out)
        return out

    def _drain(self, out: list[bytes]) -> None:
        buf = self._buf
        while len(buf) >= 3:
            if buf[0] == 0xFF:  # stuffing: nothing more until the next unit start
                buf = b""
                self._active = False
                break
            length = 3 + (((buf[1] & 0x0F) << 8) | buf[2])
            if length > self._max_section + 3:
                buf = b""
                self._active = False
                break
            if len(buf) < length:
                break
            out.append(buf[:length])
            buf = buf[length:]
        self._buf = buf


@dataclass(frozen=True, slots=True)
class StreamKind:
    """How the importer handles a PMT stream: `codec` is one of `h264 h265 aac mpa ac3 eac3
    opus` (decoded), or `opaque` (carried unit by unit, undecoded); `name` describes it for
    people. For opaque streams, `label` names the kind (`scte35`, `klv`, `dvbsub`, `teletext`,
    `mpeg2video`, `sections`, `data`, ...: the track's suffix), `section` says its units are
    sections (else PES) and `video` that it is video (groups start at its keyframes)."""

    codec: str
    name: str
    channels: int | None = None
    label: str = ""
    section: bool = False
    video: bool = False

    @property
    def opaque(self) -> bool:
        """True when the stream is carried undecoded."""
        return self.codec == OPAQUE


#: `StreamKind.codec` of a stream carried undecoded.
OPAQUE = "opaque"

#: Stream types whose units are sections rather than PES (ISO/IEC 13818-1 table 2-34, SCTE 35).
SECTION_STREAM_TYPES = frozenset(
    {
        StreamType.PRIVATE_SECTIONS,
        StreamType.DSMCC_B,
        StreamType.DSMCC_C,
        StreamType.DSMCC_D,
        StreamType.SCTE35,
    }
)

_OPAQUE_KINDS: dict[int, tuple[str, str]] = {
    StreamType.MPEG1_VIDEO: ("mpeg1video", "MPEG-1 video"),
    StreamType.MPEG2_VIDEO: ("mpeg2video", "MPEG-2 video"),
    StreamType.PRIVATE_SECTIONS: ("sections", "private sections"),
    StreamType.MPEG4_VIDEO: ("mpeg4video", "MPEG-4 part 2 video"),
    StreamType.AAC_LATM: ("latm", "AAC in LATM"),
    StreamType.METADATA_PES: ("metadata", "metadata in PES"),
    StreamType.SCTE35: ("scte35", "SCTE-35 cues"),
}


def _opaque_kind(es: EsInfo, registration: bytes | None, tags: set[int]) -> StreamKind:
    st = es.stream_type
    section = st in SECTION_STREAM_TYPES
    video = st in (StreamType.MPEG1_VIDEO, StreamType.MPEG2_VIDEO)
    if registration == b"KLVA" or (
        st == StreamType.METADATA_PES and DescriptorTag.METADATA in tags
    ):
        label, name = "klv", "KLV metadata (SMPTE 336)"
    elif st == StreamType.PRIVATE_PES and DescriptorTag.DVB_SUBTITLING in tags:
        label, name = "dvbsub", "DVB subtitles"
    elif st == StreamType.PRIVATE_PES and DescriptorTag.DVB_TELETEXT in tags:
        label, name = "teletext", "DVB teletext"
    elif st in _OPAQUE_KINDS:
        label, name = _OPAQUE_KINDS[st]
    else:
        label = "sections" if section else "data"
        reg = f", registration {registration!r}" if registration else ""
        name = f"stream_type 0x{st:02x}{reg}"
    return StreamKind(OPAQUE, name, label=label, section=section, video=video)


def language(descriptors: tuple[Descriptor, ...]) -> str | None:
    """The stream's language: the first ISO 639 code of its ISO 639 language, DVB subtitling
    or DVB teletext descriptor (ASCII letters only), or None."""
    for d in descriptors:
        if (
            d.tag
            in (
                DescriptorTag.ISO639_LANGUAGE,
                DescriptorTag.DVB_SUBTITLING,
                DescriptorTag.DVB_TELETEXT,
            )
            and len(d.data) >= 3
        ):
            code = d.data[:3]
            if code.isalpha() and code.isascii():
                return code.decode().lower()
    return None


def _opus_channels(descriptors: tuple[Descriptor, ...]) -> int:
    for d in descriptors:
        if d.tag == DescriptorTag.DVB_EXTENSION and len(d.data) >= 2 and d.data[0] == 0x80:
            code = d.data[1]
            if 1 <= code <= 8:
                return code
            if code in (0x81, 0x82):
                return 2
    return 2


def classify_stream(es: EsInfo, program_descriptors: tuple[Descriptor, ...] = ()) -> StreamKind:
    """Decide how the importer handles one elementary stream of a PMT: decoded, or carried
    opaquely (every stream the importer does not decode)."""
    st = es.stream_type
    registration = es.registration() or _registration(program_descriptors)
    tags = {d.tag for d in es.descriptors}
    if st == StreamType.H264:
        return StreamKind("h264", "H.264 video")
    if st == StreamType.H265 or (st == StreamType.PRIVATE_PES and registration == b"HEVC"):
        return StreamKind("h265", "H.265 video")
    if st == StreamType.AAC_ADTS:
        return StreamKind("aac", "AAC audio (ADTS)")
    if st in (StreamType.MPEG1_AUDIO, StreamType.MPEG2_AUDIO):
        return StreamKind("mpa", "MPEG audio")
    if st == StreamType.AC3 or (
        st == StreamType.PRIVATE_PES and (DescriptorTag.DVB_AC3 in tags or registration == b"AC-3")
    ):
        return StreamKind("ac3", "AC-3 audio")
    if st == StreamType.EAC3 or (
        st == StreamType.PRIVATE_PES and (DescriptorTag.DVB_EAC3 in tags or registration == b"EAC3")
    ):
        return StreamKind("eac3", "E-AC-3 audio")
    if st == StreamType.PRIVATE_PES and registration == b"Opus":
        return StreamKind("opus", "Opus audio", _opus_channels(es.descriptors))
    return _opaque_kind(es, registration, tags)
