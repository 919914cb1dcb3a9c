"""`CachePool`: the process-wide byte budget shared by the caches of many tracks.

Every frame written into a cached group is charged to the pool; a write that takes the pool over
its budget evicts the stalest groups first, across all tracks, never a track's latest group.
Tracks register themselves weakly: a track nobody holds any more gives its bytes back.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, ClassVar

from model._wait import safety_net
from model.clock import Clock, monotonic

if TYPE_CHECKING:
    from model.group import _GroupState
    from model.track import _TrackState

__all__ = ["DEFAULT_BUDGET_BYTES", "DEFAULT_MAX_GROUP_BYTES", "CachePool"]

DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024
"""Budget of `CachePool.default()`: 256 MiB of frame payload."""

DEFAULT_MAX_GROUP_BYTES = 32 * 1024 * 1024
"""Largest group (sum of its frames) a pool caches: 32 MiB, as moq-net."""


def _release_groups(
    tracks: dict[int, weakref.ref[_TrackState]], key: int, groups: dict[int, _GroupState]
) -> None:
    """Finalizer of a track state: forget it and give back the bytes its cached groups held."""
    tracks.pop(key, None)
    for group in groups.values():
        group.release()
    groups.clear()


class CachePool:
    """A byte budget for cached frame payload, shared by every track that uses it.

    `budget_bytes=None` means unbounded. `max_group_bytes` caps one group (a write past it
    evicts the group). `used_bytes` is the payload currently cached; `evicted_groups` /
    `evicted_bytes` count what the budget evicted (cumulative). `clock` is accepted for API
    symmetry and not read today: staleness is the supersession time each track stamps with its
    broadcast's clock. Loop thread only. `BroadcastProducer` uses `CachePool.default()` unless
    given one; the pool lives as long as anything references it.
    """

    __slots__ = (
        "__weakref__",
        "_tracks",
        "budget_bytes",
        "clock",
        "evicted_bytes",
        "evicted_groups",
        "limit_bytes",
        "max_group_bytes",
        "room_bytes",
    )

    _default: ClassVar[CachePool | None] = None

    def __init__(
        self,
        budget_bytes: int | None = None,
        *,
        max_group_bytes: int = DEFAULT_MAX_GROUP_BYTES,
        clock: Clock = monotonic,
    ) -> None:
        if budget_bytes is not None and budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0 or None")
        self.budget_bytes = budget_bytes
        self.limit_bytes: int = sys.maxsize if budget_bytes is None else budget_bytes
        self.max_group_bytes = max_group_bytes
        self.clock = clock
        # Bytes left before the budget (negative = over it): one subtraction per write.
        self.room_bytes = self.limit_bytes
        self.evicted_groups = 0
        self.evicted_bytes = 0
        # Registered tracks by id, held weakly (a plain dict iterates faster than a WeakSet).
        self._tracks: dict[int, weakref.ref[_TrackState]] = {}

    @property
    def used_bytes(self) -> int:
        """Frame payload currently cached by the tracks of this pool."""
        return self.limit_bytes - self.room_bytes

    @classmethod
    def default(cls) -> CachePool:
        """The shared pool (budget `DEFAULT_BUDGET_BYTES`), created on first use."""
        if cls._default is None:
            cls._default = cls(DEFAULT_BUDGET_BYTES)
        return cls._default

    @classmethod
    def set_default(cls, pool: CachePool) -> None:
        """Replace the shared pool for broadcasts created from now on (e.g. from configuration)."""
        cls._default = pool

    def register(self, track: _TrackState) -> None:
        """Track `track`'s cache (called by the track itself when created)."""
        key = id(track)
        self._tracks[key] = weakref.ref(track)
        safety_net(track, _release_groups, self._tracks, key, track.groups)

    def evict(self) -> None:
        """Evict the stalest non-latest groups, across tracks, until within budget (or nothing
        more can go). Called by writes; callers need not call it."""
        while self.room_bytes < 0:
            victim_track: _TrackState | None = None
            victim: _GroupState | None = None
            for ref in self._tracks.values():
                track = ref()
                if track is None:
                    continue
                group = track.stalest_group()
                if group is not None and (
                    victim is None or group.superseded_s < victim.superseded_s
                ):
                    victim_track, victim = track, group
            if victim_track is None or victim is None:
                return
            if victim.error is None:  # not an aborted husk holding no bytes
                self.evicted_groups += 1
                self.evicted_bytes += victim.nbytes
            victim_track.evict(victim, "budget")
