"""What `Publish` and `Subscribe` share: one accepted SRT connection awaiting `accept()` or
`reject()`, and the session record written when it ends.

`Pending` is what the server's handshake decided for a caller (carried to its connection as
the context); `SessionRequest` owns the connection from then on and closes it, with its path
claim, when the session ends.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from gateway.admission import Slot
from gateway.auth import REJECT_FORBIDDEN
from gateway.claims import Claim
from gateway.session import (
    LinkFigures,
    Outcome,
    SessionRecord,
    emit_session,
)
from gateway.srt import SrtConnection, SrtError
from gateway.streamid import StreamRequest
from model import Role, Usage

if TYPE_CHECKING:
    from gateway.server import Server

__all__ = ["Pending", "SessionRequest", "format_peer"]

_log = structlog.get_logger("moqsrt.srt.server")


@dataclass(slots=True, eq=False)
class Pending:
    """What the listen callback decided, carried to the accepted connection as its context."""

    request: StreamRequest
    tier: str
    peer: tuple[str, int]
    claim: Claim | None = None
    slot: Slot | None = None


def format_peer(peer: tuple[str, int]) -> str:
    """`host:port` for logs and records, IPv6 hosts in brackets."""
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SessionRequest:
    """Common part of `Publish` and `Subscribe`: one accepted SRT connection awaiting a verdict.

    `accept(origin, path=None)` runs it to the end and returns its `SessionRecord`; `reject()`
    closes it. Exactly one of them, once; a second call raises `RuntimeError`.
    """

    role: Role
    _meter: Usage | None = None  # the session's live meter once metering (gateway.http)
    _live_path: str | None = None  # the path it publishes or reads once metering

    def __init__(self, server: Server, conn: SrtConnection, pending: Pending) -> None:
        self._server = server
        self._conn = conn
        self._pending = pending
        self._claim = pending.claim
        self._used = False
        self._shutting_down = False
        self._close_reason = "server closed"  # the record's `error` when the gateway ends it
        self.session = secrets.token_hex(8)
        """This session's unique id (also the viewer id in egress stats)."""
        self.started_at = time.time()
        self._started_mono = time.monotonic()

    @property
    def request(self) -> StreamRequest:
        """The parsed stream id."""
        return self._pending.request

    @property
    def resource(self) -> str:
        """The caller's resource (stream id path without the server prefix)."""
        return self._pending.request.resource

    @property
    def path(self) -> str:
        """The model path the caller asked for (prefix joined, normalized)."""
        return self._pending.request.path

    @property
    def stream_id(self) -> str:
        """The caller's stream id with secret values replaced (`StreamRequest.redacted`), as
        logged and recorded; the id as sent is `request.raw`."""
        return self._pending.request.redacted

    @property
    def user(self) -> str:
        """The user named in the stream id (`u=` or MediaMTX's user), '' for none."""
        return self._pending.request.user

    @property
    def tier(self) -> str:
        """The tier the authorization hook chose (`default` without a hook)."""
        return self._pending.tier

    @property
    def peer(self) -> tuple[str, int]:
        """The caller's `(host, port)`."""
        return self._pending.peer

    @property
    def connection(self) -> SrtConnection:
        """The SRT connection (owned by this request; closed when it ends)."""
        return self._conn

    @property
    def live_path(self) -> str | None:
        """The model path this session publishes or reads, once it has started doing so
        (None before, and for a request still waiting for its broadcast)."""
        return self._live_path

    def usage(self) -> Usage:
        """What this session's meter counted so far (a copy; zero before it started)."""
        return Usage() if self._meter is None else self._meter.copy()

    def link_stats(self) -> LinkFigures:
        """libsrt's cumulative figures for the connection now (srt_bstats; zero once closed)."""
        return self._link()

    def kick(self) -> None:
        """End this session now, as the server's shutdown does (an operator's kick): the
        connection is closed and the session's task writes its record (`outcome="closed"`,
        `error="closed by operator"`)."""
        self._close_reason = "closed by operator"
        self._shutdown()

    def _metering(self, path: str, meter: Usage) -> None:
        self._live_path, self._meter = path, meter

    def reject(self, code: int = REJECT_FORBIDDEN) -> None:
        """Refuse the request after the handshake: the connection is closed (the caller sees
        a disconnect, not `code`, which is only logged; refuse with a code the caller sees
        from the authorization hook instead). Raises `RuntimeError` if already used."""
        self._use()
        _log.info("srt.request_rejected", session=self.session, code=code, path=self.path)
        self._finish_request()

    def _use(self) -> None:
        if self._used:
            raise RuntimeError("request already accepted or rejected")
        self._used = True

    def _finish_request(self) -> None:
        self._conn.close()
        self._server._claims.release(self._claim)
        self._server._slots.release(self._pending.slot)
        self._server._requests.discard(self)

    def _shutdown(self) -> None:
        """The server is closing: end this session soon (the session task records it)."""
        self._shutting_down = True
        if not self._used:
            self._used = True
            self._finish_request()
            return
        self._conn.close()

    def _link(self) -> LinkFigures:
        try:
            return LinkFigures.from_stats(self._conn.stats())
        except SrtError:
            return LinkFigures()

    async def _end(
        self,
        *,
        path: str,
        outcome: Outcome,
        error: str = "",
        usage: Usage | None = None,
        ts_bytes: int = 0,
        skipped: Usage | None = None,
        skipped_ts_bytes: int = 0,
        dropped: Usage | None = None,
        dropped_ts_bytes: int = 0,
        problems: Mapping[str, int] | None = None,
    ) -> SessionRecord:
        """Close the connection and its claim, then build, log and sink the session's record.

        `usage` is the session's billed payload meter (None: nothing moved); `skipped` and
        `dropped` what a viewer was not billed for (`SessionRecord`); `problems` the
        importer's counts per kind. Reads the link figures before the close so they include
        the last exchange.
        """
        link = self._link()
        self._finish_request()
        usage = usage or Usage()
        skipped = skipped or Usage()
        dropped = dropped or Usage()
        record = SessionRecord(
            session=self.session,
            node=self._server.node,
            role=self.role,
            path=path,
            tier=self.tier,
            peer=format_peer(self.peer),
            stream_id=self.stream_id,
            user=self.user,
            started_at=self.started_at,
            ended_at=time.time(),
            duration_s=round(time.monotonic() - self._started_mono, 6),
            groups=usage.groups,
            frames=usage.frames,
            bytes=usage.bytes,
            ts_bytes=ts_bytes,
            skipped_groups=skipped.groups,
            skipped_frames=skipped.frames,
            skipped_bytes=skipped.bytes,
            skipped_ts_bytes=skipped_ts_bytes,
            dropped_groups=dropped.groups,
            dropped_frames=dropped.frames,
            dropped_bytes=dropped.bytes,
            dropped_ts_bytes=dropped_ts_bytes,
            problems=tuple(sorted((k, v) for k, v in (problems or {}).items() if v)),
            outcome=outcome,
            error=error,
            srt=link,
        )
        await emit_session(record, self._server.config.sinks)
        return record
