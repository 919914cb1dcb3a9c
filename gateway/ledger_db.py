"""The usage ledger's SQLite file: schema, migrations, writes and reads (no asyncio here).

One table, `records`, holds both kinds of usage record in the order they were written: its
`seq` (AUTOINCREMENT, never reused) is the cursor a reader keeps. `interval` records are the
deltas of one (path, tier, role) entry over one flush interval of one process run, unique by
(node, run, interval, path, tier, role); `session` records are the final record of one session,
unique by (node, session). Both are written with INSERT OR IGNORE, so writing one twice is
harmless. `cursors` keeps named delivery cursors (the webhook's). The schema version is SQLite's
`user_version`, migrated on open inside one write transaction. `gateway.ledger` writes through
these functions on its own thread; `moqsrt usage` and platform readers use `LedgerReader`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from gateway.errors import GatewayError

__all__ = [
    "LIFECYCLE",
    "SCHEMA_VERSION",
    "USAGE",
    "IntervalRow",
    "Kind",
    "LedgerError",
    "LedgerReader",
    "LedgerRecord",
    "SessionRow",
    "Totals",
    "connect",
    "get_cursor",
    "interval_params",
    "read_sessions",
    "read_since",
    "read_totals",
    "session_params",
    "set_cursor",
    "write_batch",
    "write_rows",
]

SCHEMA_VERSION = 1
"""The schema this code writes (SQLite `user_version`)."""

USAGE = ("groups", "frames", "bytes")
"""The billed counters every record carries (model payload, as `model.Usage`)."""

LIFECYCLE = (
    "announced",
    "announced_closed",
    "subscriptions",
    "subscriptions_closed",
    "viewers",
    "sessions",
    "sessions_closed",
)
"""The lifecycle counters of an interval record (deltas of `model.StatsEntry`'s)."""

Kind = Literal["interval", "session"]
"""A record's kind: `interval` (deltas of one entry) or `session` (a final record)."""

_COUNTERS = USAGE + LIFECYCLE

# Each entry migrates from version i to i + 1 (index i).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('interval', 'session')),
            node TEXT NOT NULL,
            run TEXT NOT NULL,
            interval INTEGER,
            session TEXT,
            path TEXT NOT NULL,
            tier TEXT NOT NULL,
            role TEXT NOT NULL,
            start_at REAL NOT NULL,
            end_at REAL NOT NULL,
            {", ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in _COUNTERS)},
            detail TEXT NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE UNIQUE INDEX records_interval_key ON records (node, run, interval, path, tier,"
        " role) WHERE kind = 'interval'",
        "CREATE UNIQUE INDEX records_session_key ON records (node, session) WHERE kind = 'session'",
        "CREATE INDEX records_kind_end ON records (kind, end_at)",
        "CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


class LedgerError(GatewayError):
    """The ledger file cannot be used (not SQLite, corrupt, a newer schema, unreadable);
    `path` names the file."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"ledger {path}: {message}")
        self.path = str(path)


@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalRow:
    """One interval record to write: the deltas of one (path, tier, role) entry.

    `start_at`/`end_at` are Unix epoch seconds (the previous flush and this one); `counts`
    maps every name of `USAGE` and `LIFECYCLE` to its delta; `totals` to its cumulative value
    in this run (kept in `detail`, for reconciling a run's deltas against its last snapshot).
    """

    node: str
    run: str
    interval: int
    path: str
    tier: str
    role: str
    start_at: float
    end_at: float
    counts: Mapping[str, int]
    totals: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRow:
    """One final session record to write: `record` is its flat JSON-ready dict (`as_dict()`
    of `gateway.session.SessionRecord` or a MoQ record), kept whole in `detail`."""

    node: str
    run: str
    session: str
    path: str
    tier: str
    role: str
    start_at: float
    end_at: float
    groups: int
    frames: int
    bytes: int
    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRecord:
    """One record as read back, in cursor order.

    `seq` is its cursor position (a reader passes the last `seq` it processed as `since`).
    `kind` is `interval` (deltas over one flush interval; `interval` is its number within
    `run`) or `session` (a final session record; `session` is its id). Times are Unix epoch
    seconds. `counts` holds `USAGE` (and, for intervals, `LIFECYCLE`) values; `detail` the
    session's whole record, or an interval's cumulative `totals` within its run.
    """

    seq: int
    kind: Kind
    node: str
    run: str
    interval: int | None
    session: str | None
    path: str
    tier: str
    role: str
    start_at: float
    end_at: float
    counts: Mapping[str, int]
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping: identity and times, the counters flat, then `detail` (an
        interval's `totals`, a session's `record`)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind,
            "node": self.node,
            "run": self.run,
        }
        if self.kind == "interval":
            out["interval"] = self.interval
        else:
            out["session"] = self.session
        out.update(
            path=self.path,
            tier=self.tier,
            role=self.role,
            start_at=self.start_at,
            end_at=self.end_at,
        )
        out.update(self.counts)
        out["totals" if self.kind == "interval" else "record"] = dict(self.detail)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """Summed usage of one (path, tier, role) over a time range (and over nodes, unless the
    query split by node: then `node` names it, else it is '')."""

    node: str
    path: str
    tier: str
    role: str
    counts: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping with the counters flat."""
        out: dict[str, Any] = {"path": self.path, "tier": self.tier, "role": self.role}
        if self.node:
            out["node"] = self.node
        out.update(self.counts)
        return out


def connect(path: Path | str, *, create: bool = True) -> sqlite3.Connection:
    """Open the ledger at `path` in WAL mode and migrate it to `SCHEMA_VERSION`.

    `create=False` refuses a missing file instead of creating an empty ledger (readers). The
    connection is in autocommit mode (transactions are explicit) and belongs to the calling
    thread. Raises `LedgerError` for a file that is not a ledger, is corrupt, or was written
    by a newer schema.
    """
    path = Path(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise LedgerError(path, "no such file")
    try:
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerError(path, f"cannot open: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed interval survives power loss too, for one fsync per interval.
        conn.execute("PRAGMA synchronous=FULL")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise LedgerError(path, f"not a usable SQLite ledger: {exc}") from exc
    except LedgerError:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise LedgerError(
            path, f"schema version {version} is newer than this moqsrt ({SCHEMA_VERSION})"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated between the read above and the lock.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_INSERT = (
    "INSERT OR IGNORE INTO records (kind, node, run, interval, session, path, tier, role,"
    f" start_at, end_at, {', '.join(_COUNTERS)}, detail) VALUES"
    f" ({', '.join('?' * (11 + len(_COUNTERS)))})"
)


# One encoder, made once: `json.dumps` with options builds a new encoder per call, which
# was a measurable share of a flush's Python time.
_encode_session = json.JSONEncoder(sort_keys=True, default=str).encode
_NO_LIFECYCLE = (0,) * len(LIFECYCLE)
_SORTED_COUNTERS = tuple(sorted(_COUNTERS))
# An interval's `detail`: its totals as JSON with sorted keys, as a format string.
_TOTALS_FORMAT = '{"totals": {' + ", ".join(f'"{name}": %d' for name in _SORTED_COUNTERS) + "}}"
# Picks a `_COUNTERS`-ordered tuple's values in `_SORTED_COUNTERS` order (for `_TOTALS_FORMAT`).
_sorted_totals = itemgetter(*(_COUNTERS.index(name) for name in _SORTED_COUNTERS))


def interval_params(
    node: str,
    run: str,
    interval: int,
    path: str,
    tier: str,
    role: str,
    start_at: float,
    end_at: float,
    counts: Sequence[int],
    totals: Sequence[int],
) -> tuple[Any, ...]:
    """The `write_rows` parameters of one interval record, built without an `IntervalRow`:
    `counts` (deltas) and `totals` (cumulative) are ints in `USAGE + LIFECYCLE` order."""
    return (
        "interval",
        node,
        run,
        interval,
        None,
        path,
        tier,
        role,
        start_at,
        end_at,
        *counts,
        _TOTALS_FORMAT % _sorted_totals(totals),
    )


def session_params(s: SessionRow) -> tuple[Any, ...]:
    """The `write_rows` parameters of one session record."""
    return (
        "session",
        s.node,
        s.run,
        None,
        s.session,
        s.path,
        s.tier,
        s.role,
        s.start_at,
        s.end_at,
        s.groups,
        s.frames,
        s.bytes,
        *_NO_LIFECYCLE,
        _encode_session({"record": dict(s.record)}),
    )


def write_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Write records given as parameter tuples (`interval_params`, `session_params`) in one
    transaction; return how many were new. Same guarantees as `write_batch`."""
    if not rows:
        return 0
    before = conn.total_changes
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return conn.total_changes - before


def write_batch(
    conn: sqlite3.Connection, intervals: Iterable[IntervalRow], sessions: Iterable[SessionRow]
) -> int:
    """Write interval and session records in one transaction; return how many were new. A
    counter missing from an `IntervalRow`'s `counts` or `totals` is written as 0.

    Records already present (same unique key) are ignored, so a batch may be written again.
    On any error the transaction is rolled back and the error propagates (nothing written).
    """
    rows = [
        interval_params(
            iv.node,
            iv.run,
            iv.interval,
            iv.path,
            iv.tier,
            iv.role,
            iv.start_at,
            iv.end_at,
            [int(iv.counts.get(name, 0)) for name in _COUNTERS],
            [int(iv.totals.get(name, 0)) for name in _COUNTERS],
        )
        for iv in intervals
    ]
    rows.extend(map(session_params, sessions))
    return write_rows(conn, rows)


_SELECT = (
    "SELECT seq, kind, node, run, interval, session, path, tier, role, start_at, end_at,"
    f" {', '.join(_COUNTERS)}, detail FROM records"
)


def _record(row: Sequence[Any]) -> LedgerRecord:
    kind = row[1]
    values = row[11 : 11 + len(_COUNTERS)]
    names = _COUNTERS if kind == "interval" else USAGE
    counts = {name: int(v) for name, v in zip(_COUNTERS, values, strict=True) if name in names}
    detail = json.loads(row[-1])
    return LedgerRecord(
        seq=row[0],
        kind=kind,
        node=row[2],
        run=row[3],
        interval=row[4],
        session=row[5],
        path=row[6],
        tier=row[7],
        role=row[8],
        start_at=row[9],
        end_at=row[10],
        counts=counts,
        detail=detail.get("totals" if kind == "interval" else "record", {}),
    )


def read_since(
    conn: sqlite3.Connection, since: int, *, limit: int = 1000, kind: Kind | None = None
) -> list[LedgerRecord]:
    """Records with `seq > since`, in `seq` order, at most `limit` (`kind` filters).

    A reader keeps the last `seq` it processed and passes it back: records are only ever
    appended with growing `seq` (one writer, SQLite's serialized transactions), so it sees
    each record exactly once, whenever it stops and restarts.
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    if kind is None:
        rows = conn.execute(f"{_SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (since, limit))
    else:
        rows = conn.execute(
            f"{_SELECT} WHERE seq > ? AND kind = ? ORDER BY seq LIMIT ?", (since, kind, limit)
        )
    return [_record(r) for r in rows.fetchall()]


def _range(
    since: float | None, until: float | None, filters: Mapping[str, str | None]
) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if since is not None:
        where.append("end_at > ?")
        args.append(since)
    if until is not None:
        where.append("end_at <= ?")
        args.append(until)
    for column in ("node", "path", "tier", "role"):
        value = filters.get(column)
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return "".join(f" AND {w}" for w in where), args


def read_totals(
    conn: sqlite3.Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    by_node: bool = False,
    **filters: str | None,
) -> list[Totals]:
    """Sum the interval records ending in `(since, until]` (epoch seconds; None: unbounded)
    per (path, tier, role), and per node too if `by_node`; `filters` (node, path, tier, role)
    select exact values. An interval counts whole in the range its end falls in."""
    clause, args = _range(since, until, filters)
    node = "node" if by_node else "''"
    sums = ", ".join(f"SUM({name})" for name in _COUNTERS)
    rows = conn.execute(
        f"SELECT {node}, path, tier, role, {sums} FROM records WHERE kind = 'interval'{clause}"
        f" GROUP BY {node}, path, tier, role ORDER BY path, tier, role, {node}",
        args,
    ).fetchall()
    return [
        Totals(
            node=r[0],
            path=r[1],
            tier=r[2],
            role=r[3],
            counts={name: int(v) for name, v in zip(_COUNTERS, r[4:], strict=True)},
        )
        for r in rows
    ]


def read_sessions(
    conn: sqlite3.Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    limit: int = 10_000,
    **filters: str | None,
) -> list[LedgerRecord]:
    """Session records that ended in `(since, until]` (epoch seconds), in cursor order, at most
    `limit`; `filters` (node, path, tier, role) select exact values."""
    clause, args = _range(since, until, filters)
    rows = conn.execute(
        f"{_SELECT} WHERE kind = 'session'{clause} ORDER BY seq LIMIT ?", [*args, limit]
    )
    return [_record(r) for r in rows.fetchall()]


def get_cursor(conn: sqlite3.Connection, name: str) -> int:
    """The stored cursor `name` (0 when never set)."""
    row = conn.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def set_cursor(conn: sqlite3.Connection, name: str, seq: int) -> None:
    """Store cursor `name` durably (one transaction)."""
    conn.execute(
        "INSERT INTO cursors (name, seq) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        (name, seq),
    )


class LedgerReader:
    """A synchronous reader of a ledger file (for `moqsrt usage` and platform scripts).

    It never creates a ledger (`LedgerError` for a missing file) but migrates an older one.
    Reads see every committed record, also while a gateway writes the file. Close it with
    `close()` or a `with` block.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, create=False)

    def read_since(
        self, since: int, *, limit: int = 1000, kind: Kind | None = None
    ) -> list[LedgerRecord]:
        """See `read_since` (module function)."""
        return read_since(self._conn, since, limit=limit, kind=kind)

    def totals(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        by_node: bool = False,
        **filters: str | None,
    ) -> list[Totals]:
        """See `read_totals`."""
        return read_totals(self._conn, since=since, until=until, by_node=by_node, **filters)

    def sessions(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
        **filters: str | None,
    ) -> list[LedgerRecord]:
        """See `read_sessions`."""
        return read_sessions(self._conn, since=since, until=until, limit=limit, **filters)

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` result (`ok` for a sound file)."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> LedgerReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
