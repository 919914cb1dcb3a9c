"""Tracks: a sequence of groups numbered from 0, written by one `TrackProducer` and read by any
number of `TrackConsumer`s, each with its own cursor.

The track caches its groups: older ones expire `latency_max_s` after a newer group superseded
them (checked when a group is created, on the injected clock) or when the `CachePool` budget
needs room; the latest (highest sequence) never expires, and the budget takes it only when
nothing older is left anywhere in the pool (see `CachePool`). `finish()` lets consumers drain the
cache and then end; `abort(err)` clears it and consumers raise `err`; a producer dropped without
either logs a warning and consumers get `Dropped`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from model._wait import Waiters, logger, safety_net, wait, wait_many, wake
from model.clock import Clock
from model.errors import Closed, Dropped, Duplicate, Evicted, NotFound
from model.group import GroupConsumer, GroupProducer, _GroupState
from model.pool import CachePool
from model.usage import Usage, add_base

__all__ = ["TrackConsumer", "TrackInfo", "TrackProducer", "wait_any"]


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A track's name and delivery hints.

    `priority`: higher is more important (a hint for senders). `latency_max_s`: how long (seconds)
    a group stays cached after a newer group superseded it (hang media tracks use 30 s).
    """

    name: str
    priority: int = 0
    latency_max_s: float = 30.0


class _TrackState:
    """What the producer and consumers of one track share. Loop thread only."""

    __slots__ = (
        "__weakref__",
        "clock",
        "error",
        "finished",
        "groups",
        "info",
        "latest",
        "max_sequence",
        "meter",
        "name",
        "pending",
        "pool",
        "waiters",
    )

    def __init__(
        self, info: TrackInfo, *, clock: Clock, pool: CachePool, meter: Usage | None
    ) -> None:
        self.info = info
        self.name = info.name
        self.clock = clock
        self.pool = pool
        self.meter = meter  # ingress meter, or None
        # Cached groups in arrival order (the eviction order); never rebound (the pool's
        # finalizer holds this very dict).
        self.groups: dict[int, _GroupState] = {}
        self.latest: _GroupState | None = None
        self.max_sequence = -1
        self.finished = False
        self.error: BaseException | None = None
        self.pending: str | None = None  # "requested"/"reserved": not accepted yet
        self.waiters: Waiters = []
        pool.register(self)

    @property
    def done(self) -> bool:
        """True once finished or aborted: no new groups."""
        return self.finished or self.error is not None

    def set_meter(self, meter: Usage | None) -> None:
        """Count ingress into `meter` from now on, for new and still-open groups."""
        self.meter = meter
        for group in self.groups.values():
            group.set_meter(meter)

    def new_group(self, sequence: int, *, link: bool = True) -> _GroupState:
        """Create and cache group `sequence`; expire old groups; count it; wake consumers.

        `link=False`: the ingress meter counts the group but not its frames, which the caller
        counts itself (a one-frame group: cheaper than linking the group to the meter)."""
        if self.error is not None or self.finished:
            raise Closed(f"track {self.name!r} is closed")
        if sequence < 0:
            raise ValueError("group sequence must be >= 0")
        groups = self.groups
        if sequence in groups:
            raise Duplicate(f"group {sequence} of track {self.name!r}")
        now = self.clock()
        group = _GroupState(sequence, self.name, self.meter if link else None, self.pool)
        if sequence > self.max_sequence:
            previous = self.latest
            if previous is not None:
                previous.superseded_s = now
            self.latest = group
            self.max_sequence = sequence
        elif sequence == self.max_sequence:
            # Not a duplicate, so the budget evicted the latest group: this one replaces it.
            self.latest = group
        else:
            group.superseded_s = now  # arrived late: never the latest
        groups[sequence] = group
        meter = self.meter
        if meter is not None:
            meter.groups += 1
        self._expire(now)
        if self.waiters:
            wake(self.waiters)
        return group

    def _expire(self, now: float) -> None:
        """Evict groups superseded more than `latency_max_s` ago (arrival order: stop at the
        first one still young, so the scan is short)."""
        cutoff = now - self.info.latency_max_s
        expired: list[_GroupState] = []
        latest = self.latest
        for group in self.groups.values():
            if group is latest:
                continue
            if group.superseded_s > cutoff:
                break
            expired.append(group)
        for group in expired:
            self.evict(group, "age")

    def stalest_group(self) -> _GroupState | None:
        """The oldest cached group other than the latest (the pool's first eviction candidate;
        the latest itself is `latest`, which stays set after the budget evicted it)."""
        latest = self.latest
        for group in self.groups.values():
            if group is not latest:
                return group
        return None

    def evict(self, group: _GroupState, reason: str) -> None:
        """Drop `group` from the cache; its readers get `Evicted(reason)`."""
        del self.groups[group.sequence]
        group.drop(Evicted(self.name, group.sequence, reason))

    def finish(self) -> None:
        """No new groups; consumers drain the cache, then end. Ignored once ended."""
        if self.done:
            return
        self.finished = True
        wake(self.waiters)

    def abort(self, err: BaseException) -> None:
        """Clear the cache and end with `err`. Open groups abort with `err`; finished ones stay
        readable by consumers already holding them. Ignored once the track ended."""
        if self.done:
            return
        self.error = err
        for group in self.groups.values():
            if group.done:
                group.release()
            else:
                group.drop(err)
        self.groups.clear()
        self.latest = None
        wake(self.waiters)


