"""What the importer found wrong in an MPEG-TS stream, as events, and its counters.

Every problem is a frozen dataclass whose `message` says what is wrong in the *stream* (which
PID, which counter, how many bytes were lost), for the operator who must fix an encoder or a
link. `TsImporter` records each one in its `ProblemLog` (a bounded list plus a count per kind)
and carries on: problems never end a broadcast. `ImportStats` are its cumulative counters.
`ExportProblem` is what `TsExporter` reports about the broadcast it exports.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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
    """A PAT, PMT or opaque stream section that was rejected (bad CRC, bad length, bad loop)."""

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
class PesTooLarge(Problem):
    """A PES grew past what one PES of its stream may hold (`limit_bytes`): the model's
    largest frame, or the stream's share of the importer's budget for partial PES."""

    pid: int
    limit_bytes: int
    dropped_bytes: int
    media: str

    @property
    def message(self) -> str:
        kept = (
            "; kept its whole audio frames"
            if self.media == "audio"
            else f"; dropped its first {self.dropped_bytes} bytes"
        )
        return (
            f"PID 0x{self.pid:x}: a PES grew past the {self.limit_bytes} bytes one PES of this "
            f"stream may hold{kept}, and the rest of it up to the next PES start"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TooManyStreams(Problem):
    """The PMT lists more supported streams than the importer follows (`kept`, the first ones
    in PMT order); the others are skipped."""

    declared: int
    kept: int

    @property
    def message(self) -> str:
        return (
            f"PMT lists {self.declared} supported streams; importing the first {self.kept} and "
            "skipping the others"
        )


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


class ProblemLog:
    """The problems one importer recorded: the most recent `max_problems` (`recent`), those
    not yet taken (`take_new`, as many), and a count per `Problem.kind` (`counts`, never
    truncated).

    Inside a batch (`begin_batch` .. `end_batch`) streams are handled PID by PID, so problems
    are held and recorded at the end in stream order: by `row` (the packet row the code that
    reports sets first), then by arrival.
    """

    __slots__ = ("_batch", "_new", "_recent", "_reported", "counts", "row")

    def __init__(self, max_problems: int) -> None:
        self._recent: deque[Problem] = deque(maxlen=max_problems)
        self._new: list[Problem] = []
        self._batch: list[tuple[float, int, Problem]] | None = None
        self._reported: set[tuple[Any, ...]] = set()
        self.counts: Counter[str] = Counter()
        self.row: float = 0
        """Row in the current batch of the packet being handled (orders held problems)."""

    def add(self, problem: Problem) -> None:
        """Record `problem` (held until `end_batch` inside a batch)."""
        pending = self._batch
        if pending is not None:
            pending.append((self.row, len(pending), problem))
            return
        self._record(problem)

    def once(self, key: tuple[Any, ...], problem: Problem) -> None:
        """`add(problem)` unless a problem with this `key` was added before."""
        if key not in self._reported:
            self._reported.add(key)
            self.add(problem)

    def begin_batch(self) -> None:
        """Hold problems from now on, to record them in row order at `end_batch`."""
        self._batch = []

    def end_batch(self) -> None:
        """Record the problems held since `begin_batch`, ordered by row."""
        pending, self._batch = self._batch, None
        if pending:
            pending.sort(key=lambda item: item[:2])
            for _, _, problem in pending:
                self._record(problem)

    def recent(self) -> list[Problem]:
        """The most recent problems, oldest first (a copy)."""
        return list(self._recent)

    def take_new(self) -> list[Problem]:
        """Return the problems recorded since the previous call (at most `max_problems`)."""
        out, self._new = self._new, []
        return out

    def _record(self, problem: Problem) -> None:
        self._recent.append(problem)
        self._new.append(problem)
        if len(self._new) > self._recent.maxlen:  # type: ignore[operator]
            del self._new[0]
        self.counts[problem.kind] += 1


class ExportProblemKind(StrEnum):
    """What went wrong with the exporter's input (never with the caller's use of the API)."""

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
