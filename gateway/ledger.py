"""The durable usage ledger: `StatsHandle` deltas and final session records in SQLite.

`Ledger` is owned by whoever serves (`gateway.serve`): `await Ledger.open(path, stats)`, run
`ledger.run()` as a task (a flush every `interval_s`), give `ledger.record_session` to the
servers as a sink, and `await ledger.aclose()` last (a final flush). The stats snapshot, the
deltas and every SQLite call run on the ledger's own thread, once per interval, never per
frame; the sink only appends to a bounded queue.

No double counting across restarts: each process run has a fresh `run` id, and an interval
record is the delta of one (path, tier, role) entry since the run's last *committed* snapshot,
keyed by (node, run, interval number, path, tier, role). A restarted process counts from zero
under a new run id, so its records never overlap the old run's. A failed write changes nothing
in memory: the next flush writes the accumulated delta under the same interval number. After a
SIGKILL, what was counted since the last committed flush (at most one interval) is missing and
the file is intact (WAL, one transaction per flush). Readers keep a cursor (`seq`,
`read_since`) and see each record exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from operator import attrgetter, sub
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import structlog

from gateway import ledger_db
from gateway.ledger_db import (
    LIFECYCLE,
    USAGE,
    IntervalRow,
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

_T = TypeVar("_T")
_log = structlog.get_logger("moqsrt.ledger")
_REQUIRED = ("session", "path", "tier", "role", *USAGE)
_COUNTERS = (*USAGE, *LIFECYCLE)
_read_counters = attrgetter(*_COUNTERS)


class UsageRecordLike(Protocol):
    """What the ledger accepts as a final session record: `gateway.session.SessionRecord`, a
    MoQ session record, or anything whose `as_dict()` has `session`, `path`, `tier`, `role`,
    `groups`, `frames`, `bytes` (and optionally `node`, `started_at`, `ended_at`)."""

    def as_dict(self) -> Mapping[str, Any]: ...


class Ledger:
    """The gateway's usage ledger in one SQLite file (WAL), written on a private thread.

    `stats` (None: session records only) is snapshotted every flush. `node` labels every record
    (default: `stats.node`). Lifetime: `open` creates the file and its directory, migrating an
    older schema; `aclose()` (idempotent; also `async with`) flushes once more, then closes the
    file and the thread. Methods are called on the event loop thread.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        path: Path,
        stats: StatsHandle | None,
        *,
        node: str,
        interval_s: float,
        max_pending_sessions: int,
    ) -> None:
        """Use `Ledger.open`; this takes ownership of an already-open connection."""
        self.path = path
        """The ledger file."""
        self.node = node
        """The node id every record carries."""
        self.run_id = f"{int(time.time())}-{secrets.token_hex(6)}"
        """This process run's id: interval records of different runs never share a key."""
        self.interval_s = interval_s
        """Seconds between flushes of `run()`."""
        self._conn: sqlite3.Connection | None = conn
        self._executor = executor
        self._stats = stats
        self._interval = 0  # the number of the next interval record batch
        self._last_flush_at = time.time()
        # Cumulative counters (`_COUNTERS` order) of each (path, tier, role) as last committed
        # in this run; read and written on the ledger's thread only.
        self._committed: dict[tuple[str, str, str], tuple[int, ...]] = {}
        self._sessions: deque[SessionRow] = deque()
        self._max_pending = max_pending_sessions
        self._dropped = 0
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self.flushes = 0
        self.committed_at = time.time()
        """Wall-clock time (s) of the last flush that committed, or had nothing due (at first:
        creation); `time.time() - committed_at` is the ledger's lag."""
        """Flushes that committed (for tests and metrics)."""
        self.failures = 0
        """Flushes that failed (the data stays pending)."""

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
        executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="moqsrt-ledger",
            initializer=partial(name_this_thread, "moqsrt-ledger"),
        )
        path = Path(path)
        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                executor, ledger_db.connect, path
            )
        except OSError as exc:
            executor.shutdown(wait=False)
            raise LedgerError(path, f"cannot create: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        if node is None:
            node = stats.node if stats is not None else "moqsrt"
        ledger = cls(
            conn,
            executor,
            path,
            stats,
            node=node,
            interval_s=interval_s,
            max_pending_sessions=max_pending_sessions,
        )
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
            lost = self._sessions.popleft()
            self._dropped += 1
            _log.error(
                "ledger.sessions_dropped",
                session=lost.session,
                dropped=self._dropped,
                detail="the ledger file has not been writable for a long time",
            )

    def on_write(self, callback: Callable[[], None]) -> None:
        """Call `callback()` on the loop after every flush that wrote session records (the
        webhook sink's wake-up)."""
        self._listeners.append(callback)

    # -- flushing -------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write the deltas since the last committed flush and the queued session records in
        one transaction. Returns True when committed (or nothing was due); on failure it logs
        `ledger.write_failed`, keeps everything pending for the next flush and returns False.

        The snapshot, the deltas and the write all run on the ledger's thread
        (`StatsHandle.snapshot` may run on any thread), so the event loop only hands over the
        queued session records."""
        async with self._lock:
            if self._conn is None:
                return False
            sessions = list(self._sessions)
            try:
                wrote = await self._call(self._flush_in_thread, time.time(), sessions)
            except Exception as exc:  # noqa: BLE001  (usage must outlive any write failure)
                self.failures += 1
                _log.error("ledger.write_failed", path=str(self.path), error=str(exc))
                return False
            for _ in sessions:
                self._sessions.popleft()
            self.committed_at = time.time()
            if wrote:
                self.flushes += 1
            if sessions:
                for callback in self._listeners:
                    callback()
            return True

    def _flush_in_thread(
        self, conn: sqlite3.Connection, now: float, sessions: list[SessionRow]
    ) -> bool:
        """Snapshot, compute the deltas and write them with `sessions`; on success advance the
        committed state. Runs on the ledger's one thread only, which owns `_committed`,
        `_interval` and `_last_flush_at`. Returns False when nothing was due."""
        rows: list[IntervalRow] = []
        snapshot: dict[tuple[str, str, str], tuple[int, ...]] = {}
        if self._stats is not None:
            zero = (0,) * len(_COUNTERS)
            for entry in self._stats.snapshot():
                key = (entry.path, entry.tier, entry.role)
                totals: tuple[int, ...] = _read_counters(entry)
                before = self._committed.get(key, zero)
                if totals == before:
                    continue
                snapshot[key] = totals
                rows.append(
                    IntervalRow(
                        node=self.node,
                        run=self.run_id,
                        interval=self._interval,
                        path=entry.path,
                        tier=entry.tier,
                        role=entry.role,
                        start_at=self._last_flush_at,
                        end_at=now,
                        counts=dict(zip(_COUNTERS, map(sub, totals, before), strict=True)),
                        totals=dict(zip(_COUNTERS, totals, strict=True)),
                    )
                )
        if not rows and not sessions:
            return False
        ledger_db.write_batch(conn, rows, sessions)
        self._interval += 1
        self._last_flush_at = now
        self._committed.update(snapshot)
        return True

    async def run(self) -> None:
        """Flush every `interval_s` until cancelled (the final flush is `aclose()`'s)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

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

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        conn = self._conn
        if conn is None:
            raise LedgerError(self.path, "closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(conn, *args, **kwargs))

    # -- lifetime -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Flush once more, close the file and stop the thread (idempotent). Records still
        pending after a failed final flush are logged as `ledger.unwritten`."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(LedgerError):
            await self.flush()
        async with self._lock:
            if self._sessions:
                _log.error("ledger.unwritten", sessions=len(self._sessions))
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
        _log.info("ledger.closed", path=str(self.path), flushes=self.flushes)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
