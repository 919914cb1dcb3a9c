"""`moqsrt usage`: totals per path, tier and role, and per-session records, from the ledger.

It opens the ledger read-side (`gateway.ledger_db.LedgerReader`, never creating a file), sums
the interval records that ended in the time range, lists the session records that ended in it,
and prints them as tables or, with `--json`, as one JSON document. `--after CURSOR` prints the
raw records after a cursor instead (what a platform's reader gets), with the next cursor.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.ledger_db import LedgerError, LedgerReader, LedgerRecord, Totals

__all__ = ["add_arguments", "parse_time", "run"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds of `text`: a number (epoch seconds), an ISO 8601 time (no zone: local
    time), or a duration ago (`90s`, `30m`, `2h`, `7d`). Raises ValueError otherwise."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _UNIT_S[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (epoch seconds, ISO 8601, or a duration ago like 2h)"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `usage` flags on `parser`."""
    parser.add_argument("--ledger", type=Path, help="ledger file (default: the config's)")
    parser.add_argument("--config", type=Path, help="TOML file of `moqsrt serve` (its ledger)")
    parser.add_argument("--since", help="from (exclusive): epoch s, ISO 8601, or ago (2h)")
    parser.add_argument("--until", help="to (inclusive): epoch s, ISO 8601, or ago")
    parser.add_argument("--path", help="only this broadcast path")
    parser.add_argument("--tier", help="only this tier")
    parser.add_argument("--role", choices=("ingress", "egress"), help="only this role")
    parser.add_argument("--node", help="only this node")
    parser.add_argument("--by-node", action="store_true", help="split totals per node")
    parser.add_argument(
        "--sessions", type=int, default=1000, help="at most this many session records (0: none)"
    )
    parser.add_argument(
        "--after", type=int, metavar="CURSOR", help="print raw records after this cursor"
    )
    parser.add_argument("--limit", type=int, default=1000, help="records per --after read")
    parser.add_argument("--json", action="store_true", help="one JSON document")


def run(args: argparse.Namespace) -> int:
    """Entry point of `moqsrt usage`: 0 when printed, 2 for bad arguments or ledger."""
    try:
        path = args.ledger
        if path is None:
            path = (load_config(args.config) if args.config else GatewayConfig()).ledger
        if path is None:
            raise ValueError("the ledger is off in this configuration (pass --ledger FILE)")
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        with LedgerReader(path) as reader:
            if args.after is not None:
                if args.limit <= 0:
                    raise ValueError("--limit must be positive")
                records = reader.read_since(args.after, limit=args.limit)
                cursor = records[-1].seq if records else args.after
                _print_records(records, cursor, args.json)
                return 0
            filters = {"path": args.path, "tier": args.tier, "role": args.role, "node": args.node}
            totals = reader.totals(since=since, until=until, by_node=args.by_node, **filters)
            sessions = (
                reader.sessions(since=since, until=until, limit=args.sessions, **filters)
                if args.sessions > 0
                else []
            )
    except (ConfigError, LedgerError, ValueError) as exc:
        sys.stderr.write(f"moqsrt usage: {exc}\n")
        return 2
    if args.json:
        document = {
            "ledger": str(path),
            "since": since,
            "until": until,
            "totals": [t.as_dict() for t in totals],
            "sessions": [s.as_dict() for s in sessions],
        }
        print(json.dumps(document, indent=2))
    else:
        _print_tables(path, since, until, totals, sessions, args.by_node)
    return 0


def _print_records(records: list[LedgerRecord], cursor: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"records": [r.as_dict() for r in records], "cursor": cursor}))
        return
    for record in records:
        print(json.dumps(record.as_dict(), separators=(",", ":")))
    print(f"# cursor {cursor}")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [
        all(r[i].lstrip("-").replace(".", "").isdigit() for r in cells) for i in range(len(headers))
    ]
    print(
        "  ".join(
            h.rjust(w) if n else h.ljust(w)
            for h, w, n in zip(headers, widths, numeric, strict=True)
        ).rstrip()
    )
    for row in cells:
        print(
            "  ".join(
                c.rjust(w) if n else c.ljust(w)
                for c, w, n in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )


def _print_tables(
    path: Path,
    since: float | None,
    until: float | None,
    totals: list[Totals],
    sessions: list[LedgerRecord],
    by_node: bool,
) -> None:
    span = f"{_when(since)} to {_when(until)} UTC" if since or until else "all time"
    print(f"usage from {path}, {span}")
    headers = ["path", "tier", "role", "groups", "frames", "bytes", "sessions", "viewers"]
    if by_node:
        headers.insert(0, "node")
    rows = []
    for t in totals:
        c = t.counts
        row: list[Any] = [t.path, t.tier, t.role, c["groups"], c["frames"], c["bytes"]]
        row += [c["sessions"], c["viewers"]]
        rows.append([t.node, *row] if by_node else row)
    _table(headers, rows)
    if not sessions:
        return
    print()
    print("sessions")
    rows = []
    for s in sessions:
        record = s.detail
        rows.append(
            [
                _when(s.end_at),
                s.node,
                s.session,
                s.path,
                s.tier,
                s.role,
                f"{float(record.get('duration_s', s.end_at - s.start_at)):.1f}",
                s.counts["groups"],
                s.counts["frames"],
                s.counts["bytes"],
                record.get("outcome", ""),
            ]
        )
    headers = ["ended (UTC)", "node", "session", "path", "tier", "role", "duration_s"]
    _table([*headers, "groups", "frames", "bytes", "outcome"], rows)
