"""One final usage record per MoQ session, logged as `session.closed` and handed to sinks.

The MoQ counterpart of `gateway.session.SessionRecord`: the same who/what/usage fields, with
QUIC figures where an SRT record has libsrt's link figures. A MoQ session may read several
broadcasts; `groups`/`frames`/`bytes` are its totals and `broadcasts` the split per path (each
also counted, per (path, tier), by the session's egress stats guards).

A connection that publishes into the gateway also yields one `role="ingress"` record per
broadcast it published (`PublishUsage`, from the ingress meter), after its egress record. One
per broadcast rather than one per connection, because a ledger row carries one path and a
client may publish several paths; each gets the session id `<connection>-in<n>` (n counts
from 1 in publish order) so that its ledger key (node, session) never collides with the
connection's egress record, and `connection` names the connection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.moq.transport import QuicFigures
from gateway.session import SINK_TIMEOUT_S, emit_session

__all__ = [
    "SINK_TIMEOUT_S",
    "BroadcastUsage",
    "MoqSessionRecord",
    "MoqSessionSink",
    "PublishUsage",
    "emit_moq_session",
]

Role = Literal["egress", "ingress"]
"""`egress`: what a session read (the connection's record); `ingress`: what one broadcast a
connection published wrote into the gateway."""

Outcome = Literal["closed", "error"]
"""`closed` the session ended with code 0 (either side); `error` with another code or a
transport failure (`error` says which). Connections the authorization hook refused get no
record (they are logged as `moq.refused`): nothing was served."""

MoqSessionSink = Callable[["MoqSessionRecord"], Awaitable[None] | None]
"""Receives every final MoQ record: sync or async, must not raise (failures are logged as
`session.sink_failed`); an async sink gets `SINK_TIMEOUT_S`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastUsage:
    """What one session read from one broadcast path (model payload counters)."""

    path: str
    groups: int
    frames: int
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishUsage:
    """What one broadcast a MoQ peer published wrote into the gateway (its ingress meter).

    `path`: where it was published in the origin; `tier`: the tier its ingress was metered
    under. `started_at`/`ended_at`: Unix epoch seconds of the publish and its end;
    `duration_s`: monotonic seconds between them.
    """

    path: str
    tier: str
    started_at: float
    ended_at: float
    duration_s: float
    groups: int
    frames: int
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MoqSessionRecord:
    """The final record of one MoQ session: a connection's egress, or one broadcast it
    published (`role="ingress"`); idempotent by `session`.

    `path`: the URL path the client connected to (`""` on raw QUIC). `transport`: `quic` or
    `webtransport`; `version`: the moq-lite ALPN token. Times are Unix epoch seconds and
    `duration_s` is monotonic. `groups`/`frames`/`bytes`: model payload handed to this
    session's connection (what its meters counted), summed over `broadcasts`.
    `subscriptions`: SUBSCRIBEs accepted. `skipped_groups`: groups a congested link dropped
    or never started. `quic`: transport
    figures (`wire_bytes` = UDP bytes sent). The URL query (tokens) is never recorded.

    An ingress record (see `ingress_records`): `path`/`tier` are the published broadcast's,
    `groups`/`frames`/`bytes` what its ingress meter counted, times and `duration_s` the
    publish's own, `connection` the egress record's `session`, `subscriptions` 0 and
    `broadcasts` empty; `quic` is the whole connection's figures (shared by every record of
    that connection) and `wire_bytes` the UDP bytes received.
    """

    session: str
    node: str
    role: Role = "egress"
    connection: str = ""
    path: str
    tier: str
    peer: str
    transport: str
    version: str
    started_at: float
    ended_at: float
    duration_s: float
    groups: int
    frames: int
    bytes: int
    subscriptions: int
    skipped_groups: int = 0
    broadcasts: tuple[BroadcastUsage, ...] = ()
    outcome: Outcome = "closed"
    error: str = ""
    quic: QuicFigures = dataclasses.field(default_factory=QuicFigures)

    @property
    def wire_bytes(self) -> int:
        """UDP payload bytes sent to the client (QUIC headers and retransmissions included);
        for an ingress record, received from it."""
        return self.quic.bytes_recv if self.role == "ingress" else self.quic.bytes_sent

    def ingress_records(self, publishes: Sequence[PublishUsage]) -> list[MoqSessionRecord]:
        """One `role="ingress"` record per entry of `publishes` (in order), for the connection
        this egress record closes: its node, peer, transport, version, outcome and QUIC
        figures, the publish's path, tier, times and counters, and session `<session>-in<n>`."""
        return [
            dataclasses.replace(
                self,
                session=f"{self.session}-in{n}",
                role="ingress",
                connection=self.session,
                path=p.path,
                tier=p.tier,
                started_at=p.started_at,
                ended_at=p.ended_at,
                duration_s=p.duration_s,
                groups=p.groups,
                frames=p.frames,
                bytes=p.bytes,
                subscriptions=0,
                skipped_groups=0,
                broadcasts=(),
            )
            for n, p in enumerate(publishes, 1)
        ]

    def as_dict(self) -> dict[str, str | int | float]:
        """Flat JSON-ready mapping, the shape of the `session.closed` log event: the fields,
        `broadcasts` as `path=groups/frames/bytes` text, `quic_*` figures and `wire_bytes`."""
        out: dict[str, str | int | float] = {}
        for f in dataclasses.fields(self):
            if f.name == "broadcasts":
                out[f.name] = ",".join(
                    f"{b.path}={b.groups}/{b.frames}/{b.bytes}" for b in self.broadcasts
                )
            elif f.name != "quic":
                out[f.name] = getattr(self, f.name)
        for f in dataclasses.fields(self.quic):
            out[f"quic_{f.name}"] = getattr(self.quic, f.name)
        out["wire_bytes"] = self.wire_bytes
        return out


emit_moq_session = emit_session
"""`gateway.session.emit_session` for MoQ records: log `session.closed`, then each sink in
order (at most `SINK_TIMEOUT_S` each); never raises for a sink's failure."""