def _track_dropped(state: _TrackState) -> None:
    """Finalizer of a `TrackProducer` handle (static: it must not reference the handle)."""
    if not state.done:
        logger.warning("track %r dropped without finish() or abort()", state.name)
        state.abort(Dropped(f"track {state.name!r}"))


class TrackProducer:
    """Writes one track: creates its groups, in any order, numbered from 0.

    Made by `BroadcastProducer.create_track` / `unique_track` / `TrackRequest.accept`; the caller
    owns it and ends it once with `finish()` or `abort(err)`. Creating a group counts one group on
    the broadcast's ingress meter, writing a frame counts a frame and its bytes.
    """

    __slots__ = ("__weakref__", "_state", "info", "name")

    def __init__(self, state: _TrackState) -> None:
        self._state = state
        self.name: str = state.name
        """The track name, unique within its broadcast."""
        self.info: TrackInfo = state.info
        """Name, priority and `latency_max_s`."""
        safety_net(self, _track_dropped, state)

    @property
    def latest_sequence(self) -> int | None:
        """Highest group sequence created so far, or `None` before the first group."""
        seq = self._state.max_sequence
        return None if seq < 0 else seq

    def append_group(self) -> GroupProducer:
        """Create the next group (sequence = highest so far + 1, from 0) and return its producer.
        Raises `Closed` after the track ended."""
        state = self._state
        return GroupProducer(state.new_group(state.max_sequence + 1))

    def create_group(self, sequence: int) -> GroupProducer:
        """Create group `sequence` (any order; relays keep upstream numbering).

        Raises `Duplicate` when that sequence is cached, `Closed` after the track ended, and
        `ValueError` for a negative sequence. An evicted sequence may be created again (the
        latest sequence, evicted by the budget, is then the latest again).
        """
        return GroupProducer(self._state.new_group(sequence))

    def write_frame(self, payload: bytes) -> None:
        """Write a one-frame group: append a group, write `payload`, finish it (audio, catalog).
        Raises `Closed` after the track ended."""
        state = self._state
        group = state.new_group(state.max_sequence + 1, link=False)
        group.write(payload)
        group.finish()
        meter = state.meter
        if meter is not None:  # counted here, once the write succeeded
            add_base(meter, 1, len(payload))

    def finish(self) -> None:
        """End the track cleanly: no new groups; consumers drain the cache, then get `None`.
        Groups still open may still be written and finished. Idempotent; no-op after abort."""
        self._state.finish()

    def abort(self, err: BaseException) -> None:
        """End the track with `err`: the cache is cleared, open groups abort with `err`, and
        consumers raise it. No-op once the track ended."""
        self._state.abort(err)

    def consume(self) -> TrackConsumer:
        """A new unmetered consumer starting at the latest group (see `TrackConsumer`)."""
        return TrackConsumer(self._state, None)

    @property
    def is_closed(self) -> bool:
        """True once the track finished or aborted."""
        return self._state.done


