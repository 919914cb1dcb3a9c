"""`StatsHandle`: usage per (broadcast path, tier, role), for billing.

A guard (`BroadcastStats.ingress()` / `.egress(viewer)`) is one session's stake in an entry: it
bumps the lifecycle counters when opened and closed, and its `meter` is the `Usage` the model
increments (attach it with `with_meter`). `snapshot()` sums closed guards and live meters and
removes nothing: every counter is cumulative and monotonic for every reader. A closed guard
leaves nothing behind in the handle; each (path, tier, role) ever seen keeps one entry.
Guards open and close on the loop thread; `snapshot()` may run on any thread.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Literal, Self

from model._wait import logger, safety_net
from model.path import normalize_path
from model.usage import Usage

__all__ = [
    "DEFAULT_VIEWER_IDS_MAX",
    "BroadcastStats",
    "Role",
    "StatsEntry",
    "StatsGuard",
    "StatsHandle",
]

DEFAULT_VIEWER_IDS_MAX = 65_536
"""How many (path, tier, viewer id) pairs a `StatsHandle` remembers by default: at most about
13 MiB with 20-character ids (measured), whatever the number of sessions."""

Role = Literal["ingress", "egress"]
"""`ingress`: content written into the model (a publisher); `egress`: read out of it (a viewer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsEntry:
    """Cumulative counters of one (path, tier, role) at snapshot time.

    Every counter is cumulative since the handle first saw the entry and never decreases from
    one snapshot to the next, whoever reads (a reader that wants deltas keeps its own cursor).
    `groups`, `frames`, `bytes`: model payload (frame bytes) of closed and open guards.
    `announced`/`announced_closed`: ingress guards opened/closed; `subscriptions`/
    `subscriptions_closed`: egress guards opened/closed; `sessions`/`sessions_closed`: guards of
    this role opened/closed; closed never exceeds opened. `viewers`: distinct viewer ids of the
    egress guards (see `BroadcastStats.egress`; 0 for ingress).
    """

    node: str
    path: str
    tier: str
    role: Role
    groups: int
    frames: int
    bytes: int
    announced: int
    announced_closed: int
    subscriptions: int
    subscriptions_closed: int
    viewers: int
    sessions: int
    sessions_closed: int

    def as_dict(self) -> dict[str, str | int]:
        """The entry as a plain dict (JSON-ready)."""
        return asdict(self)


class _Entry:
    """Registry slot of one (path, tier, role); mutated under the handle's lock.

    Its size does not depend on the number of sessions: `live` holds open guards only, and
    viewer ids live in the handle's bounded `_viewer_ids`.
    """

    __slots__ = (
        "announced",
        "announced_closed",
        "base",
        "live",
        "reported",
        "sessions",
        "sessions_closed",
        "subscriptions",
        "subscriptions_closed",
        "viewers",
    )

    def __init__(self) -> None:
        self.base = Usage()  # usage of closed guards
        self.live: dict[_GuardState, None] = {}  # open guards (their meters are read live)
        # The highest (groups, frames, bytes) a snapshot reported: see StatsHandle.snapshot.
        self.reported = (0, 0, 0)
        self.announced = 0
        self.announced_closed = 0
        self.subscriptions = 0
        self.subscriptions_closed = 0
        self.viewers = 0
        self.sessions = 0
        self.sessions_closed = 0


class _GuardState:
    """What a guard and its finalizer share (the finalizer must not hold the guard)."""

    __slots__ = ("closed", "entry", "meter", "role")

    def __init__(self, entry: _Entry, role: Role) -> None:
        self.entry = entry
        self.role = role
        self.meter = Usage()
        self.closed = False


def _guard_dropped(orphans: list[_GuardState], state: _GuardState) -> None:
    """Finalizer of an unclosed `StatsGuard`: queue it for closing under the lock later (a
    finalizer may run inside `snapshot()` on the same thread, so it must not touch entries)."""
    if not state.closed:
        logger.warning("stats guard (%s) dropped without close()", state.role)
        orphans.append(state)


class StatsGuard:
    """One session's stake in a (path, tier, role) entry; made by `BroadcastStats`.

    Attach `meter` to the broadcast producer (ingress) or consumer (egress) with `with_meter`.
    `close()` (idempotent; also on leaving the `with` block) folds the meter into the entry and
    counts the close: close it after the metered handle stopped moving content, since later
    increments are not attributed. Dropped unclosed, it logs a warning and closes itself.
    """

    __slots__ = ("__weakref__", "_finalizer", "_handle", "_state")

    def __init__(self, handle: StatsHandle, state: _GuardState) -> None:
        self._handle = handle
        self._state = state
        self._finalizer: weakref.finalize[Any, Any] = safety_net(
            self, _guard_dropped, handle._orphans, state
        )

    @property
    def meter(self) -> Usage:
        """The `Usage` this session counts into (owned by the guard)."""
        return self._state.meter

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._state.closed

    def close(self) -> None:
        """Count this session closed and fold its meter into the entry (idempotent). The
        handle keeps nothing of the session afterwards."""
        self._handle._close(self._state)
        self._finalizer.detach()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BroadcastStats:
    """The stats of one broadcast path in one tier; made by `StatsHandle.broadcast`. Cheap: it
    holds no counters itself (entries are created when a guard opens)."""

    __slots__ = ("_handle", "path", "tier")

    def __init__(self, handle: StatsHandle, path: str, tier: str) -> None:
        self._handle = handle
        self.path = path
        """Normalized broadcast path."""
        self.tier = tier
        """Tier label (customer plan, `internal`, ...)."""

    def ingress(self) -> StatsGuard:
        """Open an ingress guard (a publisher): counts `announced` and `sessions` at once.

        Open it only once the publish is accepted, so that a publish refused after the
        handshake counts nothing: create the `BroadcastProducer`, `Origin.publish` it, then
        open the guard and attach `broadcast.with_meter(guard.meter)` (`with_meter` reaches the
        tracks created before it too). Close it when the broadcast has ended.
        """
        return self._handle._open(self.path, self.tier, "ingress", None)

    def egress(self, viewer: str | None = None) -> StatsGuard:
        """Open an egress guard (a viewer session): counts `subscriptions`, `sessions` and,
        for a `viewer` id this (path, tier) has not seen, `viewers`.

        `viewer` names who watches (the stream id's user, or the peer's address when there is
        none), so that one person reconnecting counts once. `None` is an anonymous viewer:
        every anonymous guard counts as a new viewer, since nothing tells two apart. Ids are
        remembered per handle up to `StatsHandle.viewer_ids_max` (path, tier, id) pairs, the
        least recently seen forgotten first; a forgotten id that comes back counts again, so
        past that many `viewers` may count a returning viewer twice, never miss a new one.
        """
        return self._handle._open(self.path, self.tier, "egress", viewer)


class StatsHandle:
    """Process-wide usage registry of one gateway node (`node` labels every entry).

    Memory: one entry (about 600 bytes) per (path, tier, role) ever seen, kept for the
    handle's life so its counters stay cumulative: that part grows with the number of distinct
    paths and tiers, never with the number of sessions. Open guards are held until closed
    (or dropped); viewer ids take at most `viewer_ids_max` remembered pairs in all (see
    `BroadcastStats.egress`). A closed guard leaves nothing behind.

    Guards open and close on the event loop thread; `snapshot()` may be called from any thread.
    A lock guards the registry; the meter increments of the hot path take no lock.
    """

    __slots__ = ("_entries", "_lock", "_orphans", "_viewer_ids", "node", "viewer_ids_max")

    def __init__(self, node: str, *, viewer_ids_max: int = DEFAULT_VIEWER_IDS_MAX) -> None:
        if viewer_ids_max < 0:
            raise ValueError("viewer_ids_max must be >= 0")
        self.node = node
        """The node id reported in every entry."""
        self.viewer_ids_max = viewer_ids_max
        """How many (path, tier, viewer id) pairs the handle remembers to count distinct
        viewers (least recently seen forgotten first)."""
        self._entries: dict[tuple[str, str, Role], _Entry] = {}
        # Viewer ids seen, per egress entry, least recently seen first.
        self._viewer_ids: OrderedDict[tuple[_Entry, str], None] = OrderedDict()
        # Re-entrant: a garbage collection inside snapshot() may run a guard finalizer.
        self._lock = threading.RLock()
        self._orphans: list[_GuardState] = []  # dropped guards, closed at the next lock

    def broadcast(self, path: str, tier: str = "default") -> BroadcastStats:
        """Stats of broadcast `path` (normalized) in `tier`. Raises `ValueError` for an invalid
        path."""
        return BroadcastStats(self, normalize_path(path), tier)

    def _open(self, path: str, tier: str, role: Role, viewer: str | None) -> StatsGuard:
        with self._lock:
            self._close_orphans()
            key = (path, tier, role)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            state = _GuardState(entry, role)
            entry.sessions += 1
            if role == "ingress":
                entry.announced += 1
            else:
                entry.subscriptions += 1
                if viewer is None:
                    entry.viewers += 1
                else:
                    self._see_viewer(entry, viewer)
            entry.live[state] = None
            return StatsGuard(self, state)

    def _see_viewer(self, entry: _Entry, viewer: str) -> None:
        """Count `viewer` on `entry` unless remembered; remember it as the most recent."""
        ids = self._viewer_ids
        pair = (entry, viewer)
        if pair in ids:
            ids.move_to_end(pair)
            return
        entry.viewers += 1
        ids[pair] = None
        while len(ids) > self.viewer_ids_max:
            ids.popitem(last=False)

    def _close(self, state: _GuardState) -> None:
        with self._lock:
            self._close_orphans()
            self._close_locked(state)

    def _close_locked(self, state: _GuardState) -> None:
        if state.closed:
            return
        state.closed = True
        entry = state.entry
        entry.base.add(state.meter)
        del entry.live[state]
        # Closed counters move after their opened twins (see snapshot()).
        if state.role == "ingress":
            entry.announced_closed += 1
        else:
            entry.subscriptions_closed += 1
        entry.sessions_closed += 1

    def _close_orphans(self) -> None:
        while self._orphans:
            self._close_locked(self._orphans.pop())

    def snapshot(self) -> list[StatsEntry]:
        """Cumulative counters of every entry ever seen, sorted by (path, tier, role).

        Removes nothing: a second reader sees the same numbers, and no counter ever decreases
        from one snapshot to the next. Never shows more closed than opened.
        """
        out: list[StatsEntry] = []
        with self._lock:
            self._close_orphans()
            for key in sorted(self._entries):
                entry = self._entries[key]
                # Read every *_closed counter before its opened twin: opens always happen
                # before their closes, so even a close that slipped in between the two reads
                # (a finalizer on this thread re-entering the lock) leaves opened >= closed.
                announced_closed = entry.announced_closed
                subscriptions_closed = entry.subscriptions_closed
                sessions_closed = entry.sessions_closed
                usage = entry.base.copy()
                for state in entry.live:
                    usage.add(state.meter)
                # A live ingress meter read from another thread while the loop thread ends a
                # group may read low for a moment (model.usage.Usage), never high: reporting
                # the highest reading so far keeps every reader's counters monotonic.
                groups, frames, nbytes = entry.reported
                groups = max(groups, usage.groups)
                frames = max(frames, usage.frames)
                nbytes = max(nbytes, usage.bytes)
                entry.reported = (groups, frames, nbytes)
                path, tier, role = key
                out.append(
                    StatsEntry(
                        node=self.node,
                        path=path,
                        tier=tier,
                        role=role,
                        groups=groups,
                        frames=frames,
                        bytes=nbytes,
                        announced=entry.announced,
                        announced_closed=announced_closed,
                        subscriptions=entry.subscriptions,
                        subscriptions_closed=subscriptions_closed,
                        viewers=entry.viewers,
                        sessions=entry.sessions,
                        sessions_closed=sessions_closed,
                    )
                )
        return out
