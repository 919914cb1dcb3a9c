"""The durable usage ledger: `StatsHandle` deltas and final session records in SQLite.

`Ledger` is owned by whoever serves (`gateway.serve`): `await Ledger.open(path, stats)`, call
`ledger.start()` (or run `ledger.run()` as a task) for a flush every `interval_s`, give
`ledger.record_session` to the servers as a sink, and `await ledger.aclose()` last (a final
flush). The ledger has one thread of its own, which owns the SQLite connection: it serves the
loop's calls (reads, on-demand flushes) and, on its own monotonic timer, the periodic flush
(stats snapshot, deltas, one write), so the event loop does nothing per interval unless a
flush wrote session records (then the `on_write` listeners run on the loop). The sink only
appends to a bounded queue, never per frame.

No double counting across restarts: each process run has a fresh `run` id, and an interval
record is the delta of one (path, tier, role) entry since the run's last *committed* snapshot,
keyed by (node, run, interval number, path, tier, role). A restarted process counts from zero
under a new run id, so its records never overlap the old run's. Flushes run one at a time on
the ledger's thread, so no interval is written twice. A failed write changes nothing in
memory: the next flush writes the accumulated delta under the same interval number. After a
SIGKILL, what was counted since the last committed flush (at most one interval) is missing and
the file is intact (WAL, one transaction per flush). Readers keep a cursor (`seq`,
`read_since`) and see each record exactly once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from operator import attrgetter, sub
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import structlog

from gateway import ledger_db
from gateway.ledger_db import (
    LIFECYCLE,
    USAGE,
    Kind,
    LedgerError,
    LedgerRecord,
    SessionRow,
)
from gateway.threadname import name_this_thread
from model import StatsHandle

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_PATH",
    "MAX_PENDING_SESSIONS",
    "Ledger",
    "LedgerError",
    "LedgerRecord",
    "UsageRecordLike",
]

DEFAULT_PATH = Path("var") / "ledger.sqlite3"
"""Where `moqsrt serve` keeps the ledger unless configured (relative to its working
directory)."""

DEFAULT_INTERVAL_S = 1.0
"""Seconds between flushes."""

MAX_PENDING_SESSIONS = 65_536
"""Session records held in memory while the file cannot be written; past this the oldest are
dropped (and logged as `ledger.sessions_dropped`), so memory stays bounded."""

THREAD_NAME = "moqsrt-ledger"
"""The ledger thread's name (also in the kernel, for `top -H`)."""

_T = TypeVar("_T")
_log = structlog.get_logger("moqsrt.ledger")
_REQUIRED = ("session", "path", "tier", "role", *USAGE)
_COUNTERS = (*USAGE, *LIFECYCLE)
_read_counters = attrgetter(*_COUNTERS)
# A call for the thread: a function and the future of its result (None: nobody waits).
_Call = tuple[Callable[[], Any], concurrent.futures.Future[Any] | None]
_STOP: _Call = (lambda: None, None)


class UsageRecordLike(Protocol):
    """What the ledger accepts as a final session record: `gateway.session.SessionRecord`, a
    MoQ session record, or anything whose `as_dict()` has `session`, `path`, `tier`, `role`,
    `groups`, `frames`, `bytes` (and optionally `node`, `started_at`, `ended_at`)."""

    def as_dict(self) -> Mapping[str, Any]: ...


