"""What the operator's HTTP surface reads: the origin, the stats handle, the SRT and MoQ servers,
recent session records, and the ledger's hooks; all read at request or scrape time.

`GatewaySources` is filled by whoever serves (`gateway.serve`): `add_srt(server)` and
`add_moq(server)` once bound, `record_session` given to the servers as a sink (it keeps the last
`recent_max` records), and, when a usage ledger runs, `ledger_lag_s` and `usage`. It holds no
per-frame state: every figure is read from the servers and `StatsHandle.snapshot()` when asked.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from model import Origin, StatsHandle, Usage
from mux.catalog import CATALOG_TRACK, Catalog
from mux.errors import MalformedCatalog

if TYPE_CHECKING:
    from gateway.moq.server import MoqSessionInfo
    from gateway.session import LinkFigures

__all__ = [
    "DEFAULT_RECENT_MAX",
    "INTERNAL_TIER",
    "GatewaySources",
    "LiveSession",
    "MoqServerLike",
    "SessionProtocol",
    "SrtServerLike",
    "SrtSessionLike",
    "UsageReader",
    "read_catalog",
]

INTERNAL_TIER = "internal"
"""The tier of the gateway's own readers (upstream relay, thumbnails): never a customer's."""

DEFAULT_RECENT_MAX = 256
"""How many ended sessions' records `GatewaySources` keeps for `/api/v1/sessions`."""

SessionProtocol = Literal["srt", "moq"]
"""Which listener a session came in on."""

# Record fields the API never shows: a stream id may carry a password (MediaMTX's
# `publish:path:user:pass`) or a token.
_HIDDEN_FIELDS = frozenset({"stream_id"})


