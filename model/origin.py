"""The origin: where broadcasts are published at paths and found by consumers.

`publish(path, broadcast)` announces a `BroadcastProducer` until it finishes or aborts (the origin
notices by itself); `announced(prefix)` streams active/ended events; `get` and
`announced_broadcast` hand out `BroadcastConsumer`s. A second publisher on a live path is rejected
(`PublishConflict`) or takes over, per `PublisherPolicy`; broadcasts are never spliced.
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Self

from model._wait import Waiters, wait, wake
from model.broadcast import BroadcastConsumer, BroadcastProducer, _BroadcastState
from model.clock import Clock, monotonic
from model.errors import Closed, PublishConflict
from model.path import normalize_path, path_has_prefix

__all__ = ["Announce", "AnnounceConsumer", "Origin", "PublisherPolicy"]


class PublisherPolicy(enum.Enum):
    """What `Origin.publish` does when another broadcast is live at the same path."""

    REJECT = "reject"
    """Raise `PublishConflict`; the first publisher keeps the path (the default)."""
    TAKEOVER = "takeover"
    """The new broadcast replaces the old one: announce consumers see the old path end, then
    become active again with the new broadcast. The old broadcast itself is not ended: its
    publisher and existing consumers carry on, unreachable by path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Announce:
    """One announce event: `broadcast` is a fresh unmetered consumer of the broadcast now live at
    `path` (full normalized path), or `None` when the path ended."""

    path: str
    broadcast: BroadcastConsumer | None

    @property
    def active(self) -> bool:
        """True for an active event, False for an ended one."""
        return self.broadcast is not None


class AnnounceConsumer:
    """Streams the paths under a prefix: first one active event per live path (sorted), then
    every change in order. Events coalesce per path: a reader that falls behind sees each path's
    latest state (a replaced broadcast still shows as ended then active), so its memory is
    bounded by the number of paths.

    Made by `Origin.announced`; `close()` (or the context manager) ends the iteration.
    """

    __slots__ = ("__weakref__", "_closed", "_dirty", "_live", "_reported", "_waiters", "prefix")

    def __init__(self, live: dict[str, _BroadcastState], prefix: str) -> None:
        self.prefix = prefix
        """The normalized prefix this consumer watches (`""` = everything)."""
        self._live = live  # the origin's live map (read only)
        self._reported: dict[str, _BroadcastState] = {}
        self._dirty: dict[str, None] = {
            path: None for path in sorted(live) if path_has_prefix(path, prefix)
        }
        self._waiters: Waiters = []
        self._closed = False

    def _mark(self, path: str) -> None:
        self._dirty[path] = None
        if self._waiters:
            wake(self._waiters)

    async def next(self) -> Announce | None:
        """Wait for and return the next event, or `None` once closed."""
        while True:
            if self._closed:
                return None
            while self._dirty:
                path = next(iter(self._dirty))
                reported = self._reported.get(path)
                current = self._live.get(path)
                if reported is not None and reported is not current:
                    del self._reported[path]
                    if current is None:
                        del self._dirty[path]
                    return Announce(path=path, broadcast=None)
                del self._dirty[path]
                if current is not None and reported is None:
                    self._reported[path] = current
                    return Announce(path=path, broadcast=BroadcastConsumer(current))
            await wait(self._waiters)

    def __aiter__(self) -> AnnounceConsumer:
        return self

    async def __anext__(self) -> Announce:
        """`async for event in announced`: `next()` until closed."""
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Stop the stream (idempotent): a waiting `next()` returns `None`."""
        self._closed = True
        wake(self._waiters)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Origin:
    """A namespace of live broadcasts keyed by normalized path. Loop thread only.

    `clock` is kept for components that need the origin's time; `publisher_policy` decides what
    a second publisher on a live path gets. The origin holds published broadcasts until they end.
    """

    __slots__ = (
        "__weakref__",
        "_announcers",
        "_live",
        "_path_waiters",
        "clock",
        "publisher_policy",
    )

    def __init__(
        self,
        *,
        clock: Clock = monotonic,
        publisher_policy: PublisherPolicy = PublisherPolicy.REJECT,
    ) -> None:
        self.clock = clock
        self.publisher_policy = publisher_policy
        self._live: dict[str, _BroadcastState] = {}
        self._announcers: weakref.WeakSet[AnnounceConsumer] = weakref.WeakSet()
        self._path_waiters: dict[str, Waiters] = {}

    def publish(self, path: str, broadcast: BroadcastProducer) -> None:
        """Announce `broadcast` at `path` until it finishes or aborts.

        Raises `ValueError` for an empty or invalid path, `Closed` when the broadcast already
        ended, and `PublishConflict` when another broadcast is live at `path` under
        `PublisherPolicy.REJECT` (under `TAKEOVER` the old one is un-announced instead).
        Publishing the same broadcast again at the same path is a no-op.
        """
        path = normalize_path(path)
        if not path:
            raise ValueError("cannot publish at the empty path")
        state = broadcast._state
        if state.done:
            raise Closed("broadcast is closed")
        current = self._live.get(path)
        if current is state:
            return
        if current is not None and self.publisher_policy is PublisherPolicy.REJECT:
            raise PublishConflict(path)
        self._live[path] = state
        state.on_end.append(partial(self._ended, path, state))
        self._changed(path)
        waiters = self._path_waiters.pop(path, None)
        if waiters:
            wake(waiters)

    def _ended(self, path: str, state: _BroadcastState) -> None:
        if self._live.get(path) is state:
            del self._live[path]
            self._changed(path)

    def _changed(self, path: str) -> None:
        for announcer in list(self._announcers):
            if path_has_prefix(path, announcer.prefix):
                announcer._mark(path)

    def get(self, path: str) -> BroadcastConsumer | None:
        """A new unmetered consumer of the broadcast live at `path`, or `None`.
        Raises `ValueError` for an invalid path."""
        state = self._live.get(normalize_path(path))
        return None if state is None else BroadcastConsumer(state)

    def is_live(self, path: str) -> bool:
        """True when a broadcast is live at `path`. Raises `ValueError` for an invalid path."""
        return normalize_path(path) in self._live

    def paths(self, prefix: str = "") -> list[str]:
        """The live paths under `prefix` (segment boundaries), sorted."""
        prefix = normalize_path(prefix)
        return sorted(p for p in self._live if path_has_prefix(p, prefix))

    def announced(self, prefix: str = "") -> AnnounceConsumer:
        """Stream active/ended events for paths under `prefix` (segment boundaries: `"live"`
        covers `"live/cam1"`, not `"lively"`), the live set first. Raises `ValueError` for an
        invalid prefix. Close the consumer when done."""
        consumer = AnnounceConsumer(self._live, normalize_path(prefix))
        self._announcers.add(consumer)
        return consumer

    async def announced_broadcast(self, path: str) -> BroadcastConsumer:
        """Wait until a broadcast is live at `path` and return a new unmetered consumer of it.
        Waits forever otherwise: bound it with `asyncio.timeout`. Raises `ValueError` for an
        invalid path."""
        path = normalize_path(path)
        while True:
            state = self._live.get(path)
            if state is not None:
                return BroadcastConsumer(state)
            waiters = self._path_waiters.setdefault(path, [])
            try:
                await wait(waiters)
            finally:
                if not waiters and self._path_waiters.get(path) is waiters:
                    del self._path_waiters[path]
