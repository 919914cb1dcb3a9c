"""What the importer found wrong in an MPEG-TS stream, as events.

Every problem is a frozen dataclass whose `message` says what is wrong in the *stream* (which
PID, which counter, how many bytes were lost), for the operator who must fix an encoder or a
link. `TsImporter` records each one (a bounded list plus a count per kind) and carries on:
problems never end a broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """Base class of importer problems; `message` is the human sentence."""

    @property
    def message(self) -> str:
        """What is wrong, in the stream's terms."""
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """Short stable name of the problem class (`continuity_gap`, ...), for counters."""
        name = type(self).__name__
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncLost(Problem):
    """Bytes that were not on the 188-byte packet grid were skipped to find sync again."""

    offset: int
    skipped_bytes: int

    @property
    def message(self) -> str:
        if self.offset == 0:
            return (
                f"stream does not start on a packet boundary: skipped {self.skipped_bytes} "
                "bytes before the first two 0x47 sync bytes one packet apart"
            )
        return (
            f"lost packet sync at byte {self.offset}: skipped {self.skipped_bytes} bytes "
            "until two 0x47 sync bytes one packet apart"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportError(Problem):
    """A packet flagged by transport_error_indicator (the link knows it is damaged)."""

    pid: int
    packets: int
    dropped_bytes: int
    media: str

    @property
    def message(self) -> str:
        lost = _lost(self.media, self.dropped_bytes)
        what = "a packet" if self.packets == 1 else f"{self.packets} packets"
        return (
            f"PID 0x{self.pid:x}: dropped {what} marked damaged by the link "
            f"(transport_error_indicator){lost}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContinuityGap(Problem):
    """The continuity counter jumped: packets of this PID were lost."""

    pid: int
    expected_cc: int
    got_cc: int
    dropped_bytes: int
    media: str

    @property
    def message(self) -> str:
        lost = _lost(self.media, self.dropped_bytes)
        return (
            f"PID 0x{self.pid:x}: continuity gap, expected CC {self.expected_cc} "
            f"got {self.got_cc}{lost}"
        )


def _lost(media: str, size: int) -> str:
    if media == "video" and size:
        return f"; dropped a partial video PES of {size} bytes"
    if media == "audio" and size:
        return f"; kept the whole audio frames of a partial PES of {size} bytes"
    if media == "psi":
        return "; dropped a partial table section"
    return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BadSection(Problem):
    """A PAT or PMT section that was rejected (bad CRC, bad length, bad loop)."""

    pid: int
    table: str
    reason: str

    @property
    def message(self) -> str:
        return f"PID 0x{self.pid:x}: {self.table} section rejected: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtraPrograms(Problem):
    """The PAT lists several programs; only the first is imported."""

    programs: tuple[int, ...]
    pmt_pid: int

    @property
    def message(self) -> str:
        return (
            f"PAT lists {len(self.programs)} programs {list(self.programs)}; importing only "
            f"program {self.programs[0]} (PMT PID 0x{self.pmt_pid:x})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsupportedStream(Problem):
    """A PMT stream the importer does not carry (reported once per PID and type)."""

    pid: int
    stream_type: int
    name: str

    @property
    def message(self) -> str:
        return (
            f"PID 0x{self.pid:x}: {self.name} (stream_type 0x{self.stream_type:02x}) is not "
            "supported; skipping it"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BadPes(Problem):
    """A PES that could not be used (bad header, shorter than declared, no start code)."""

    pid: int
    reason: str
    dropped_bytes: int

    @property
    def message(self) -> str:
        return f"PID 0x{self.pid:x}: {self.reason}; dropped {self.dropped_bytes} bytes"


@dataclass(frozen=True, slots=True, kw_only=True)
class BadCodecData(Problem):
    """Codec data that does not parse (an SPS, an audio frame header)."""

    pid: int
    codec: str
    reason: str

    @property
    def message(self) -> str:
        return f"PID 0x{self.pid:x}: unreadable {self.codec} data: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioResync(Problem):
    """Bytes of an audio stream that were not frames of its codec were skipped."""

    pid: int
    codec: str
    skipped_bytes: int

    @property
    def message(self) -> str:
        return (
            f"PID 0x{self.pid:x}: skipped {self.skipped_bytes} bytes that are not {self.codec} "
            "frames"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamWithoutConfig(Problem):
    """A stream of the PMT sent nothing decodable before the catalog had to be published."""

    pid: int
    name: str
    waited_s: float

    @property
    def message(self) -> str:
        return (
            f"PID 0x{self.pid:x}: no decodable {self.name} after {self.waited_s:.1f} s of media; "
            "published the catalog without it"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupTooLarge(Problem):
    """A video group outgrew the cache's per-group limit and was evicted."""

    track: str

    @property
    def message(self) -> str:
        return (
            f"track {self.track}: a group of pictures outgrew the cache's per-group limit "
            "(keyframes too far apart for this bitrate); dropping video until the next keyframe"
        )
