"""One final usage record per SRT session, logged and handed to billing sinks.

`SessionRecord` is the immutable summary of one connection (a publisher's ingress or a viewer's
egress): who, which path and tier, how long, what the meter counted (payload groups, frames and
bytes), the TS bytes that crossed the gateway, and libsrt's link figures (wire bytes with
headers and retransmits, loss, drops, RTT). `emit_session` logs it as the structlog event
`session.closed` and then gives it to every registered `SessionSink`; the server calls it exactly
once per accepted connection, whatever way the connection ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import structlog

from model import Role

Outcome = Literal["eof", "error", "timeout", "closed", "rejected"]
"""How a session ended: `eof` the publisher finished or the broadcast ended cleanly; `error` the
link broke or media aborted; `timeout` a viewer's broadcast never appeared; `closed` the server
or the embedder ended it; `rejected` the embedder refused the request after the handshake."""

SessionSink = Callable[["SessionRecord"], Awaitable[None] | None]
"""Receives every final record. A sink may be sync or async; it must not raise (failures are
logged as `session.sink_failed` and do not reach other sinks or the connection), and an async
sink is awaited for at most `SINK_TIMEOUT_S`."""

SINK_TIMEOUT_S = 5.0


class ClosedRecord(Protocol):
    """What `emit_session` needs of a final record (`SessionRecord`, the MoQ record): its
    session id and its flat `session.closed` mapping."""

    @property
    def session(self) -> str:
        """The session id (the sinks' idempotency key)."""
        ...

    def as_dict(self) -> dict[str, str | int | float]:
        """The flat mapping logged as `session.closed`."""
        ...


_R = TypeVar("_R", bound=ClosedRecord)

_log = structlog.get_logger("moqsrt.session")


class LinkStatsLike(Protocol):
    """The libsrt link figures a record copies (`gateway.srt` `LinkStats`, from srt_bstats)."""

    @property
    def rtt_ms(self) -> float: ...
    @property
    def pkt_sent(self) -> int: ...
    @property
    def pkt_recv(self) -> int: ...
    @property
    def pkt_sent_loss(self) -> int: ...
    @property
    def pkt_recv_loss(self) -> int: ...
    @property
    def pkt_retrans(self) -> int: ...
    @property
    def pkt_recv_drop(self) -> int: ...
    @property
    def pkt_send_drop(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def bytes_recv(self) -> int: ...
    @property
    def bytes_retrans(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkFigures:
    """Cumulative libsrt figures for one connection (srt_bstats totals, read just before close).

    `bytes_sent` / `bytes_recv` are wire bytes including IP/UDP/SRT headers and retransmissions
    (libsrt's byteSentTotal / byteRecvTotal); `rtt_ms` is the smoothed RTT at the end.
    """

    rtt_ms: float = 0.0
    pkts_sent: int = 0
    pkts_recv: int = 0
    pkts_send_loss: int = 0
    pkts_recv_loss: int = 0
    pkts_retrans: int = 0
    pkts_send_drop: int = 0
    pkts_recv_drop: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    bytes_retrans: int = 0

    @classmethod
    def from_stats(cls, stats: LinkStatsLike) -> LinkFigures:
        """Copy the figures out of a `gateway.srt` `LinkStats`."""
        return cls(
            rtt_ms=float(stats.rtt_ms),
            pkts_sent=stats.pkt_sent,
            pkts_recv=stats.pkt_recv,
            pkts_send_loss=stats.pkt_sent_loss,
            pkts_recv_loss=stats.pkt_recv_loss,
            pkts_retrans=stats.pkt_retrans,
            pkts_send_drop=stats.pkt_send_drop,
            pkts_recv_drop=stats.pkt_recv_drop,
            bytes_sent=stats.bytes_sent,
            bytes_recv=stats.bytes_recv,
            bytes_retrans=stats.bytes_retrans,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """The final usage record of one SRT session; idempotent by `session` (a unique id).

    Times are Unix epoch seconds (`started_at`, `ended_at`) and `duration_s` is measured on the
    monotonic clock. `groups`, `frames`, `bytes` are the billed model usage (model payload:
    legacy frames and catalog): ingress counts what the publisher wrote, once; egress counts
    only what was handed to this viewer's connection and left libsrt's send buffer undropped
    (DESIGN.md, "Metering"; `gateway.egress`). Beside it, never billed: `skipped_*` is model
    usage not handed over (a slow link skipped to the next keyframe, a payload libsrt refused,
    reads that made no TS), `dropped_*` what libsrt accepted but dropped as too late, or could
    not confirm before the session ended. `ts_bytes` are MPEG-TS bytes received (ingress), or
    of the billed data (egress); `skipped_ts_bytes` / `dropped_ts_bytes` the TS bytes of the
    skipped / dropped data. `problems` counts what the importer found wrong in a publisher's
    stream, per kind (`mux.problems`: `continuity_gap`, `bad_pes`, ...); `problem_total` is
    their sum. `srt` holds libsrt's wire figures. `user` is the user the caller named ('' for
    none) and `stream_id` its stream id with secret values replaced
    (`gateway.streamid.redact_stream_id`); `error` names the cause when `outcome` is `error`
    or `timeout`.
    """

    session: str
    node: str
    role: Role
    path: str
    tier: str
    peer: str
    stream_id: str
    user: str
    started_at: float
    ended_at: float
    duration_s: float
    groups: int
    frames: int
    bytes: int
    ts_bytes: int
    skipped_groups: int = 0
    skipped_frames: int = 0
    skipped_bytes: int = 0
    skipped_ts_bytes: int = 0
    dropped_groups: int = 0
    dropped_frames: int = 0
    dropped_bytes: int = 0
    dropped_ts_bytes: int = 0
    problems: tuple[tuple[str, int], ...] = ()
    outcome: Outcome = "eof"
    error: str = ""
    srt: LinkFigures = dataclasses.field(default_factory=LinkFigures)

    @property
    def problem_total(self) -> int:
        """Problems the importer found in the stream, all kinds together."""
        return sum(count for _, count in self.problems)

    @property
    def wire_bytes(self) -> int:
        """SRT wire bytes in this session's direction (received for ingress, sent for egress),
        headers and retransmissions included."""
        return self.srt.bytes_recv if self.role == "ingress" else self.srt.bytes_sent

    def as_dict(self) -> dict[str, str | int | float]:
        """Flat JSON-ready mapping: the record's fields, `problems` as their total and one
        `problems_<kind>` per kind found, then `srt_*` link figures and `wire_bytes`. This is
        the shape of the `session.closed` log event."""
        out: dict[str, str | int | float] = {}
        for f in dataclasses.fields(self):
            if f.name == "problems":
                out["problems"] = self.problem_total
                for kind, count in self.problems:
                    out[f"problems_{kind}"] = count
            elif f.name != "srt":
                out[f.name] = getattr(self, f.name)
        for f in dataclasses.fields(self.srt):
            out[f"srt_{f.name}"] = getattr(self.srt, f.name)
        out["wire_bytes"] = self.wire_bytes
        return out


def default_node() -> str:
    """The node id records carry when the embedder names none: this host's name."""
    return socket.gethostname() or "moqsrt"


async def emit_session(record: _R, sinks: Iterable[Callable[[_R], Awaitable[None] | None]]) -> None:
    """Log `record` (a `SessionRecord`, or another `ClosedRecord` such as the MoQ one) as
    `session.closed`, then give it to each sink in order.

    Never raises for a sink's failure (logged as `session.sink_failed`); a cancelled caller
    still propagates cancellation.
    """
    _log.info("session.closed", **record.as_dict())
    for sink in sinks:
        try:
            result = sink(record)
            if inspect.isawaitable(result):
                async with asyncio.timeout(SINK_TIMEOUT_S):
                    await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (a billing sink must never break the server)
            _log.warning(
                "session.sink_failed", session=record.session, sink=repr(sink), error=repr(exc)
            )