class SrtSessionLike(Protocol):
    """What the surface reads of an SRT session (`gateway.request.SessionRequest`)."""

    @property
    def session(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def live_path(self) -> str | None: ...
    @property
    def tier(self) -> str: ...
    @property
    def peer(self) -> tuple[str, int]: ...
    @property
    def user(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    def usage(self) -> Usage: ...
    def link_stats(self) -> LinkFigures: ...


class SrtServerLike(Protocol):
    """What the surface reads of an SRT server (`gateway.server.Server`)."""

    def requests(self) -> Sequence[SrtSessionLike]: ...
    def kick(self, session: str) -> bool: ...


class MoqServerLike(Protocol):
    """What the surface reads of a MoQ server (`gateway.moq.server.MoqServer`)."""

    def sessions(self) -> list[MoqSessionInfo]: ...
    def kick(self, session: str) -> bool: ...
    def ingress_bytes(self) -> dict[str, int]: ...


class RecordLike(Protocol):
    """A final session record (`gateway.session.SessionRecord`, `MoqSessionRecord`)."""

    @property
    def session(self) -> str: ...

    def as_dict(self) -> Mapping[str, Any]: ...


class UsageRecord(Protocol):
    """One record a usage reader returns (the ledger's `LedgerRecord`)."""

    def as_dict(self) -> Mapping[str, Any]: ...


class UsageReader(Protocol):
    """Reads usage records after a cursor (the ledger's `Ledger.read_since`): records with
    `seq > since`, in cursor order, at most `limit`."""

    async def read_since(self, since: int, *, limit: int = ...) -> Sequence[UsageRecord]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSession:
    """One live session as the API and the metrics see it (a point-in-time reading).

    `path` is the broadcast it publishes or reads (`""` while an SRT viewer waits for its
    broadcast); for a MoQ session that reads several, `paths` lists them. `usage` is its meter
    (model payload). `link` holds the transport's figures: libsrt's for SRT (`rtt_ms`,
    `pkts_*`, `bytes_*`), the connection's backlog for MoQ.
    """

    session: str
    protocol: SessionProtocol
    role: str
    path: str
    paths: tuple[str, ...]
    tier: str
    peer: str
    user: str
    started_at: float
    usage: Usage
    link: Mapping[str, float | int | str] = field(default_factory=dict)

    def as_dict(self, now: float) -> dict[str, Any]:
        """JSON-ready mapping; `duration_s` measured to `now` (Unix epoch seconds)."""
        groups, frames, nbytes = self.usage.values()
        return {
            "session": self.session,
            "protocol": self.protocol,
            "role": self.role,
            "path": self.path,
            "paths": list(self.paths),
            "tier": self.tier,
            "peer": self.peer,
            "user": self.user,
            "started_at": self.started_at,
            "duration_s": round(max(0.0, now - self.started_at), 3),
            "groups": groups,
            "frames": frames,
            "bytes": nbytes,
            "link": dict(self.link),
        }


def read_catalog(origin: Origin, path: str) -> Catalog | None:
    """The latest catalog of the broadcast live at `path`, or None (not live, no catalog yet,
    or one that does not parse). Reads through an unmetered consumer: the gateway's own look
    is never billed. Never asks a dynamic track handler for a track it has not produced.

    The same catalog bytes give the same `Catalog` object (parsed once, `CATALOG_CACHE`
    entries kept): callers share it, so they read it and never change it."""
    consumer = origin.get(path)
    if consumer is None or CATALOG_TRACK not in consumer.track_names():
        return None
    group = consumer.subscribe_track(CATALOG_TRACK).poll_group()
    frames = group.read_ready() if group is not None else []
    if not frames:
        return None
    return _parse_catalog(bytes(frames[-1]))


CATALOG_CACHE = 256
"""Distinct catalogs `read_catalog` keeps parsed (a catalog changes only when a broadcast's
tracks do; the status page, the API and thumbnails read every live one every poll)."""


@functools.lru_cache(maxsize=CATALOG_CACHE)
def _parse_catalog(data: bytes) -> Catalog | None:
    try:
        return Catalog.from_json(data)
    except MalformedCatalog:
        return None


class GatewaySources:
    """The live state the HTTP surface reports on; see the module docstring for who fills it.

    Lifetime: plain references, closed by nobody (the servers belong to `serve`). Methods run
    on the event loop thread.
    """

    def __init__(
        self, origin: Origin, stats: StatsHandle, *, recent_max: int = DEFAULT_RECENT_MAX
    ) -> None:
        self.origin = origin
        """The origin whose broadcasts are listed."""
        self.stats = stats
        """The stats handle `/metrics` exposes."""
        self.srt: list[SrtServerLike] = []
        """SRT servers whose sessions are listed (add with `add_srt`)."""
        self.moq: list[MoqServerLike] = []
        """MoQ servers whose sessions are listed (add with `add_moq`)."""
        self.ledger_lag_s: Callable[[], float | None] | None = None
        """Set by the usage ledger: seconds since its last committed write (None: unknown).
        Exposed as `moqsrt_ledger_lag_seconds` when set."""
        self.usage: UsageReader | None = None
        """Set by the usage ledger: what `/api/v1/usage` reads (None: the endpoint says 503)."""
        self.srt_port: int | None = None
        """The SRT listener's port, for the status page's publishing instructions (None:
        the page gives none)."""
        self.srt_latency_ms: int = 120
        """The SRT latency the listener offers (ms), for the publishing instructions."""
        self.srt_encrypted: bool = False
        """Whether publishers need an SRT passphrase (the instructions then say where it goes)."""
        self.authorized: bool = False
        """Whether callers must name themselves (users table or authorization hook): the
        instructions then say where the credentials go."""
        self.prefix: str = ""
        """The SRT server's path prefix (normalized, `""`: none): a publisher's stream id names
        the path under it, so the publishing instructions leave it out of `r=`."""
        self.moq_port: int | None = None
        """The MoQ listener's UDP port, for the page's in-browser players (None: MoQ is off)."""
        self._recent: deque[dict[str, Any]] = deque(maxlen=max(0, recent_max))

    def add_srt(self, server: SrtServerLike) -> None:
        """List `server`'s sessions (call once it is bound)."""
        self.srt.append(server)

    def add_moq(self, server: MoqServerLike) -> None:
        """List `server`'s sessions (call once it is bound)."""
        self.moq.append(server)

    def record_session(self, record: RecordLike) -> None:
        """A session sink (`SessionSink`, `MoqSessionSink`): keep the record as a recent session
        (the last `recent_max`; the stream id is dropped). O(1), never raises for a record
        whose `as_dict()` works."""
        data = {k: v for k, v in record.as_dict().items() if k not in _HIDDEN_FIELDS}
        data.setdefault("protocol", "moq" if "quic_bytes_sent" in data else "srt")
        self._recent.append(data)

    def recent(self) -> list[dict[str, Any]]:
        """The kept records of ended sessions, newest first."""
        return list(reversed(self._recent))

    def live_sessions(self, *, link: bool = True) -> list[LiveSession]:
        """Every live session of every server, SRT first, each server's in no set order.

        `link=False` leaves the SRT sessions' `link` empty: no libsrt statistics call (one
        `srt_bstats` per session, the costly part of a reading) for callers that do not show
        them."""
        out: list[LiveSession] = []
        for server in self.srt:
            for request in server.requests():
                path = request.live_path or ""
                out.append(
                    LiveSession(
                        session=request.session,
                        protocol="srt",
                        role=request.role,
                        path=path,
                        paths=(path,) if path else (),
                        tier=request.tier,
                        peer=_format_peer(request.peer),
                        user=request.user,
                        started_at=request.started_at,
                        usage=request.usage(),
                        link=_srt_link(request.link_stats()) if link else {},
                    )
                )
        for moq in self.moq:
            for info in moq.sessions():
                out.append(
                    LiveSession(
                        session=info.session,
                        protocol="moq",
                        role="egress",
                        path=info.broadcasts[0] if len(info.broadcasts) == 1 else "",
                        paths=info.broadcasts,
                        tier=info.tier,
                        peer=info.peer,
                        user="",
                        started_at=info.started_at,
                        usage=info.usage,
                        link={
                            "transport": info.transport,
                            "subscriptions": info.subscriptions,
                            "backlog_bytes": info.backlog_bytes,
                            "peak_backlog_bytes": info.peak_backlog_bytes,
                        },
                    )
                )
        return out

    def kick(self, session: str) -> bool:
        """End the live session `session` on whichever server holds it; False if none does."""
        return any(server.kick(session) for server in self.srt) or any(
            server.kick(session) for server in self.moq
        )

    def broadcasts(self, rates: Mapping[str, float]) -> list[dict[str, Any]]:
        """The live broadcasts, sorted by path: catalog tracks, publisher, viewers per protocol,
        ingress counters, egress counters (every viewer so far, summed over the tiers except
        `internal`, the gateway's own readers: cumulative per path, across publishes), and
        `bitrate_bps` from `rates` (path -> model payload bits/s; None when not measured
        yet)."""
        sessions = self.live_sessions(link=False)  # roles and paths only
        ingress: dict[str, Usage] = {}  # per path, summed over tiers
        egress: dict[str, Usage] = {}  # per path, summed over the tiers but `internal`
        for stats_entry in self.stats.snapshot():
            if stats_entry.role == "ingress":
                totals = ingress
            elif stats_entry.tier != INTERNAL_TIER:
                totals = egress
            else:
                continue
            totals.setdefault(stats_entry.path, Usage()).add(
                Usage(stats_entry.groups, stats_entry.frames, stats_entry.bytes)
            )
        out: list[dict[str, Any]] = []
        now = time.time()
        for path in self.origin.paths():
            catalog = read_catalog(self.origin, path)
            publisher = next((s for s in sessions if s.role == "ingress" and s.path == path), None)
            viewers = {"srt": 0, "moq": 0}
            for s in sessions:
                if s.role == "egress" and path in s.paths:
                    viewers[s.protocol] += 1
            usage = ingress.get(path)
            delivered = egress.get(path)
            out.append(
                {
                    "path": path,
                    "tracks": catalog.track_names() if catalog is not None else [],
                    "catalog": catalog.to_dict() if catalog is not None else None,
                    "publisher": None
                    if publisher is None
                    else {
                        "session": publisher.session,
                        "protocol": publisher.protocol,
                        "peer": publisher.peer,
                        "user": publisher.user,
                        "tier": publisher.tier,
                        "started_at": publisher.started_at,
                        "duration_s": round(max(0.0, now - publisher.started_at), 3),
                    },
                    "viewers": viewers,
                    "bitrate_bps": rates.get(path),
                    "ingress": None
                    if usage is None
                    else {"groups": usage.groups, "frames": usage.frames, "bytes": usage.bytes},
                    "egress": {"groups": 0, "frames": 0, "bytes": 0}
                    if delivered is None
                    else {
                        "groups": delivered.groups,
                        "frames": delivered.frames,
                        "bytes": delivered.bytes,
                    },
                }
            )
        return out

    def ingress_bytes(self) -> dict[str, int]:
        """Payload bytes each live publisher's meter counted so far, per path, whether it
        publishes over SRT or MoQ: what the bit-rate sampler reads once a second. O(SRT
        sessions + live MoQ publishes); no stats snapshot (whose cost grows with every path
        ever seen) and no lock."""
        out: dict[str, int] = {}
        for server in self.srt:
            for request in server.requests():
                path = request.live_path
                if request.role == "ingress" and path:
                    out[path] = out.get(path, 0) + request.usage().bytes
        for moq in self.moq:
            for path, nbytes in moq.ingress_bytes().items():
                out[path] = out.get(path, 0) + nbytes
        return out


def _srt_link(link: LinkFigures) -> dict[str, float | int | str]:
    return {
        "rtt_ms": link.rtt_ms,
        "pkts_sent": link.pkts_sent,
        "pkts_recv": link.pkts_recv,
        "pkts_send_loss": link.pkts_send_loss,
        "pkts_recv_loss": link.pkts_recv_loss,
        "pkts_retrans": link.pkts_retrans,
        "pkts_send_drop": link.pkts_send_drop,
        "pkts_recv_drop": link.pkts_recv_drop,
        "bytes_sent": link.bytes_sent,
        "bytes_recv": link.bytes_recv,
        "bytes_retrans": link.bytes_retrans,
    }


def _format_peer(peer: tuple[str, int]) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
