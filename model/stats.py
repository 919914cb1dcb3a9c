"""`StatsHandle`: usage per (broadcast path, tier, role), for billing.

A guard (`BroadcastStats.ingress()` / `.egress(viewer)`) is one session's stake in an entry: it
bumps the lifecycle counters when opened and closed, and its `meter` is the `Usage` the model
increments (attach it with `with_meter`). `snapshot()` sums closed guards and live meters.
Guards open and close on the loop thread; `snapshot()` may run on any thread.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Literal, Self

from model._wait import logger, safety_net
from model.path import normalize_path
from model.usage import Usage

__all__ = ["BroadcastStats", "Role", "StatsEntry", "StatsGuard", "StatsHandle"]

Role = Literal["ingress", "egress"]
"""`ingress`: content written into the model (a publisher); `egress`: read out of it (a viewer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsEntry:
    """Cumulative counters of one (path, tier, role) at snapshot time.

    `groups`, `frames`, `bytes`: model payload (frame bytes). `announced`/`announced_closed`:
    ingress guards opened/closed; `subscriptions`/`subscriptions_closed`: egress guards
    opened/closed; `viewers`: distinct viewers seen (by viewer id; an anonymous guard is a new
    viewer); `sessions`/`sessions_closed`: guards of this role opened/closed. Counters only grow
    while the entry lives; an entry pruned and seen again restarts at zero.
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
    """Registry slot of one (path, tier, role); mutated under the handle's lock."""

    __slots__ = (
        "announced",
        "announced_closed",
        "base",
        "live",
        "sessions",
        "sessions_closed",
        "subscriptions",
        "subscriptions_closed",
        "viewer_ids",
        "viewers",
    )

    def __init__(self) -> None:
        self.base = Usage()  # usage of closed guards
        self.live: dict[_GuardState, None] = {}  # open guards (their meters are read live)
        self.announced = 0
        self.announced_closed = 0
        self.subscriptions = 0
        self.subscriptions_closed = 0
        self.viewers = 0
        self.viewer_ids: set[str] = set()
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

    __slots__ = ("__weakref__", "_handle", "_state")

    def __init__(self, handle: StatsHandle, state: _GuardState) -> None:
        self._handle = handle
        self._state = state
        safety_net(self, _guard_dropped, handle._orphans, state)

    @property
    def meter(self) -> Usage:
        """The `Usage` this session counts into (owned by the guard)."""
        return self._state.meter

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._state.closed

    def close(self) -> None:
        """Count this session closed and fold its meter into the entry (idempotent)."""
        self._handle._close(self._state)

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
        """Open an ingress guard (a publisher): counts `announced` and `sessions`."""
        return self._handle._open(self.path, self.tier, "ingress", None)

    def egress(self, viewer: str | None = None) -> StatsGuard:
        """Open an egress guard (a viewer session): counts `subscriptions`, `sessions` and, for
        a viewer id not seen on this entry (or `None`, always), `viewers`."""
        return self._handle._open(self.path, self.tier, "egress", viewer)


class StatsHandle:
    """Process-wide usage registry of one gateway node (`node` labels every entry).

    Guards open and close on the event loop thread; `snapshot()` may be called from any thread.
    A lock guards the registry; the meter increments of the hot path take no lock.
    """

    __slots__ = ("_entries", "_lock", "_orphans", "node")

    def __init__(self, node: str) -> None:
        self.node = node
        """The node id reported in every entry."""
        self._entries: dict[tuple[str, str, Role], _Entry] = {}
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
                elif viewer not in entry.viewer_ids:
                    entry.viewer_ids.add(viewer)
                    entry.viewers += 1
            entry.live[state] = None
            return StatsGuard(self, state)

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
        """Cumulative counters of every entry, sorted by (path, tier, role).

        An entry no open guard holds is reported this one last time, then pruned (the same key
        seen again starts from zero). Never shows more closed than opened.
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
                path, tier, role = key
                out.append(
                    StatsEntry(
                        node=self.node,
                        path=path,
                        tier=tier,
                        role=role,
                        groups=usage.groups,
                        frames=usage.frames,
                        bytes=usage.bytes,
                        announced=entry.announced,
                        announced_closed=announced_closed,
                        subscriptions=entry.subscriptions,
                        subscriptions_closed=subscriptions_closed,
                        viewers=entry.viewers,
                        sessions=entry.sessions,
                        sessions_closed=sessions_closed,
                    )
                )
                if not entry.live:
                    del self._entries[key]
        return out
