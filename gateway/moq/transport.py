"""The aioquic adapter: one `MoqConnection` per QUIC connection, raw QUIC or WebTransport.

The only MoQ code that touches the event loop and aioquic's connection. It turns aioquic
events into `MoqSession` calls, the session's commands into aioquic calls (mapping stream codes
into the WebTransport range), runs the session timer, and measures the connection (datagram
bytes, RTT, unacknowledged bytes for the `SendBudget`). What a connection may do is decided by
its `ConnectionHost` (the server): `admit` once the client said what it wants (after the
handshake on raw QUIC, at the CONNECT on WebTransport), `ended` exactly once at the end.
Output is coalesced: `flush()` sends everything queued once per loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import structlog
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from gateway.moq.publisher import DEFAULT_BACKLOG_BYTES, TRACK_WAIT_S, Publisher, SendBudget
from gateway.moq.session import (
    CloseSession,
    MoqEvent,
    MoqSession,
    ResetStream,
    StopSending,
    StreamAllocator,
    StreamData,
)
from gateway.moq.subscriber import OpenBroadcast, Subscriber
from gateway.moq.webtransport import (
    ConnectRequest,
    RawAllocator,
    WebTransportAllocator,
    accept_headers,
    close_capsule,
    parse_close_capsule,
    parse_connect,
    refuse_headers,
)
from gateway.moq.wire import (
    SessionCode,
    Version,
    stream_code_from_wire,
    stream_code_to_wire,
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


class MoqConnection(QuicConnectionProtocol):
    """One QUIC connection serving one moq-lite session (made by `MoqServer`, one per client).

    `request` and `session` are set once admitted; `publisher` serves the model. `close()`
    ends the connection (the host's `ended` follows).
    """

    def __init__(self, quic: QuicConnection, *, host: ConnectionHost, offered: tuple[Version, ...]):
        super().__init__(quic)
        self._host = host
        self._offered = offered
        self._loop = asyncio.get_running_loop()
        self.started_at = self._loop.time()
        """Loop time of the first packet."""
        self.request: ConnectRequest | None = None
        """What the client asked for (set at admission time)."""
        self.session: MoqSession | None = None
        """The moq-lite session, once admitted."""
        self.publisher: Publisher | None = None
        """The publisher half, once admitted."""
        self.subscriber: Subscriber | None = None
        """The subscriber half (ingest), once admitted with `Admission.ingest`."""
        self.close_code: int | None = None
        """The session close code once ended (ours or the peer's)."""
        self.close_reason = ""
        """The close reason once ended."""
        self._h3: H3Connection | None = None
        self._wt_session: int | None = None
        self._local_bidi: set[int] = set()
        self._wt_streams: set[int] = set()
        self._capsules = bytearray()
        self._pending: list[QuicEvent | WebTransportStreamDataReceived] = []
        self._admitting: asyncio.Task[None] | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._timer_handle: asyncio.TimerHandle | None = None
        self._ended = False
        self._datagrams_sent = self._datagrams_recv = 0
        self._bytes_sent = self._bytes_recv = 0
        self._stream_bytes = 0
        self._dropped_bytes = 0
        self.budget: SendBudget | None = None
        """The connection's send budget, once admitted."""

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

    def stream_backlog(self, stream_id: int) -> int:
        """`backlog()` for one stream (0 once acked and discarded)."""
        stream = self._quic._streams.get(stream_id)
        return 0 if stream is None else len(stream.sender._buffer)

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

    def transmit(self) -> None:
        """:meta private: send, then let waiting subscriptions use freed room."""
        super().transmit()
        if self.budget is not None:
            self.budget.poke()

    def quic_event_received(self, event: QuicEvent) -> None:
        """:meta private: route one aioquic event."""
        if isinstance(event, ProtocolNegotiated):
            if event.alpn_protocol == "h3":
                self._h3 = H3Connection(self._quic, enable_webtransport=True)
            return
        if isinstance(event, ConnectionTerminated):
            self._terminated(event.error_code, event.reason_phrase)
            return
        if self._h3 is None:
            self._raw_event(event)
        else:
            self._h3_event(event)

    # -- raw QUIC --

    def _raw_event(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
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
        elif isinstance(event, StreamDataReceived | StreamReset | StopSendingReceived):
            self._to_session(event)

    # -- WebTransport --

    def _h3_event(self, event: QuicEvent) -> None:
        assert self._h3 is not None
        if isinstance(event, StreamDataReceived) and event.stream_id in self._local_bidi:
            self._to_session(event)  # bypass H3Connection (see WebTransportAllocator)
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self._headers(h3_event)
            elif isinstance(h3_event, WebTransportStreamDataReceived):
                if h3_event.session_id == self._wt_session:
                    self._wt_streams.add(h3_event.stream_id)
                    self._to_session(h3_event)
                else:
                    self._quic.stop_stream(h3_event.stream_id, stream_code_to_wire(1))
            elif isinstance(h3_event, DataReceived) and h3_event.stream_id == self._wt_session:
                # Capsules on the CONNECT stream; its FIN ends the session.
                if len(self._capsules) < _MAX_CAPSULE_BYTES:
                    self._capsules += h3_event.data[: _MAX_CAPSULE_BYTES - len(self._capsules)]
                if h3_event.stream_ended:
                    self._peer_closed_wt(bytes(self._capsules))
        if isinstance(event, StreamReset | StopSendingReceived) and (
            event.stream_id in self._wt_streams or event.stream_id in self._local_bidi
        ):
            self._to_session(event)

    def _headers(self, event: HeadersReceived) -> None:
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

    def _peer_closed_wt(self, data: bytes) -> None:
        capsule = parse_close_capsule(data)
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
        if self._ended:
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

    def _to_session(self, event: QuicEvent | WebTransportStreamDataReceived) -> None:
        session = self.session
        if session is None:
            if len(self._pending) >= _MAX_PENDING_EVENTS:
                self.close_session(SessionCode.PROTOCOL_VIOLATION, "too much before admission")
            else:
                self._pending.append(event)
            return
        now = self._loop.time()
        events: list[MoqEvent]
        if isinstance(event, StreamDataReceived):
            events = session.feed(event.stream_id, event.data, event.end_stream, now)
        elif isinstance(event, WebTransportStreamDataReceived):
            events = session.feed(event.stream_id, event.data, event.stream_ended, now)
        elif isinstance(event, StreamReset):
            events = session.stream_reset(
                event.stream_id, stream_code_from_wire(event.error_code), now
            )
        elif isinstance(event, StopSendingReceived):
            events = session.stop_sending(
                event.stream_id, stream_code_from_wire(event.error_code), now
            )
        else:
            return
        self._dispatch(events)

    def _dispatch(self, events: list[MoqEvent]) -> None:
        publisher = self.publisher
        if publisher is not None:
            for event in events:
                publisher.handle(event)
        subscriber = self.subscriber
        if subscriber is not None:
            for event in events:
                subscriber.handle(event)
        self.flush()

    def flush(self) -> None:
        """Send the session's queued output at the end of this loop turn (coalesced)."""
        if self._flush_handle is None and not self._ended:
            self._flush_handle = self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_handle = None
        session = self.session
        if session is None or self._ended:
            return
        quic = self._quic
        for command in session.data_to_send():
            if isinstance(command, StreamData):
                self._stream_bytes += len(command.data)
                with contextlib.suppress(ValueError, AssertionError):  # stream already gone
                    quic.send_stream_data(command.stream_id, command.data, command.end_stream)
            elif isinstance(command, ResetStream):
                self._dropped_bytes += self.stream_backlog(command.stream_id)
                with contextlib.suppress(ValueError, AssertionError):
                    quic.reset_stream(command.stream_id, stream_code_to_wire(command.code))
            elif isinstance(command, StopSending):
                with contextlib.suppress(ValueError, AssertionError):
                    quic.stop_stream(command.stream_id, stream_code_to_wire(command.code))
            elif isinstance(command, CloseSession):
                self._close_transport(command.code, command.reason)
        self._arm_timer()
        self.transmit()

    def _arm_timer(self) -> None:
        session = self.session
        deadline = session.next_deadline() if session is not None else None
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        if deadline is not None:
            self._timer_handle = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_handle = None
        if self.session is not None:
            self._dispatch(self.session.on_timer(self._loop.time()))

    # -- the end --

    def close_session(self, code: int = SessionCode.NO_ERROR, reason: str = "") -> None:
        """End the MoQ session with `code` (a session code) and close the connection."""
        if self.session is not None and self.session.ended is None:
            self._dispatch(self.session.close(code, reason))
            return
        self._close_transport(code, reason)

    def _close_transport(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._h3 is not None and self._wt_session is not None:
            with contextlib.suppress(Exception):
                self._h3.send_data(self._wt_session, close_capsule(code, reason), end_stream=True)
            self.transmit()
            self._quic.close(error_code=0, reason_phrase=reason)
        else:
            self._quic.close(error_code=code, reason_phrase=reason)
        self.transmit()

    def _terminated(self, code: int, reason: str) -> None:
        if self._ended:
            return
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self.session is not None:
            self._dispatch(self.session.connection_lost(code, reason))
        self._ended = True
        for handle in (self._flush_handle, self._timer_handle):
            if handle is not None:
                handle.cancel()
        if self._admitting is not None and not self._admitting.done():
            self._admitting.cancel()
        self._host.ended(self)

    def _peer(self) -> str:
        addr = self._quic._network_paths[0].addr if self._quic._network_paths else None
        return f"{addr[0]}:{addr[1]}" if addr else ""
