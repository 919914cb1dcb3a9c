"""The publisher half of a moq-lite session: serves ANNOUNCE_REQUEST and SUBSCRIBE from the model.

One `Publisher` per session, fed the session's events (`handle`). An Announce stream gets the
live set under its prefix and then every change (`Origin.announced`), for as long as the peer
keeps it open (never FINed by us). A Subscribe stream gets SUBSCRIBE_OK, then the track's latest
group and every newer one, each on its own uni stream, one group at a time; the subscribe stream
is FINed once the track finished and its last group was delivered, or reset with the moq-rs code
(unknown broadcast 0x36, unknown track 0x33). Each subscription runs as one task in the
publisher's task set; `aclose()` cancels and drains them.

Metering and congestion: a subscription's `BroadcastConsumer` carries the egress meter that
`meter_for(path)` hands out (the session's stats guard for that path and tier), and frames are
read out of the model only in the same turn as they are handed to the connection, so the meter
counts exactly what was handed over (the SRT egress rule). `SendBudget` caps what
the connection may hold unacknowledged; when it is full, subscriptions wait their turn by
priority (higher first), and one whose track moved on to a newer group drops the group it was
sending (stream reset, code OLD) and skips to the latest: a slow subscriber never holds memory
or stalls the publisher, since the model never waits for a consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable
from typing import Final

import structlog

from gateway.moq.session import (
    AnnounceCancelled,
    AnnounceRequested,
    GroupStopped,
    MoqEvent,
    MoqSession,
    SessionEnded,
    SubscribeCancelled,
    SubscribeRequested,
    SubscribeUpdated,
)
from gateway.moq.wire import (
    Announce,
    StreamCode,
    Subscribe,
    SubscribeOk,
    encode_varint,
)
from model import (
    BroadcastConsumer,
    Evicted,
    GroupConsumer,
    ModelError,
    NotFound,
    Origin,
    TrackConsumer,
    Usage,
    normalize_path,
    path_has_prefix,
    wait_any,
)

__all__ = ["DEFAULT_BACKLOG_BYTES", "TRACK_WAIT_S", "Publisher", "SendBudget"]

DEFAULT_BACKLOG_BYTES: Final = 1 << 20
"""Default cap on what one connection may hold handed-over but unacknowledged (bytes)."""

TRACK_WAIT_S: Final = 5.0
"""How long a SUBSCRIBE for a track the live broadcast does not have yet (its catalog before
the importer saw every stream's config) waits for it before the NOT_FOUND reset."""

_TRACK_POLL_S: Final = 0.05
_CONGESTION_POLL_S: Final = 0.05  # a congested subscription re-checks for a newer group
_DRAIN_WAIT_S: Final = 5.0  # the last group's bytes get this long to be acked before the FIN

_log = structlog.get_logger("moqsrt.moq.publisher")


class SendBudget:
    """Caps what one connection holds unacknowledged, and orders waiters by priority.

    `backlog()` (the adapter's) returns the bytes handed to the connection and not yet
    acknowledged (`stream_backlog(id)` the same for one stream); at or above `cap_bytes` the
    link is congested. `poke()` (the adapter calls it after each transmit) wakes the
    highest-priority waiter when there is room again. Loop thread only.
    """

    def __init__(
        self,
        backlog: Callable[[], int],
        stream_backlog: Callable[[int], int],
        cap_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> None:
        self._backlog = backlog
        self.stream_backlog = stream_backlog
        """Bytes of one stream handed over and not yet acknowledged (0 once all acked)."""
        self.cap_bytes = cap_bytes
        """The cap (bytes)."""
        self.peak_bytes = 0
        """The highest backlog seen when a sender asked (bytes): evidence of the bound."""
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def backlog(self) -> int:
        """Bytes handed over and not yet acknowledged, now."""
        return self._backlog()

    def may_send(self, priority: int) -> bool:
        """True when a sender of `priority` may hand over more now: there is room and no
        waiter of a higher priority is queued."""
        backlog = self._backlog()
        if backlog > self.peak_bytes:
            self.peak_bytes = backlog
        if backlog >= self.cap_bytes:
            return False
        waiters = self._waiters
        return not waiters or -waiters[0][0] <= priority

    async def wait(self, priority: int, timeout_s: float) -> bool:
        """Queue for room at `priority`; True when woken with room, False after `timeout_s`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (-priority, next(self._order), future)
        heapq.heappush(self._waiters, entry)
        try:
            async with asyncio.timeout(timeout_s):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)

    def poke(self) -> None:
        """Wake the highest-priority waiter if there is room (the adapter, after a transmit)."""
        waiters = self._waiters
        while waiters and self._backlog() < self.cap_bytes:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)
                return


class _Subscription:
    __slots__ = ("cancelled", "group_stream", "last_group", "priority", "request", "stream_id")

    def __init__(self, stream_id: int, request: Subscribe) -> None:
        self.stream_id = stream_id
        self.request = request
        self.priority = request.priority
        self.cancelled = False
        self.group_stream: int | None = None
        self.last_group: int | None = None

    def stopped(self) -> bool:
        # A method, not the attribute: the flag flips while a coroutine awaits.
        return self.cancelled


class Publisher:
    """Serves one session's Announce and Subscribe streams from `origin`.

    `flush()` is the adapter's: called after output was queued on `session`, it sends
    `session.data_to_send()` (coalescing is the adapter's business). `meter_for(path)` returns
    the egress meter of this session for a broadcast path (opening its stats guard on first
    use), or `None` for an unmetered session. `root`: only broadcasts under this path are
    visible through the session (`""`: all). `budget`: the connection's `SendBudget`.
    """

    def __init__(
        self,
        session: MoqSession,
        origin: Origin,
        *,
        flush: Callable[[], None],
        budget: SendBudget,
        meter_for: Callable[[str], Usage | None] = lambda path: None,
        root: str = "",
        track_wait_s: float = TRACK_WAIT_S,
    ) -> None:
        self._session = session
        self._origin = origin
        self._flush = flush
        self.budget = budget
        """The connection's send budget."""
        self._meter_for = meter_for
        self.root = normalize_path(root)
        """Visible path root."""
        self._track_wait_s = track_wait_s
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._subs: dict[int, _Subscription] = {}
        self._by_group: dict[int, _Subscription] = {}
        self.subscriptions_served = 0
        """SUBSCRIBEs answered with SUBSCRIBE_OK so far."""
        self.skipped_groups = 0
        """Groups dropped part-way, or never started, because the link was congested."""
        self._closed = False

    # -- events --

    def handle(self, event: MoqEvent) -> None:
        """React to one session event (other events are ignored)."""
        if self._closed:
            return
        if isinstance(event, AnnounceRequested):
            self._start(event.stream_id, self._announce(event.stream_id, event.request.prefix))
        elif isinstance(event, SubscribeRequested):
            sub = _Subscription(event.stream_id, event.request)
            self._subs[event.stream_id] = sub
            self._start(event.stream_id, self._serve(sub))
        elif isinstance(event, SubscribeUpdated):
            updated = self._subs.get(event.stream_id)
            if updated is not None:
                updated.priority = event.update.priority
        elif isinstance(event, SubscribeCancelled):
            cancelled = self._subs.get(event.stream_id)
            if cancelled is not None:
                cancelled.cancelled = True
                if event.code is not None:
                    self._cancel(event.stream_id)
        elif isinstance(event, AnnounceCancelled):
            self._cancel(event.stream_id)
        elif isinstance(event, GroupStopped):
            owner = self._by_group.get(event.stream_id)
            if owner is not None:
                owner.group_stream = None
        elif isinstance(event, SessionEnded):
            self._closed = True
            for task in self._tasks.values():
                task.cancel()

    @property
    def subscriptions(self) -> int:
        """Subscriptions being served now."""
        return len(self._subs)

    async def aclose(self) -> None:
        """Cancel every announce and subscription task and wait for them (idempotent)."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, stream_id: int, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task = asyncio.get_running_loop().create_task(coro, name=f"moq-stream-{stream_id}")
        self._tasks[stream_id] = task
        task.add_done_callback(lambda t: self._done(stream_id, t))

    def _done(self, stream_id: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(stream_id) is task:
            del self._tasks[stream_id]
        self._subs.pop(stream_id, None)
        if not task.cancelled() and task.exception() is not None:
            _log.error("moq.publisher_failed", stream=stream_id, error=repr(task.exception()))

    def _cancel(self, stream_id: int) -> None:
        task = self._tasks.get(stream_id)
        if task is not None:
            task.cancel()

    # -- announce --

    def _visible_prefix(self, prefix: str) -> str | None:
        """The origin prefix to watch for a requested `prefix`, or None when nothing under it
        is visible through `root`."""
        if path_has_prefix(prefix, self.root):
            return prefix
        if path_has_prefix(self.root, prefix):
            return self.root
        return None

    async def _announce(self, stream_id: int, raw_prefix: str) -> None:
        session = self._session
        try:
            prefix = normalize_path(raw_prefix)
        except ValueError:
            session.reset(stream_id, StreamCode.UNROUTABLE)
            self._flush()
            return
        watch = self._visible_prefix(prefix)
        if watch is None:
            return  # nothing to announce: the stream stays open and silent
        with self._origin.announced(watch) as announced:
            async for event in announced:
                if not session.can_send(stream_id):
                    return
                suffix = event.path[len(prefix) :].lstrip("/") if prefix else event.path
                session.announce(stream_id, Announce(active=event.active, suffix=suffix))
                self._flush()

    # -- subscribe --

    async def _track(self, broadcast: BroadcastConsumer, name: str) -> TrackConsumer | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._track_wait_s
        while True:
            try:
                return broadcast.subscribe_track(name)
            except NotFound:
                if broadcast.finished or loop.time() >= deadline:
                    return None
            await asyncio.sleep(_TRACK_POLL_S)

    async def _serve(self, sub: _Subscription) -> None:
        session = self._session
        request = sub.request
        stream_id = sub.stream_id
        try:
            path = normalize_path(request.broadcast)
        except ValueError:
            path = ""
        broadcast = None
        if path and path_has_prefix(path, self.root):
            broadcast = self._origin.get(path)
        if broadcast is None:
            session.reset(stream_id, StreamCode.UNROUTABLE)
            self._flush()
            return
        meter = self._meter_for(path)
        if meter is not None:
            broadcast = broadcast.with_meter(meter)
        track = await self._track(broadcast, request.track)
        if track is None:
            session.reset(stream_id, StreamCode.NOT_FOUND)
            self._flush()
            return
        session.subscribe_ok(stream_id, SubscribeOk(priority=request.priority))
        self.subscriptions_served += 1
        self._flush()
        try:
            await self._groups(sub, track)
        except ModelError as exc:
            code = StreamCode.EVICTED if isinstance(exc, Evicted) else StreamCode.INTERNAL
            session.reset(stream_id, code)
            self._flush()
            return
        except asyncio.CancelledError:
            session.reset(stream_id, StreamCode.CANCELLED)
            self._flush()
            raise
        await self._drain(sub)
        session.finish(stream_id)
        self._flush()

    async def _groups(self, sub: _Subscription, track: TrackConsumer) -> None:
        """Serve groups until the track finishes, the peer cancels or the end group passed."""
        end = sub.request.end_group
        budget = self.budget
        last: int | None = None
        while not sub.stopped():
            if not budget.may_send(sub.priority):
                while not await budget.wait(sub.priority, _CONGESTION_POLL_S):
                    if sub.stopped():
                        return
                track.skip_to_latest()  # resume at the newest group, not where the stall began
            group = await track.next_group()
            if group is None or sub.stopped():
                return
            if end is not None and group.sequence > end:
                return
            if last is not None and group.sequence > last + 1:
                self.skipped_groups += group.sequence - last - 1  # never started
            last = group.sequence
            await self._send_group(sub, track, group)

    async def _send_group(
        self, sub: _Subscription, track: TrackConsumer, group: GroupConsumer
    ) -> None:
        """Hand `group`'s frames to a new group stream as they come, FIN it at the end.

        Frames are read (and so billed) only right before they are handed over: the task
        waits for news with `wait_any` (which reads nothing), checks that the stream is still
        wanted, then takes what is ready with `read_ready()` and sends all of it in the same
        turn, so a peer's STOP_SENDING can never fall between a read and its send. While
        catching up after a skip, the frames already in the newest group go out together:
        the budget's overshoot is at most that group's ready part.
        """
        session = self._session
        budget = self.budget
        stream_id = session.open_group(sub.request.subscribe_id, group.sequence)
        sub.group_stream = sub.last_group = stream_id
        self._by_group[stream_id] = sub
        try:
            while True:
                if sub.group_stream != stream_id or not session.can_send(stream_id):
                    return  # the peer stopped this group (the session reset it)
                if not budget.may_send(sub.priority):
                    while not await budget.wait(sub.priority, _CONGESTION_POLL_S):
                        latest = track.latest_sequence
                        if sub.stopped() or (latest is not None and latest > group.sequence):
                            # Congested and the track moved on: drop this group, skip ahead.
                            self.skipped_groups += 1
                            session.reset(stream_id, StreamCode.OLD)
                            self._flush()
                            return
                    continue
                frames = group.read_ready()
                if frames:
                    for frame in frames:
                        session.send(stream_id, encode_varint(len(frame)) + frame)
                    self._flush()
                    continue
                if group.poll_end():
                    session.finish(stream_id)
                    self._flush()
                    return
                await wait_any((group,))
        except ModelError as exc:
            code = StreamCode.EVICTED if isinstance(exc, Evicted) else StreamCode.INTERNAL
            session.reset(stream_id, code)
            self._flush()
        except asyncio.CancelledError:
            session.reset(stream_id, StreamCode.CANCELLED)
            raise
        finally:
            self._by_group.pop(stream_id, None)
            if sub.group_stream == stream_id:
                sub.group_stream = None

    async def _drain(self, sub: _Subscription) -> None:
        """Give the last group's bytes time to be acknowledged before the subscribe FIN (moq-rs
        drops group streams whose subscription is gone)."""
        last = sub.last_group
        if last is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DRAIN_WAIT_S
        while self.budget.stream_backlog(last) > 0 and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # acks come with no event to wait on
