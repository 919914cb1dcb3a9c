"""The aioquic adapter: one `MoqConnection` per QUIC connection, raw QUIC or WebTransport.

The server role of `MoqConnectionBase` (which turns aioquic events into `MoqSession` calls,
the session's commands into aioquic calls, and runs the session timer): it admits, and it
measures the connection (datagram bytes, RTT, unacknowledged bytes for the `SendBudget`).
What a connection may do is decided by its `ConnectionHost` (the server): `admit` once the
client said what it wants (after the handshake on raw QUIC, at the CONNECT on WebTransport),
`ended` exactly once at the end. Output is coalesced: `flush()` sends everything queued once
per loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import structlog
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    HandshakeCompleted,
)

from gateway.moq.connection_base import MoqConnectionBase, SessionInput
from gateway.moq.publisher import DEFAULT_BACKLOG_BYTES, TRACK_WAIT_S, Publisher, SendBudget
from gateway.moq.session import (
    MoqSession,
    StreamAllocator,
)
from gateway.moq.subscriber import OpenBroadcast, Subscriber
from gateway.moq.webtransport import (
    ConnectRequest,
    RawAllocator,
    WebTransportAllocator,
    accept_headers,
    parse_close_capsule,
    parse_connect,
    refuse_headers,
)
from gateway.moq.wire import (
    SessionCode,
    Version,
    version_for_alpn,
)
from model import Origin, Usage

__all__ = ["Admission", "ConnectionHost", "MoqConnection", "QuicFigures"]

_MAX_PENDING_EVENTS: Final = 256  # events held while the host decides; more is abuse
_MAX_CAPSULE_BYTES: Final = 2048  # what is kept of the CONNECT stream's capsules
_log = structlog.get_logger("moqsrt.moq")


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """The host's yes: serve `origin` (only paths under `root`), counting each broadcast's
    egress into `meter_for(path)`, with at most `backlog_cap_bytes` unacknowledged; a SUBSCRIBE
    for a track not there yet waits `track_wait_s` for it. With `ingest`, the session also asks
    the client what it publishes (`Subscriber`) and hands each announced broadcast to
    `ingest(path)`."""

    origin: Origin
    root: str = ""
    meter_for: Callable[[str], Usage | None] = lambda path: None
    backlog_cap_bytes: int = DEFAULT_BACKLOG_BYTES
    track_wait_s: float = TRACK_WAIT_S
    ingest: OpenBroadcast | None = None


class ConnectionHost(Protocol):
    """What a `MoqConnection` asks its server."""

    async def admit(self, conn: MoqConnection, request: ConnectRequest) -> Admission | int:
        """Accept (`Admission`) or refuse (an HTTP status on WebTransport; on raw QUIC any int
        closes the connection with session code 2, unauthorized)."""
        ...

    def ended(self, conn: MoqConnection) -> None:
        """The connection is over (called once, for admitted and refused ones alike)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class QuicFigures:
    """One connection's transport figures: UDP payload bytes and datagrams both ways (QUIC
    headers, retransmissions and control included), the stream bytes the MoQ session handed
    to aioquic, of which `dropped_bytes` were on streams reset before the peer acknowledged
    them (groups a congested link skipped; an upper bound of what never arrived), the smoothed
    RTT at the end, and the peak unacknowledged backlog."""

    rtt_ms: float = 0.0
    datagrams_sent: int = 0
    datagrams_recv: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    stream_bytes_sent: int = 0
    dropped_bytes: int = 0
    peak_backlog_bytes: int = 0


