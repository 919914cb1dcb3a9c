"""`CachePool`: the process-wide byte budget shared by the caches of many tracks.

Every frame written into a cached group is charged to the pool, the latest group of every track
included; a write that takes the pool over its budget evicts the stalest superseded groups
first, across all tracks, and only when none is left the largest latest group (see
`CachePool`). Tracks register themselves weakly: a track nobody holds any more gives its bytes
back.
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

    `budget_bytes=None` means unbounded. `used_bytes` is every payload byte the pool's tracks
    cache, each track's latest group included, and no model call returns with it above
    `budget_bytes`, whatever the number of tracks. The rule, applied by the write that takes
    the pool over the budget:

    1. Superseded groups go first, stalest first across all tracks (`Evicted("budget")`).
    2. Only when every cached group is some track's latest group (normal operation never gets
       there with a sane budget), the largest latest group goes, finished or still being
       written, until the pool is within budget. Its readers get `Evicted(reason="budget")`;
       if it was open, its producer's next write raises `Closed` (when the write that tipped
       the pool was its own, that write still returns normally: the frame was taken, and the
       ingress meter counted it). The track itself goes on: its next group (`append_group`)
       is cached as usual, and a new consumer waits for that group instead of reading the
       evicted one. A frame larger than the whole budget therefore evicts its own group.

    So N tracks never hold N x `max_group_bytes`: they share `budget_bytes`. `max_group_bytes`
    caps one group on its own (a write past it evicts the group, reason `"size"`, and raises
    `Closed`). A write costs one subtraction and one comparison against the budget; an eviction
    scans the pool's tracks once per evicted group. `evicted_groups` / `evicted_bytes` count
    what the budget evicted (cumulative), of which `evicted_latest_groups` were latest groups.
    `clock` is accepted for API symmetry and not read today: staleness is the supersession time
    each track stamps with its broadcast's clock. Loop thread only. `BroadcastProducer` uses
    `CachePool.default()` unless given one; the pool lives as long as anything references it.
    """

    __slots__ = (
        "__weakref__",
        "_tracks",
        "budget_bytes",
        "clock",
        "evicted_bytes",
        "evicted_groups",
        "evicted_latest_groups",
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
        self.evicted_latest_groups = 0
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
        """Evict until within budget, by the rule of `CachePool`: the stalest superseded group
        across tracks, else the largest latest group. Called by writes; callers need not."""
        while self.room_bytes < 0:
            victim_track: _TrackState | None = None
            victim: _GroupState | None = None
            # The largest latest group holding bytes: the victim only if no track has an older
            # group (tracked only until one is found).
            big_track: _TrackState | None = None
            big: _GroupState | None = None
            big_bytes = 0
            for ref in self._tracks.values():
                track = ref()
                if track is None:
                    continue
                group = track.stalest_group()
                if group is not None:
                    if victim is None or group.superseded_s < victim.superseded_s:
                        victim_track, victim = track, group
                elif victim is None:
                    latest = track.latest
                    if latest is not None:
                        nbytes = latest.nbytes
                        if nbytes > big_bytes:
                            big_track, big, big_bytes = track, latest, nbytes
            if victim_track is None or victim is None:
                if big_track is None or big is None:
                    return
                victim_track, victim = big_track, big
                self.evicted_latest_groups += 1
            if victim.error is None:  # not an aborted husk holding no bytes
                self.evicted_groups += 1
                self.evicted_bytes += victim.nbytes
            victim_track.evict(victim, "budget")