class Ledger:
    """The gateway's usage ledger in one SQLite file (WAL), written on a private thread.

    `stats` (None: session records only) is snapshotted every flush. `node` labels every record
    (default: `stats.node`). Lifetime: `open` creates the file and its directory, migrating an
    older schema, and starts the thread; `start()` starts the periodic flushes; `aclose()`
    (idempotent; also `async with`) flushes once more, then closes the file and ends the
    thread. Methods are called on the event loop thread (the one that opened the ledger).
    """

    def __init__(
        self,
        path: Path,
        stats: StatsHandle | None,
        *,
        node: str,
        interval_s: float,
        max_pending_sessions: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Use `Ledger.open`, which also starts the thread."""
        self.path = path
        """The ledger file."""
        self.node = node
        """The node id every record carries."""
        self.run_id = f"{int(time.time())}-{secrets.token_hex(6)}"
        """This process run's id: interval records of different runs never share a key."""
        self.interval_s = interval_s
        """Seconds between periodic flushes."""
        self.flushes = 0
        """Flushes that committed something (for tests and metrics; set on the thread)."""
        self.failures = 0
        """Flushes that failed (the data stays pending; set on the thread)."""
        self.committed_at = time.time()
        """Wall-clock time (s) of the last flush that committed, or had nothing due (at first:
        creation); `time.time() - committed_at` is the ledger's lag."""
        self._loop = loop
        self._stats = stats
        self._listeners: list[Callable[[], None]] = []
        self._max_pending = max_pending_sessions
        # Appended by `record_session` on the loop, drained by the thread (deque append and
        # popleft are atomic): the only state both threads touch.
        self._sessions: deque[SessionRow] = deque()
        self._dropped_on_loop = 0
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._open = True  # False once `aclose` sent the thread its last call (loop side)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        self._opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Owned by the thread from here on.
        self._conn: sqlite3.Connection | None = None
        self._due: float | None = None  # monotonic time of the next periodic flush
        self._interval = 0  # the number of the next interval record batch
        self._last_flush_at = time.time()
        # Cumulative counters (`_COUNTERS` order) of each (path, tier, role) as last committed
        # in this run.
        self._committed: dict[tuple[str, str, str], tuple[int, ...]] = {}
        self._pending: deque[SessionRow] = deque()  # taken from `_sessions`, not yet written
        self._dropped_on_thread = 0

    @classmethod
    async def open(
        cls,
        path: Path | str = DEFAULT_PATH,
        stats: StatsHandle | None = None,
        *,
        node: str | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_pending_sessions: int = MAX_PENDING_SESSIONS,
    ) -> Ledger:
        """Open (creating or migrating) the ledger at `path`. Raises `LedgerError` when the
        file is not a usable ledger, `ValueError` for a non-positive interval."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if node is None:
            node = stats.node if stats is not None else "moqsrt"
        path = Path(path)
        ledger = cls(
            path,
            stats,
            node=node,
            interval_s=interval_s,
            max_pending_sessions=max_pending_sessions,
            loop=asyncio.get_running_loop(),
        )
        ledger._thread.start()
        try:
            await asyncio.wrap_future(ledger._opened)
        except OSError as exc:
            raise LedgerError(path, f"cannot create: {exc}") from exc
        _log.info("ledger.opened", path=str(path), run=ledger.run_id, interval_s=interval_s)
        return ledger

    # -- the sink -------------------------------------------------------------------------

    def record_session(self, record: UsageRecordLike) -> None:
        """Queue a final session record for the next flush (a `SessionSink`: O(1), no I/O).

        Raises `ValueError` naming the missing field when the record lacks one of `session`,
        `path`, `tier`, `role`, `groups`, `frames`, `bytes` (`emit_session` logs it).
        """
        data = dict(record.as_dict())
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"session record without {', '.join(missing)}")
        now = time.time()
        ended = float(data.get("ended_at", now))
        row = SessionRow(
            node=str(data.get("node") or self.node),
            run=self.run_id,
            session=str(data["session"]),
            path=str(data["path"]),
            tier=str(data["tier"]),
            role=str(data["role"]),
            start_at=float(data.get("started_at", ended)),
            end_at=ended,
            groups=int(data["groups"]),
            frames=int(data["frames"]),
            bytes=int(data["bytes"]),
            record=data,
        )
        self._sessions.append(row)
        if len(self._sessions) > self._max_pending:
            with contextlib.suppress(IndexError):  # the thread took them meanwhile
                self._dropped(self._sessions.popleft(), on_loop=True)

    def _dropped(self, lost: SessionRow, *, on_loop: bool) -> None:
        if on_loop:
            self._dropped_on_loop += 1
        else:
            self._dropped_on_thread += 1
        _log.error(
            "ledger.sessions_dropped",
            session=lost.session,
            dropped=self._dropped_on_loop + self._dropped_on_thread,
            detail="the ledger file has not been writable for a long time",
        )

    def on_write(self, callback: Callable[[], None]) -> None:
        """Call `callback()` on the loop after every flush that wrote session records (the
        webhook sink's wake-up)."""
        self._listeners.append(callback)

    # -- flushing -------------------------------------------------------------------------

    def start(self) -> None:
        """Flush every `interval_s` on the ledger's thread, on a monotonic schedule, until
        `stop()` or `aclose()` (idempotent). The event loop takes no part in it."""
        if self._open:
            self._calls.put((self._start_in_thread, None))

    def stop(self) -> None:
        """Stop the periodic flushes (idempotent; `flush()` still works)."""
        if self._open:
            self._calls.put((self._stop_in_thread, None))

    async def run(self) -> None:
        """`start()`, then wait until cancelled, then `stop()` (the final flush is
        `aclose()`'s). Waiting costs the loop nothing per interval."""
        self.start()
        try:
            await self._loop.create_future()
        finally:
            self.stop()

    async def flush(self) -> bool:
        """Write the deltas since the last committed flush and the queued session records in
        one transaction, now. Returns True when committed (or nothing was due); on failure it
        logs `ledger.write_failed`, keeps everything pending for the next flush and returns
        False (also when closed). It runs on the ledger's thread, one flush at a time with the
        periodic ones."""
        if not self._open:
            return False
        return await self._submit(self._flush_once)

    def _start_in_thread(self) -> None:
        if self._due is None:
            self._due = time.monotonic() + self.interval_s

    def _stop_in_thread(self) -> None:
        self._due = None

    def _flush_once(self) -> bool:
        """One flush with its bookkeeping (thread only); see `flush`."""
        sessions, pending = self._sessions, self._pending
        with contextlib.suppress(IndexError):  # the loop may drop the oldest meanwhile
            while sessions:
                pending.append(sessions.popleft())
        while len(pending) > self._max_pending:
            self._dropped(pending.popleft(), on_loop=False)
        try:
            wrote = self._flush_in_thread()
        except Exception as exc:  # noqa: BLE001  (usage must outlive any write failure)
            self.failures += 1
            _log.error("ledger.write_failed", path=str(self.path), error=str(exc))
            return False
        self.committed_at = time.time()
        if wrote:
            self.flushes += 1
        if pending:
            pending.clear()
            if self._listeners:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                    self._loop.call_soon_threadsafe(self._notify)
        return True

    def _notify(self) -> None:
        for callback in self._listeners:
            try:
                callback()
            except Exception:  # noqa: BLE001  (one broken listener must not starve the others)
                _log.exception("ledger.listener_failed", listener=repr(callback))

    def _flush_in_thread(self) -> bool:
        """Snapshot, compute the deltas and write them with the pending session records; on
        success advance the committed state. Thread only: it owns `_committed`, `_interval`,
        `_last_flush_at` and `_pending`. Returns False when nothing was due."""
        conn = self._conn
        if conn is None:
            raise LedgerError(self.path, "closed")
        now = time.time()
        rows: list[tuple[Any, ...]] = []
        snapshot: dict[tuple[str, str, str], tuple[int, ...]] = {}
        committed = self._committed
        if self._stats is not None:
            interval_params = ledger_db.interval_params
            node, run, number, start = self.node, self.run_id, self._interval, self._last_flush_at
            for entry in self._stats.snapshot():
                key = (entry.path, entry.tier, entry.role)
                totals: tuple[int, ...] = _read_counters(entry)
                before = committed.get(key)
                if totals == before:
                    continue
                snapshot[key] = totals
                counts = totals if before is None else tuple(map(sub, totals, before))
                rows.append(interval_params(node, run, number, *key, start, now, counts, totals))
        if self._pending:
            rows.extend(map(ledger_db.session_params, self._pending))
        if not rows:
            return False
        ledger_db.write_rows(conn, rows)
        self._interval += 1
        self._last_flush_at = now
        committed.update(snapshot)
        return True

    # -- the thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        """The ledger thread: open the file, then serve calls and periodic flushes until
        `_STOP`, then close the file."""
        name_this_thread(THREAD_NAME)
        try:
            self._conn = ledger_db.connect(self.path)
        except BaseException as exc:  # noqa: BLE001  (handed to `open`)
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        calls = self._calls
        try:
            while True:
                due = self._due
                try:
                    if due is None:
                        call = calls.get()
                    else:
                        call = calls.get(timeout=max(0.0, due - time.monotonic()))
                except queue.Empty:
                    call = None
                if call is _STOP:
                    return
                if call is not None:
                    self._run_call(call)
                due = self._due
                if due is not None and (now := time.monotonic()) >= due:
                    self._flush_once()
                    # The next flush keeps the schedule's phase (no drift from the work); a
                    # flush that overran whole intervals skips them instead of catching up.
                    due += self.interval_s
                    if due <= now:
                        due += (now - due) // self.interval_s * self.interval_s + self.interval_s
                    if self._due is not None:
                        self._due = due
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            # Calls queued after `_STOP` (none when the loop side keeps to `_open`).
            while True:
                try:
                    _fn, future = calls.get_nowait()
                except queue.Empty:
                    break
                if future is not None and future.set_running_or_notify_cancel():
                    future.set_exception(LedgerError(self.path, "closed"))

    @staticmethod
    def _run_call(call: _Call) -> None:
        fn, future = call
        if future is None:
            fn()
            return
        if not future.set_running_or_notify_cancel():
            return  # the caller was cancelled before it ran
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001  (handed to the caller)
            future.set_exception(exc)
        else:
            future.set_result(result)

    async def _submit(self, fn: Callable[[], _T]) -> _T:
        """Run `fn()` on the ledger's thread and return its result. Raises `LedgerError`
        when the ledger is closed."""
        if not self._open:
            raise LedgerError(self.path, "closed")
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._calls.put((fn, future))
        return await asyncio.wrap_future(future)

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run `fn(conn, *args, **kwargs)` on the ledger's thread with its connection."""

        def call() -> _T:
            conn = self._conn
            if conn is None:
                raise LedgerError(self.path, "closed")
            return fn(conn, *args, **kwargs)

        return await self._submit(call)

    # -- reads (for the HTTP API, the webhook and tests) ----------------------------------

    async def read_since(
        self, since: int, *, limit: int = 1000, kind: Kind | None = None
    ) -> list[LedgerRecord]:
        """Records with `seq > since` in cursor order, at most `limit` (see
        `gateway.ledger_db.read_since`); the next call passes the last record's `seq`."""
        return await self._call(ledger_db.read_since, since, limit=limit, kind=kind)

    async def get_cursor(self, name: str) -> int:
        """The durable cursor `name` (0 when never stored)."""
        return await self._call(ledger_db.get_cursor, name)

    async def set_cursor(self, name: str, seq: int) -> None:
        """Store the durable cursor `name` (a reader's position, e.g. the webhook's)."""
        await self._call(ledger_db.set_cursor, name, seq)

    # -- lifetime -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Flush once more, close the file and end the thread (idempotent). Records still
        pending after a failed final flush are logged as `ledger.unwritten`."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        await self.flush()
        unwritten = await self._submit(lambda: len(self._pending) + len(self._sessions))
        if unwritten:
            _log.error("ledger.unwritten", sessions=unwritten)
        self._open = False
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._calls.put((lambda: done.set_result(None), None))
        self._calls.put(_STOP)
        await asyncio.wrap_future(done)
        self._thread.join(timeout=1.0)  # it only closes the file now
        _log.info("ledger.closed", path=str(self.path), flushes=self.flushes)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
