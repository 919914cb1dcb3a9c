"""Groups: an ordered run of frames (a GOP for video, one frame for audio), written by one
`GroupProducer` and read independently by any number of `GroupConsumer`s.

A group lives in its track's cache from creation until evicted (age, byte budget, size) or until
the track aborts. `finish()` ends it cleanly (readers get `None` after the last frame);
`abort(err)` drops its frames and every reader gets `err`; a producer dropped without either
logs a warning and readers get `Dropped`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from model._wait import Waiters, logger, safety_net, wait, wake
from model.errors import Closed, Dropped, Evicted
from model.usage import link, unlink

if TYPE_CHECKING:
    from model.pool import CachePool
    from model.usage import Usage

__all__ = ["GroupConsumer", "GroupProducer"]

_INF = float("inf")


class _GroupState:
    """What producer and consumers of one group share. Loop thread only.

    Hot-path bookkeeping: `room` is how many more bytes the group may take before it outgrows
    the pool's `max_group_bytes`, and -1 once the group ended, so a write needs one subtraction
    and one comparison to check both. `frames` is never rebound (readers cache it).
    """

    __slots__ = (
        "bytes0",
        "charged",
        "count",
        "done",
        "error",
        "finished",
        "frames",
        "frames0",
        "limit",
        "meter",
        "pool",
        "room",
        "sequence",
        "superseded_s",
        "total",
        "track_name",
        "waiters",
    )

    def __init__(
        self, sequence: int, track_name: str, meter: Usage | None, pool: CachePool
    ) -> None:
        self.sequence = sequence
        self.track_name = track_name
        self.frames: list[bytes] = []
        self.limit = pool.max_group_bytes
        self.room = self.limit  # bytes left before the size cap; -1 once ended
        self.charged = 0  # bytes charged to the pool, recorded when the group ends
        self.count = 0  # frame count recorded at finish (survives eviction)
        self.finished = False
        self.done = False  # finished or aborted: no more writes
        self.error: BaseException | None = None
        self.waiters: Waiters = []
        self.pool = pool
        self.superseded_s = _INF  # when a newer group appeared (the cache's age reference)
        self.total = 0  # bytes written, recorded when the group ends (survives release)
        # The ingress meter (or None) reads len(frames) and limit - room live while the group
        # is open, from these starting points, and adds them when it ends (see model.usage.link).
        self.frames0 = 0
        self.bytes0 = 0
        self.meter = meter
        if meter is not None:
            link(meter, self)

    @property
    def nbytes(self) -> int:
        """Payload bytes this group still charges to the pool."""
        return self.charged if self.room < 0 else self.limit - self.room

    def _end(self) -> None:
        room = self.room
        if room >= 0:
            meter = self.meter
            if meter is not None:
                unlink(meter, self)  # while room and frames still say what was written
            self.charged = self.total = self.limit - room
            self.room = -1
        self.done = True

    @property
    def written_bytes(self) -> int:
        """Payload bytes written so far (kept after the group ended, even once released)."""
        room = self.room
        return self.limit - room if room >= 0 else self.total

    def set_meter(self, meter: Usage | None) -> None:
        """Count the rest of this open group's writes into `meter` instead."""
        if self.done or meter is self.meter:
            return
        if self.meter is not None:
            unlink(self.meter, self)
        self.meter = meter
        if meter is not None:
            link(meter, self)

    def write(self, payload: bytes) -> None:
        """Append one frame: charge the pool, wake readers (the ingress meter reads the group).

        Raises `Closed` once ended; a frame that would take the group past the size cap evicts
        the group (readers get `Evicted`) and raises `Closed`.
        """
        n = len(payload)
        room = self.room - n
        if room < 0:
            self.overflow()
        self.room = room
        self.frames.append(payload)
        pool = self.pool
        pool_room = pool.room_bytes - n
        pool.room_bytes = pool_room
        if pool_room < 0:
            pool.evict()
        if self.waiters:
            wake(self.waiters)

    def overflow(self) -> None:
        """A write found no room: raise `Closed`, evicting the group first if it was open."""
        if not self.done:
            self.drop(Evicted(self.track_name, self.sequence, "size"))
        raise Closed(f"group {self.sequence} of track {self.track_name!r} is closed")

    def finish(self) -> None:
        """End cleanly (idempotent; ignored after abort)."""
        if self.done:
            return
        self._end()
        self.finished = True
        self.count = len(self.frames)
        if self.waiters:
            wake(self.waiters)

    def release(self) -> None:
        """Stop charging this group's bytes to the pool (it left the cache)."""
        self._end()
        self.pool.room_bytes += self.charged
        self.charged = 0

    def drop(self, err: BaseException) -> None:
        """Abort or evict: forget the frames, release the bytes, readers get `err`.

        A finished group keeps `count`, so a reader that already read every frame still ends
        cleanly. Ignored when the group already carries an error.
        """
        if self.error is not None:
            return
        self.error = err
        self._end()  # before the frames go: the ingress meter counts them
        self.frames.clear()
        self.release()
        if self.waiters:
            wake(self.waiters)


def _group_dropped(state: _GroupState) -> None:
    """Finalizer of a `GroupProducer` handle (static: it must not reference the handle)."""
    if not state.done:
        logger.warning(
            "group %d of track %r dropped without finish() or abort()",
            state.sequence,
            state.track_name,
        )
        state.drop(Dropped(f"group {state.sequence} of track {state.track_name!r}"))


