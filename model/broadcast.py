"""Broadcasts: a named set of tracks, written by one `BroadcastProducer` and read through any
number of `BroadcastConsumer`s.

Tracks enter a broadcast by `create_track`, `unique_track`, `reserve_track` (+ `accept`) or, for
names a consumer asked for that do not exist yet, through a `BroadcastDynamic` handler. A meter
attached with `with_meter` reaches every track, whichever way it came in. `finish()` finishes
every track (consumers drain, then end); `abort(err)` aborts every track with `err`; a producer
dropped without either logs a warning and consumers get `Dropped`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Self

from model._wait import Waiters, logger, safety_net, wait, wake
from model.clock import Clock, monotonic
from model.errors import Closed, Dropped, Duplicate, NotFound
from model.pool import CachePool
from model.track import TrackConsumer, TrackInfo, TrackProducer, _TrackState
from model.usage import Usage

__all__ = [
    "BroadcastConsumer",
    "BroadcastDynamic",
    "BroadcastProducer",
    "TrackRequest",
]

_REQUESTED = "requested"  # a consumer asked for it; waits for a dynamic handler
_RESERVED = "reserved"  # reserve_track(): waits for its TrackRequest to be answered


class _BroadcastState:
    """What the producer, its consumers and its dynamic handlers share. Loop thread only."""

    __slots__ = (
        "clock",
        "dynamics",
        "error",
        "finished",
        "meter",
        "on_end",
        "pool",
        "request_waiters",
        "requests",
        "tracks",
        "unique_next",
        "waiters",
    )

    def __init__(self, clock: Clock, pool: CachePool) -> None:
        self.clock = clock
        self.pool = pool
        self.meter: Usage | None = None  # ingress meter
        self.tracks: dict[str, _TrackState] = {}
        self.finished = False
        self.error: BaseException | None = None
        self.waiters: Waiters = []  # closed() waiters
        self.requests: deque[_TrackState] = deque()  # requested tracks not handed out yet
        self.request_waiters: Waiters = []
        self.dynamics = 0  # live BroadcastDynamic handles
        self.unique_next = 0
        self.on_end: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        """True once finished or aborted."""
        return self.finished or self.error is not None

    def new_track(self, info: TrackInfo, pending: str | None) -> _TrackState:
        """Register a track state (with the broadcast's clock, pool and ingress meter)."""
        track = _TrackState(info, clock=self.clock, pool=self.pool, meter=self.meter)
        track.pending = pending
        self.tracks[info.name] = track
        return track

    def accept(self, track: _TrackState, info: TrackInfo | None) -> TrackProducer:
        """Turn a requested or reserved track into a produced one (with the broadcast meter)."""
        if info is not None:
            if info.name != track.name:
                raise ValueError(f"accepting track {track.name!r} with info for {info.name!r}")
            track.info = info
        track.pending = None
        track.set_meter(self.meter)
        return TrackProducer(track)

    def reject(self, track: _TrackState, err: BaseException) -> None:
        """Answer a request with `err`: its consumers raise it; the name becomes free again."""
        track.pending = None
        track.abort(err)
        if self.tracks.get(track.name) is track:
            del self.tracks[track.name]

    def end(self, err: BaseException | None) -> None:
        """Finish (`err is None`) or abort every track, wake everyone, run the end callbacks."""
        if self.done:
            return
        if err is None:
            self.finished = True
        else:
            self.error = err
        for track in list(self.tracks.values()):
            if track.pending is not None:
                self.reject(
                    track, err or Closed(f"broadcast ended before track {track.name!r} came")
                )
            elif err is None:
                track.finish()
            else:
                track.abort(err)
        self.requests.clear()
        wake(self.waiters)
        wake(self.request_waiters)
        callbacks, self.on_end = self.on_end, []
        for callback in callbacks:
            callback()


def _broadcast_dropped(state: _BroadcastState) -> None:
    """Finalizer of a `BroadcastProducer` (static: it must not reference the handle)."""
    if not state.done:
        logger.warning("broadcast dropped without finish() or abort()")
        state.end(Dropped("broadcast"))


def _request_dropped(broadcast: _BroadcastState, track: _TrackState) -> None:
    """Finalizer of a `TrackRequest`: an unanswered request is rejected with `Dropped`."""
    if track.pending is not None:
        broadcast.reject(track, Dropped(f"request for track {track.name!r}"))


def _dynamic_closed(state: _BroadcastState) -> None:
    """Closer/finalizer of a `BroadcastDynamic`: the last one gone rejects queued requests."""
    state.dynamics -= 1
    if state.dynamics == 0:
        while state.requests:
            track = state.requests.popleft()
            if track.pending == _REQUESTED:
                state.reject(track, NotFound(f"track {track.name!r}"))
    wake(state.request_waiters)


class TrackRequest:
    """A track that was asked for (or reserved) but not produced yet.

    Answer it once: `accept(info)` returns the `TrackProducer` (the broadcast's ingress meter
    attached), `reject(err)` makes its consumers raise `err`. Dropped unanswered, it rejects
    with `Dropped`.
    """

    __slots__ = ("__weakref__", "_broadcast", "_track", "name")

    def __init__(self, broadcast: _BroadcastState, track: _TrackState) -> None:
        self._broadcast = broadcast
        self._track = track
        self.name: str = track.name
        """The requested track name."""
        safety_net(self, _request_dropped, broadcast, track)

    def accept(self, info: TrackInfo | None = None) -> TrackProducer:
        """Produce the track (with `info`, whose name must match; default `TrackInfo(name)`).

        Raises `Closed` when already answered or the broadcast ended, `ValueError` when
        `info.name` differs.
        """
        if self._track.pending is None or self._broadcast.done:
            raise Closed(f"request for track {self.name!r} already answered or its broadcast ended")
        return self._broadcast.accept(self._track, info)

    def reject(self, err: BaseException) -> None:
        """Refuse the track: its consumers raise `err`. A no-op once answered."""
        if self._track.pending is not None:
            self._broadcast.reject(self._track, err)


class BroadcastDynamic:
    """A handler for tracks consumers ask for that do not exist (yet).

    While at least one is open, `BroadcastConsumer.subscribe_track` of an unknown name queues a
    `TrackRequest` instead of raising `NotFound`. Close it with `close()` (or use it as a context
    manager); requests still queued when the last handler closes are rejected with `NotFound`.
    """

    __slots__ = ("__weakref__", "_closer", "_state")

    def __init__(self, state: _BroadcastState) -> None:
        self._state = state
        state.dynamics += 1
        self._closer = safety_net(self, _dynamic_closed, state)

    async def requested_track(self) -> TrackRequest | None:
        """Wait for the next requested track name; `None` once this handler is closed or the
        broadcast ended. Concurrent requests for one name arrive once."""
        st = self._state
        while True:
            if not self._closer.alive:
                return None
            while st.requests:
                track = st.requests.popleft()
                if track.pending == _REQUESTED:
                    return TrackRequest(st, track)
            if st.done:
                return None
            await wait(st.request_waiters)

    def __aiter__(self) -> BroadcastDynamic:
        return self

    async def __anext__(self) -> TrackRequest:
        """`async for request in dynamic`: `requested_track()` until it returns `None`."""
        request = await self.requested_track()
        if request is None:
            raise StopAsyncIteration
        return request

    def close(self) -> None:
        """Stop handling requests (idempotent)."""
        self._closer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BroadcastProducer:
    """Writes one broadcast: creates its tracks and ends it.

    The caller owns it and ends it once with `finish()` or `abort(err)`. `clock` (monotonic
    seconds) drives cache expiry of its tracks; `pool` is the byte budget they share (default
    `CachePool.default()`). Publish it with `Origin.publish`.
    """

    __slots__ = ("__weakref__", "_state")

    def __init__(self, *, clock: Clock = monotonic, pool: CachePool | None = None) -> None:
        self._state = _BroadcastState(clock, pool if pool is not None else CachePool.default())
        safety_net(self, _broadcast_dropped, self._state)

    def with_meter(self, usage: Usage) -> Self:
        """Count ingress into `usage` for every track of this broadcast, however created
        (including tracks created before this call). Returns `self` (a builder)."""
        st = self._state
        st.meter = usage
        for track in st.tracks.values():
            track.set_meter(usage)
        return self

    @property
    def meter(self) -> Usage | None:
        """The ingress meter, or `None`."""
        return self._state.meter

    def _check_open(self) -> _BroadcastState:
        st = self._state
        if st.done:
            raise Closed("broadcast is closed")
        return st

    def create_track(self, name: str | TrackInfo) -> TrackProducer:
        """Create a track (`name` or full `TrackInfo`) and return its producer.

        A name a consumer already requested through a dynamic handler is fulfilled by this call.
        Raises `Duplicate` when the name exists (or is reserved), `Closed` after the broadcast
        ended.
        """
        st = self._check_open()
        info = name if isinstance(name, TrackInfo) else TrackInfo(name)
        existing = st.tracks.get(info.name)
        if existing is not None:
            if existing.pending == _REQUESTED:
                return st.accept(existing, info)
            raise Duplicate(f"track {info.name!r}")
        return TrackProducer(st.new_track(info, None))

    def unique_track(
        self, suffix: str, priority: int = 0, latency_max_s: float = 30.0
    ) -> TrackProducer:
        """Create a track named `<n><suffix>` (`0.avc3`, `1.aac`, ...), `n` counting up per
        broadcast and skipping taken names. Raises `Closed` after the broadcast ended."""
        st = self._check_open()
        while True:
            name = f"{st.unique_next}{suffix}"
            st.unique_next += 1
            if name not in st.tracks:
                return self.create_track(TrackInfo(name, priority, latency_max_s))

    def reserve_track(self, name: str) -> TrackRequest:
        """Claim `name` now and produce it later with `TrackRequest.accept`; consumers may
        subscribe meanwhile. Raises `Duplicate` when the name exists, `Closed` after the end."""
        st = self._check_open()
        if name in st.tracks:
            raise Duplicate(f"track {name!r}")
        return TrackRequest(st, st.new_track(TrackInfo(name), _RESERVED))

    def dynamic(self) -> BroadcastDynamic:
        """Open a handler for tracks consumers request before they exist (see
        `BroadcastDynamic`). The caller closes it."""
        return BroadcastDynamic(self._state)

    def track_names(self) -> list[str]:
        """Names of the produced tracks, in creation order (requests not accepted excluded)."""
        return [n for n, t in self._state.tracks.items() if t.pending is None]

    def consume(self) -> BroadcastConsumer:
        """A new unmetered consumer of this broadcast."""
        return BroadcastConsumer(self._state)

    def finish(self) -> None:
        """End cleanly: every track finishes (consumers drain, then end), unanswered requests
        are rejected, consumers' `closed()` returns, the origin un-announces it. Idempotent;
        no-op after abort."""
        self._state.end(None)

    def abort(self, err: BaseException) -> None:
        """End with `err`: every track aborts with it, consumers' `closed()` raises it, the
        origin un-announces it. No-op once ended."""
        self._state.end(err)

    @property
    def is_closed(self) -> bool:
        """True once finished or aborted."""
        return self._state.done


class BroadcastConsumer:
    """Reads one broadcast: subscribes to its tracks by name.

    Each handle carries its own egress meter (`with_meter`), handed to every `TrackConsumer` it
    makes afterwards. Drop it when done; it holds nothing the producer waits for.
    """

    __slots__ = ("_meter", "_state")

    def __init__(self, state: _BroadcastState) -> None:
        self._state = state
        self._meter: Usage | None = None

    def with_meter(self, usage: Usage) -> Self:
        """Count egress (what this handle's track consumers read) into `usage`. Returns `self`."""
        self._meter = usage
        return self

    @property
    def meter(self) -> Usage | None:
        """The egress meter, or `None`."""
        return self._meter

    def subscribe_track(self, name: str) -> TrackConsumer:
        """A consumer of track `name`, starting at its latest group.

        An unknown name is requested from the broadcast's dynamic handler (the consumer waits
        for it to be accepted, or raises the rejection). Raises `NotFound` when the name is
        unknown and no handler is open, or the broadcast ended.
        """
        st = self._state
        track = st.tracks.get(name)
        if track is None:
            if st.done or st.dynamics == 0:
                raise NotFound(f"track {name!r}")
            track = st.new_track(TrackInfo(name), _REQUESTED)
            st.requests.append(track)
            wake(st.request_waiters)
        return TrackConsumer(track, self._meter)

    def track_names(self) -> list[str]:
        """Names of the produced tracks, in creation order."""
        return [n for n, t in self._state.tracks.items() if t.pending is None]

    @property
    def finished(self) -> bool:
        """True once the broadcast ended (finish or abort)."""
        return self._state.done

    @property
    def error(self) -> BaseException | None:
        """The abort error, or `None`."""
        return self._state.error

    def same_broadcast(self, other: BroadcastConsumer) -> bool:
        """True when `other` reads the same broadcast as this handle."""
        return self._state is other._state

    async def closed(self) -> None:
        """Wait for the end: return after `finish()`, raise the abort error (or `Dropped`)."""
        st = self._state
        while True:
            if st.error is not None:
                raise st.error
            if st.finished:
                return
            await wait(st.waiters)
