"""`Usage`: the meter. Three counters the model adds to as content moves.

A producer-side meter (ingress) counts what is written once; a consumer-side meter (egress)
counts what that consumer read. The model updates meters on the loop thread only; other threads
may read them (see `Usage` for what they see).

Ingress frames and bytes are counted per group, not per write: a group being written is linked
to its meter, which reads the group's own frame list and byte room live and adds them at the
group's end. A write therefore costs the meter nothing, and a reading is still exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.group import _GroupState

__all__ = ["Usage"]


class Usage:
    """Cumulative model payload counters: `groups`, `frames` and `bytes` (frame payload bytes).

    Owned by whoever attaches it (`BroadcastProducer.with_meter`, `BroadcastConsumer.with_meter`,
    a `StatsGuard`); the model only adds to it and never resets it. Behaves like a slotted
    dataclass with three mutable int fields: `Usage(groups=.., frames=.., bytes=..)`, `==`,
    `repr`, `usage.frames += 1`. Reading `frames` / `bytes` of an ingress meter sums the groups
    still being written (usually one per track), so it is exact whenever the loop thread is
    between model calls; a reader on another thread may see a value briefly low (never high)
    while the loop thread ends a group. Writers: loop thread only.
    """

    __slots__ = ("_bytes", "_frames", "_open", "groups")

    __match_args__ = ("groups", "frames", "bytes")

    def __init__(self, groups: int = 0, frames: int = 0, bytes: int = 0) -> None:
        self.groups: int = groups
        """Groups counted."""
        self._frames = frames  # frames of ended groups (plus direct additions)
        self._bytes = bytes
        # Ingress groups still being written, each counting its frames since it was linked.
        self._open: dict[_GroupState, None] = {}

    def _live(self) -> tuple[int, int]:
        """Frames and bytes written so far into the linked open groups."""
        frames = nbytes = 0
        for group in tuple(self._open):  # tuple(): one atomic copy, safe from other threads
            room = group.room
            if room >= 0:  # < 0: ending right now (already unlinked on the loop thread)
                frames += len(group.frames) - group.frames0
                nbytes += group.limit - room - group.bytes0
        return frames, nbytes

    @property
    def frames(self) -> int:
        """Frames counted."""
        if self._open:
            return self._frames + self._live()[0]
        return self._frames

    @frames.setter
    def frames(self, value: int) -> None:
        self._frames = value - self._live()[0] if self._open else value

    @property
    def bytes(self) -> int:
        """Frame payload bytes counted."""
        if self._open:
            return self._bytes + self._live()[1]
        return self._bytes

    @bytes.setter
    def bytes(self, value: int) -> None:
        self._bytes = value - self._live()[1] if self._open else value

    def add_group(self) -> None:
        """Count one group."""
        self.groups += 1

    def add_frame(self, nbytes: int) -> None:
        """Count one frame of `nbytes` payload bytes."""
        self._frames += 1
        self._bytes += nbytes

    def add(self, other: Usage) -> None:
        """Add every counter of `other` to this one."""
        groups, frames, nbytes = other.values()
        self.groups += groups
        self._frames += frames
        self._bytes += nbytes

    def values(self) -> tuple[int, int, int]:
        """`(groups, frames, bytes)` read together."""
        groups, frames, nbytes = self.groups, self._frames, self._bytes  # base first: see _unlink
        if self._open:
            live_frames, live_bytes = self._live()
            return groups, frames + live_frames, nbytes + live_bytes
        return groups, frames, nbytes

    def copy(self) -> Usage:
        """Return an independent copy (a point-in-time reading)."""
        return Usage(*self.values())

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Usage)
        return self.values() == other.values()

    __hash__: Any = None  # mutable, like a non-frozen dataclass

    def __repr__(self) -> str:
        groups, frames, nbytes = self.values()
        return f"Usage(groups={groups!r}, frames={frames!r}, bytes={nbytes!r})"

    # Links made by the model (loop thread only).

    def _link(self, group: _GroupState) -> None:
        """Count `group`'s frames and bytes from now on, live, until `_unlink`."""
        group.frames0 = len(group.frames)
        group.bytes0 = group.limit - group.room
        self._open[group] = None

    def _unlink(self, group: _GroupState) -> None:
        """Add what `group` got since `_link` for good (call while its `room` is still >= 0)."""
        # Unlink before adding: a reader on another thread may see too little, never double.
        del self._open[group]
        self._frames += len(group.frames) - group.frames0
        self._bytes += group.limit - group.room - group.bytes0