class _CountingTransport:
    """Wraps the server's shared datagram transport to count what this connection sends."""

    def __init__(self, inner: asyncio.DatagramTransport, owner: MoqConnection) -> None:
        self._inner = inner
        self._owner = owner

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._owner._datagrams_sent += 1
        self._owner._bytes_sent += len(data)
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class MoqConnection(MoqConnectionBase):
    """One QUIC connection serving one moq-lite session (made by `MoqServer`, one per client).

    `request` and `session` are set once admitted; `publisher` serves the model. `close()`
    ends the connection (the host's `ended` follows).
    """

    def __init__(self, quic: QuicConnection, *, host: ConnectionHost, offered: tuple[Version, ...]):
        super().__init__(quic)
        self._host = host
        self._offered = offered
        self.started_at = self._loop.time()
        """Loop time of the first packet."""
        self.request: ConnectRequest | None = None
        """What the client asked for (set at admission time)."""
        self._capsules = bytearray()
        self._pending: list[SessionInput] = []
        self._admitting: asyncio.Task[None] | None = None
        self._datagrams_sent = self._datagrams_recv = 0
        self._bytes_sent = self._bytes_recv = 0

    # -- figures --

    def figures(self) -> QuicFigures:
        """The connection's transport figures now."""
        rtt = getattr(getattr(self._quic, "_loss", None), "_rtt_smoothed", 0.0)
        return QuicFigures(
            rtt_ms=float(rtt) * 1000.0,
            datagrams_sent=self._datagrams_sent,
            datagrams_recv=self._datagrams_recv,
            bytes_sent=self._bytes_sent,
            bytes_recv=self._bytes_recv,
            stream_bytes_sent=self._stream_bytes,
            dropped_bytes=self._dropped_bytes,
            peak_backlog_bytes=self.budget.peak_bytes if self.budget is not None else 0,
        )

    def backlog(self) -> int:
        """Stream bytes the session queued or handed to aioquic and the peer has not yet
        acknowledged. (aioquic keeps them in each stream sender's `_buffer` until acked; it
        has no public accessor.)"""
        queued = self.session.pending_bytes if self.session is not None else 0
        return queued + sum(len(s.sender._buffer) for s in self._quic._streams.values())

    # -- aioquic hooks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """:meta private: count the datagrams this connection sends."""
        counting = _CountingTransport(cast(asyncio.DatagramTransport, transport), self)
        super().connection_made(cast(asyncio.DatagramTransport, counting))

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """:meta private:"""
        self._datagrams_recv += 1
        self._bytes_recv += len(data)
        super().datagram_received(data, addr)

    # -- raw QUIC --

    def _on_handshake(self, event: HandshakeCompleted) -> None:
        if self._h3 is not None:
            return  # WebTransport: the CONNECT says what the client wants
        version = version_for_alpn(event.alpn_protocol)
        if version is None:  # aioquic only negotiates what we offered
            self.close_session(SessionCode.VERSION_NEGOTIATION_FAILED, "no moq-lite ALPN")
            return
        request = ConnectRequest(
            transport="quic",
            version=version,
            authority=self._quic.configuration.server_name or "",
            peer=self._peer(),
        )
        self._admit(request, RawAllocator(self._quic))

    # -- WebTransport --

    def _on_headers(self, event: HeadersReceived) -> None:
        assert self._h3 is not None
        if self._wt_session is not None or self._admitting is not None:
            self._h3.send_headers(event.stream_id, refuse_headers(429), end_stream=True)
            return
        parsed = parse_connect(event.headers, self._offered, self._peer())
        if isinstance(parsed, int):
            self._h3.send_headers(event.stream_id, refuse_headers(parsed), end_stream=True)
            self.transmit()
            return
        self._wt_session = event.stream_id
        allocator = WebTransportAllocator(self._h3, event.stream_id)
        self._local_bidi = allocator.local_bidi
        self._admit(parsed, allocator)

    def _on_connect_data(self, event: DataReceived) -> None:
        # Capsules on the CONNECT stream; its FIN ends the session.
        if len(self._capsules) < _MAX_CAPSULE_BYTES:
            self._capsules += event.data[: _MAX_CAPSULE_BYTES - len(self._capsules)]
        if event.stream_ended:
            capsule = parse_close_capsule(bytes(self._capsules))
            code, reason = capsule if capsule is not None else (SessionCode.NO_ERROR, "closed")
            self._terminated(code, reason)
            self.close()

    # -- admission and the session --

    def _admit(self, request: ConnectRequest, allocator: StreamAllocator) -> None:
        self.request = request
        self._admitting = self._loop.create_task(self._run_admission(request, allocator))

    async def _run_admission(self, request: ConnectRequest, allocator: StreamAllocator) -> None:
        try:
            decision = await self._host.admit(self, request)
        except Exception as exc:  # noqa: BLE001  (a failing hook refuses, it never crashes us)
            _log.warning("moq.admit_failed", peer=request.peer, error=repr(exc))
            decision = 500
        if self._ended.is_set():
            return
        if isinstance(decision, int):
            if self._h3 is not None and self._wt_session is not None:
                self._h3.send_headers(self._wt_session, refuse_headers(decision), end_stream=True)
                self.transmit()
                self._wt_session = None
            self.close_session(SessionCode.UNAUTHORIZED, "refused")
            return
        if self._h3 is not None and self._wt_session is not None:
            self._h3.send_headers(self._wt_session, accept_headers(request.version))
        session = MoqSession(request.version, is_client=False, allocator=allocator)
        self.budget = SendBudget(self.backlog, self.stream_backlog, decision.backlog_cap_bytes)
        self.session = session
        self.publisher = Publisher(
            session,
            decision.origin,
            flush=self.flush,
            budget=self.budget,
            meter_for=decision.meter_for,
            root=decision.root,
            track_wait_s=decision.track_wait_s,
        )
        if decision.ingest is not None:
            self.subscriber = Subscriber(session, open_broadcast=decision.ingest, flush=self.flush)
        pending, self._pending = self._pending, []
        for event in pending:
            self._to_session(event)
        if self.subscriber is not None:
            self.subscriber.start()
        self.flush()

    def _before_session(self, event: SessionInput) -> None:
        # Held until the host decides (a client may send before it is admitted).
        if len(self._pending) >= _MAX_PENDING_EVENTS:
            self.close_session(SessionCode.PROTOCOL_VIOLATION, "too much before admission")
        else:
            self._pending.append(event)

    # -- the end --

    def _on_ended(self, code: int, reason: str) -> None:
        if self._admitting is not None and not self._admitting.done():
            self._admitting.cancel()
        self._host.ended(self)

    def _peer(self) -> str:
        addr = self._quic._network_paths[0].addr if self._quic._network_paths else None
        return f"{addr[0]}:{addr[1]}" if addr else ""