class GroupProducer:
    """Writes the frames of one group, in order. Made by `TrackProducer.append_group` /
    `create_group`; the caller owns it and must end it once with `finish()` or `abort(err)`.

    Frames are `bytes` (for media tracks, the hang legacy frame). Writing counts one frame and
    its payload bytes on the broadcast's ingress meter, if any.
    """

    __slots__ = ("__weakref__", "_state", "sequence")

    def __init__(self, state: _GroupState) -> None:
        self._state = state
        self.sequence: int = state.sequence
        """The group's sequence number within its track (from 0)."""
        safety_net(self, _group_dropped, state)

    def write_frame(self, payload: bytes) -> None:
        """Append one frame (`payload` is kept, not copied).

        Raises `Closed` after `finish()`/`abort()` or once the cache evicted the group: a group
        growing past `CachePool.max_group_bytes` is evicted by the write that overflows it (which
        raises); a write that takes the pool over its budget when only latest groups are cached
        may evict this very group, the largest (that write returns, the next raises). Either
        way the track goes on with its next group.
        """
        # Inlined copy of _GroupState.write: this is the per-frame hot path.
        st = self._state
        n = len(payload)
        room = st.room - n
        if room < 0:
            st.overflow()
        st.room = room
        st.frames.append(payload)
        pool = st.pool
        pool_room = pool.room_bytes - n
        pool.room_bytes = pool_room
        if pool_room < 0:
            pool.evict()
        if st.waiters:
            wake(st.waiters)

    def finish(self) -> None:
        """End the group cleanly: readers get `None` after the last frame. Idempotent; a no-op
        after `abort()` or eviction."""
        self._state.finish()

    def abort(self, err: BaseException) -> None:
        """End the group with `err`: its frames are dropped and every reader raises `err`.
        A no-op when the group already ended with an error."""
        self._state.drop(err)

    @property
    def frame_count(self) -> int:
        """Frames written so far (0 after an abort dropped them)."""
        return len(self._state.frames)

    @property
    def is_closed(self) -> bool:
        """True once the group finished, aborted or was evicted (writes would raise `Closed`)."""
        return self._state.done


class GroupConsumer:
    """Reads one group's frames in order, independently of other readers. Made by
    `TrackConsumer.next_group` / `fetch_group`; dropping it is all the cleanup it needs.

    `next_frame()` returns each frame once, then `None` at a clean end; it raises the producer's
    abort error, `Evicted` if the cache dropped the group before this reader got to the end, or
    `Dropped`. Each frame returned counts one frame and its bytes on this consumer's meter.
    """

    __slots__ = ("_frames", "_index", "_meter", "_state", "sequence")

    def __init__(self, state: _GroupState, meter: Usage | None) -> None:
        self._state = state
        self._frames = state.frames  # never rebound; cleared in place when dropped
        self._index = 0
        self._meter = meter
        self.sequence: int = state.sequence
        """The group's sequence number within its track."""

    async def next_frame(self) -> bytes | None:
        """Wait for and return the next frame, or `None` once the group finished and every
        frame was read. Raises the abort error, `Evicted` or `Dropped` (see the class)."""
        frames = self._frames
        while True:
            i = self._index
            if i < len(frames):
                self._index = i + 1
                frame = frames[i]
                meter = self._meter
                if meter is not None:
                    meter.frames += 1
                    meter.bytes += len(frame)
                return frame
            st = self._state
            if st.finished and i >= st.count:
                return None
            if st.error is not None:
                raise st.error
            await wait(st.waiters)

    def __aiter__(self) -> GroupConsumer:
        return self

    async def __anext__(self) -> bytes:
        """`async for frame in group`: like `next_frame()`, ending the loop at a clean end."""
        # Mirrors next_frame() instead of awaiting it: one coroutine less per frame read, on
        # the egress hot path that bench_model's metered/unmetered ratio measures.
        frames = self._frames
        while True:
            i = self._index
            if i < len(frames):
                self._index = i + 1
                frame = frames[i]
                meter = self._meter
                if meter is not None:
                    meter.frames += 1
                    meter.bytes += len(frame)
                return frame
            st = self._state
            if st.finished and i >= st.count:
                raise StopAsyncIteration
            if st.error is not None:
                raise st.error
            await wait(st.waiters)

    def read_ready(self) -> list[bytes]:
        """Return (and count) every frame already written that this reader has not read yet,
        without waiting; `[]` when none is. Never raises: `poll_end()` (or `next_frame()`) says
        how the group ended."""
        i = self._index
        frames = self._frames
        if i >= len(frames):
            return []
        ready = frames[i:]
        self._index = end = len(frames)
        meter = self._meter
        if meter is not None:
            meter.frames += end - i
            if i:
                meter.bytes += sum(map(len, ready))
            else:  # from the start: the bytes are all the group got so far, no per-frame sum
                st = self._state
                room = st.room
                meter.bytes += st.limit - room if room >= 0 else st.total
        return ready

    def poll_end(self) -> bool:
        """Whether this reader is done with the group, without waiting: True once it read
        every frame of a group that finished cleanly, False while frames may still come (or
        are ready: `read_ready()`). Raises the abort error, `Evicted` or `Dropped` once the
        group ended that way and nothing is left to read (as `next_frame()` would)."""
        i = self._index
        if i < len(self._frames):
            return False
        st = self._state
        if st.finished and i >= st.count:
            return True
        if st.error is not None:
            raise st.error
        return False

    async def read_all(self) -> list[bytes]:
        """Wait for the group to end and return the frames not read yet (each counted).
        Raises like `next_frame()`."""
        out: list[bytes] = []
        while (frame := await self.next_frame()) is not None:
            out.append(frame)
        return out