class TrackConsumer:
    """Reads one track's groups in increasing sequence order, with its own cursor.

    Starts at the group that was latest when it was made (or the first group to arrive). A
    consumer that falls behind skips groups the cache evicted: it never holds the producer or
    other consumers back. `next_group()` counts one group on this consumer's meter (if any), and
    the returned `GroupConsumer` counts the frames read from it. Drop it when done.
    """

    __slots__ = ("_last", "_meter", "_state", "name")

    def __init__(self, state: _TrackState, meter: Usage | None) -> None:
        self._state = state
        self._meter = meter
        self.name: str = state.name
        """The track name."""
        # Highest sequence handed out; start one below the current latest group.
        self._last = state.max_sequence - 1 if state.max_sequence >= 0 else -1

    @property
    def info(self) -> TrackInfo:
        """The track's info (replaced when a requested track is accepted with other info)."""
        return self._state.info

    @property
    def latest_sequence(self) -> int | None:
        """Highest group sequence the producer created so far, or `None`."""
        seq = self._state.max_sequence
        return None if seq < 0 else seq

    @property
    def finished(self) -> bool:
        """True once the producer finished the track cleanly (cached groups may still be
        unread: `poll_group()` returning `None` then means the end)."""
        return self._state.finished

    async def next_group(self) -> GroupConsumer | None:
        """Wait for and return the next cached group with a higher sequence than the last one
        returned (evicted and late groups are skipped), or `None` once the track finished and
        no such group is cached. Raises the track's abort error or `Dropped`."""
        st = self._state
        while True:
            group = self.poll_group()
            if group is not None:
                return group
            if st.finished:
                return None
            await wait(st.waiters)

    def poll_group(self) -> GroupConsumer | None:
        """`next_group()` without waiting: the next cached group (counted as `next_group()`
        counts it), or `None` when there is none yet or the track finished (`finished` says
        which). Raises the track's abort error or `Dropped`."""
        st = self._state
        last = self._last
        if st.max_sequence > last:
            groups = st.groups
            group = groups.get(last + 1)
            if group is None:
                later = [seq for seq in groups if seq > last]
                if later:
                    group = groups[min(later)]
            if group is not None:
                self._last = group.sequence
                meter = self._meter
                if meter is not None:
                    meter.groups += 1
                return GroupConsumer(group, meter)
        if st.error is not None:
            raise st.error
        return None

    def skip_to_latest(self) -> None:
        """Move the cursor so that `next_group()` returns the latest group next (or the next
        group to arrive), skipping everything older: for a reader that fell behind live (e.g. a
        full send buffer). Never moves backwards."""
        latest = self._state.max_sequence
        if latest - 1 > self._last:
            self._last = latest - 1

    def __aiter__(self) -> TrackConsumer:
        return self

    async def __anext__(self) -> GroupConsumer:
        """`async for group in track`: `next_group()` until the track finishes."""
        group = await self.next_group()
        if group is None:
            raise StopAsyncIteration
        return group

    async def fetch_group(self, sequence: int) -> GroupConsumer:
        """Return a reader of cached group `sequence`, whatever this consumer's cursor (which
        does not move). Its frames count on this consumer's meter; the group does not (it is
        re-served, not delivered anew). Raises `NotFound` when the group is not cached, or the
        track's abort error."""
        st = self._state
        if st.error is not None:
            raise st.error
        group = st.groups.get(sequence)
        if group is None:
            raise NotFound(f"group {sequence} of track {self.name!r}")
        return GroupConsumer(group, self._meter)

    async def closed(self) -> None:
        """Wait until the track ends: return after `finish()`, raise the abort error."""
        st = self._state
        while True:
            if st.error is not None:
                raise st.error
            if st.finished:
                return
            await wait(st.waiters)


async def wait_any(readers: Iterable[TrackConsumer | GroupConsumer]) -> None:
    """Wait until any of `readers` may have news: a new group or the end of a track, a new
    frame or the end of a group. Wakes spuriously at times (e.g. a frame of a group another
    reader of the same track reads): poll again (`poll_group`, `read_ready`, `poll_end`) and
    wait again. Returns at once for no readers. One future, whatever the number of readers,
    so a reader of many tracks costs one wake-up per change, not one per track."""
    lists = [reader._state.waiters for reader in readers]
    if lists:
        await wait_many(lists)
