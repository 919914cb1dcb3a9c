"""`Usage`: the meter. Three counters the model adds to as content moves.

A producer-side meter (ingress) counts what is written once; a consumer-side meter (egress)
counts what that consumer read. The model updates meters on the loop thread only; other threads
may read them (see `Usage` for what they see).

Ingress frames and bytes are counted per group, not per write: a group being written is linked
to its meter, which reads the group's frame list and byte room live and adds them for good when
the group ends. A write therefore costs the meter nothing, and every reading is still exact. A
meter that ever had a group linked reads `frames` / `bytes` through properties (its class
becomes the private subclass `_LinkedUsage`); every other meter is a plain slotted dataclass
whose fields read and add at attribute speed (the per-frame egress path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, final

if TYPE_CHECKING:
    from model.group import _GroupState

__all__ = ["Usage"]


@dataclass(slots=True, eq=False, repr=False)
class Usage:
    """Cumulative model payload counters: `groups`, `frames` and `bytes` (frame payload bytes).

    Owned by whoever attaches it (`BroadcastProducer.with_meter`, `BroadcastConsumer.with_meter`,
    a `StatsGuard`); the model only adds to it and never resets it. Compare, copy and add to it
    freely (`usage.frames += 1`); do not subclass it (the model may switch an ingress meter to
    a private subclass). Reading an ingress meter sums the groups still being written (usually
    one per track), so it is exact whenever the loop thread is between model calls; a reader
    on another thread may see a value briefly low (never high) while the loop thread ends a
    group. Writers: loop thread only.
    """

    groups: int = 0
    frames: int = 0
    bytes: int = 0
    # Set by the model when it first links an ingress group (see `link`); not a counter.
    _links: _Links | None = field(default=None, init=False, repr=False, compare=False)

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable: unhashable

    def add_group(self) -> None:
        """Count one group."""
        self.groups += 1

    def add_frame(self, nbytes: int) -> None:
        """Count one frame of `nbytes` payload bytes."""
        self.frames += 1
        self.bytes += nbytes

    def add(self, other: Usage) -> None:
        """Add every counter of `other` to this one."""
        groups, frames, nbytes = other.values()
        self.groups += groups
        self.frames += frames
        self.bytes += nbytes

    def values(self) -> tuple[int, int, int]:
        """`(groups, frames, bytes)` read together."""
        return self.groups, self.frames, self.bytes

    def copy(self) -> Usage:
        """Return an independent copy (a point-in-time reading, a plain `Usage`)."""
        return Usage(*self.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Usage):
            return NotImplemented
        return self.values() == other.values()

    def __repr__(self) -> str:
        groups, frames, nbytes = self.values()
        return f"Usage(groups={groups!r}, frames={frames!r}, bytes={nbytes!r})"

    def __reduce__(self) -> tuple[type[Usage], tuple[int, int, int]]:
        """Pickle and `copy` a reading (never the links to open groups)."""
        return (Usage, self.values())


class _Links:
    """An ingress meter's open groups, and what its ended groups added (loop thread writes)."""

    __slots__ = ("frames", "groups", "nbytes")

    def __init__(self) -> None:
        self.groups: dict[_GroupState, None] = {}  # open, each counted from frames0 / bytes0
        self.frames = 0  # frames of groups that ended since the meter was first linked
        self.nbytes = 0

    def live(self) -> tuple[int, int]:
        """Frames and bytes of ended groups plus those written so far into open ones."""
        # Ended totals first: an ending group leaves `groups` before it adds to them, so a
        # reader on another thread may see too little, never double.
        frames, nbytes = self.frames, self.nbytes
        for group in tuple(self.groups):  # tuple(): one atomic copy, safe from other threads
            room = group.room
            if room >= 0:  # < 0: ending right now (already unlinked on the loop thread)
                frames += len(group.frames) - group.frames0
                nbytes += group.limit - room - group.bytes0
        return frames, nbytes


# The slot descriptors of the own counters, which _LinkedUsage's properties shadow.
_FRAMES: Any = Usage.__dict__["frames"]
_BYTES: Any = Usage.__dict__["bytes"]


def _links(meter: Usage) -> _Links:
    links = meter._links
    assert links is not None
    return links


def _get_frames(meter: Usage) -> int:
    own: int = _FRAMES.__get__(meter)
    return own + _links(meter).live()[0]


def _set_frames(meter: Usage, value: int) -> None:
    _FRAMES.__set__(meter, value - _links(meter).live()[0])


def _get_bytes(meter: Usage) -> int:
    own: int = _BYTES.__get__(meter)
    return own + _links(meter).live()[1]


def _set_bytes(meter: Usage, value: int) -> None:
    _BYTES.__set__(meter, value - _links(meter).live()[1])


@final
class _LinkedUsage(Usage):
    """A `Usage` that had ingress groups linked: `frames` / `bytes` add its `_Links` live."""

    __slots__ = ()

    frames = property(_get_frames, _set_frames)
    bytes = property(_get_bytes, _set_bytes)

    def values(self) -> tuple[int, int, int]:
        groups, frames, nbytes = self.groups, _FRAMES.__get__(self), _BYTES.__get__(self)
        live_frames, live_bytes = _links(self).live()
        return groups, frames + live_frames, nbytes + live_bytes


def link(meter: Usage, group: _GroupState) -> None:
    """Count `group`'s frames and bytes into `meter` from now on, live, until `unlink`."""
    links = meter._links
    if links is None:
        if meter.__class__ is not Usage:
            raise TypeError(f"a meter must be a Usage, not a {type(meter).__name__}")
        links = meter._links = _Links()
        meter.__class__ = _LinkedUsage
    group.frames0 = len(group.frames)
    group.bytes0 = group.limit - group.room
    links.groups[group] = None


def unlink(meter: Usage, group: _GroupState) -> None:
    """Add what `group` got since `link` to `meter` for good (while its `room` is still >= 0)."""
    links = meter._links
    assert links is not None
    del links.groups[group]  # first: see _Links.live
    links.frames += len(group.frames) - group.frames0
    links.nbytes += group.limit - group.room - group.bytes0


def add_base(meter: Usage, frames: int, nbytes: int) -> None:
    """Count `frames` frames of `nbytes` bytes, at attribute speed even on a linked meter."""
    links = meter._links
    if links is None:
        meter.frames += frames
        meter.bytes += nbytes
    else:
        links.frames += frames
        links.nbytes += nbytes
