"""The aioquic glue both MoQ roles share: `MoqConnectionBase`, one QUIC connection carrying
one moq-lite session over raw QUIC or WebTransport.

It routes aioquic events to the `MoqSession` (WebTransport streams through `H3Connection`),
turns the session's commands into aioquic calls (mapping stream codes into the WebTransport
range), runs the session timer, coalesces output (`flush()` sends once per loop turn) and ends
the connection exactly once. The roles (`transport.MoqConnection` for the server,
`client.MoqClientConnection`) subclass it and fill in what differs: the handshake, the
CONNECT headers, the CONNECT stream's data, and what happens at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeAlias

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

from gateway.moq.publisher import Publisher, SendBudget
from gateway.moq.session import (
    CloseSession,
    MoqEvent,
    MoqSession,
    ResetStream,
    StopSending,
    StreamData,
)
from gateway.moq.subscriber import Subscriber
from gateway.moq.webtransport import close_capsule
from gateway.moq.wire import SessionCode, stream_code_from_wire, stream_code_to_wire

__all__ = ["MoqConnectionBase", "SessionInput"]

SessionInput: TypeAlias = QuicEvent | WebTransportStreamDataReceived
"""An aioquic event bound for the session (stream data, reset, stop-sending)."""


class MoqConnectionBase(QuicConnectionProtocol):
    """One QUIC connection carrying one moq-lite session; the part both roles share.

    Must be made inside a running event loop (it keeps that loop). `session`, `publisher`,
    `subscriber` and `budget` are set by the subclass once the session is up; `close_code` and
    `close_reason` once it ended (ours or the peer's, first one wins). Subclasses implement the
    `_on_*` hooks below; everything else runs on the loop, from aioquic's callbacks.
    """

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._loop = asyncio.get_running_loop()
        self.session: MoqSession | None = None
        """The moq-lite session, once up."""
        self.publisher: Publisher | None = None
        """Serves the local origin to the peer, once up (None if nothing is served)."""
        self.subscriber: Subscriber | None = None
        """Ingests from the peer, once up (None without ingest)."""
        self.budget: SendBudget | None = None
        """The connection's send budget, once up."""
        self.close_code: int | None = None
        """The session close code once ended (ours or the peer's)."""
        self.close_reason = ""
        """The close reason once ended."""
        self._ended = asyncio.Event()
        self._h3: H3Connection | None = None
        self._wt_session: int | None = None  # the WebTransport CONNECT stream
        self._local_bidi: set[int] = set()
        self._wt_streams: set[int] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._timer_handle: asyncio.TimerHandle | None = None
        self._stream_bytes = 0
        self._dropped_bytes = 0

    @property
    def is_closed(self) -> bool:
        """True once the connection ended."""
        return self._ended.is_set()

    async def wait_closed(self) -> None:
        """Wait until the session (and connection) ended."""
        await self._ended.wait()

    def stream_backlog(self, stream_id: int) -> int:
        """Bytes handed to aioquic on `stream_id` the peer has not acknowledged yet (0 once
        acked and discarded; aioquic keeps them in the stream sender's `_buffer`)."""
        stream = self._quic._streams.get(stream_id)
        return 0 if stream is None else len(stream.sender._buffer)

    # -- hooks for the roles --

    def _on_handshake(self, event: HandshakeCompleted) -> None:
        """The TLS handshake completed (also on WebTransport, before any CONNECT)."""
        raise NotImplementedError

    def _on_headers(self, event: HeadersReceived) -> None:
        """HTTP/3 headers arrived (WebTransport only)."""
        raise NotImplementedError

    def _on_connect_data(self, event: DataReceived) -> None:
        """Data (capsules, FIN) arrived on the WebTransport CONNECT stream."""
        raise NotImplementedError

    def _accepts_wt_stream(self, session_id: int) -> bool:
        """Whether a WebTransport stream of `session_id` belongs to our session."""
        return session_id == self._wt_session

    def _capsule_stream(self) -> int | None:
        """The CONNECT stream a close capsule goes on, or None to close QUIC with the code."""
        return self._wt_session

    def _before_session(self, event: SessionInput) -> None:
        """Session input arrived before the session is up (default: dropped)."""

    def _on_ended(self, code: int, reason: str) -> None:
        """The connection ended with `code`/`reason` (called once, after the session saw it)."""

    # -- aioquic --

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
        if isinstance(event, HandshakeCompleted):
            self._on_handshake(event)
            return
        if isinstance(event, ConnectionTerminated):
            self._terminated(event.error_code, event.reason_phrase)
            return
        if self._h3 is None:
            if isinstance(event, StreamDataReceived | StreamReset | StopSendingReceived):
                self._to_session(event)
            return
        self._h3_event(event)

    def _h3_event(self, event: QuicEvent) -> None:
        assert self._h3 is not None
        if isinstance(event, StreamDataReceived) and event.stream_id in self._local_bidi:
            self._to_session(event)  # bypass H3Connection (see WebTransportAllocator)
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self._on_headers(h3_event)
            elif isinstance(h3_event, WebTransportStreamDataReceived):
                if self._accepts_wt_stream(h3_event.session_id):
                    self._wt_streams.add(h3_event.stream_id)
                    self._to_session(h3_event)
                else:
                    self._quic.stop_stream(h3_event.stream_id, stream_code_to_wire(1))
            elif isinstance(h3_event, DataReceived) and h3_event.stream_id == self._wt_session:
                self._on_connect_data(h3_event)
        if isinstance(event, StreamReset | StopSendingReceived) and (
            event.stream_id in self._wt_streams or event.stream_id in self._local_bidi
        ):
            self._to_session(event)

    # -- the session --

    def _to_session(self, event: SessionInput) -> None:
        session = self.session
        if session is None:
            self._before_session(event)
            return
        now = self._loop.time()
        events: list[MoqEvent]
        if isinstance(event, StreamDataReceived):
            events = session.feed(event.stream_id, event.data, event.end_stream, now)
        elif isinstance(event, WebTransportStreamDataReceived):
            events = session.feed(event.stream_id, event.data, event.stream_ended, now)
        elif isinstance(event, StreamReset):
            code = stream_code_from_wire(event.error_code)
            events = session.stream_reset(event.stream_id, code, now)
        elif isinstance(event, StopSendingReceived):
            code = stream_code_from_wire(event.error_code)
            events = session.stop_sending(event.stream_id, code, now)
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
        if self._flush_handle is None and not self._ended.is_set():
            self._flush_handle = self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_handle = None
        session = self.session
        if session is None or self._ended.is_set():
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
        """End the MoQ session with `code` (a session code) and close the connection
        (idempotent)."""
        if self.session is not None and self.session.ended is None:
            self._dispatch(self.session.close(code, reason))
            return
        self._close_transport(code, reason)

    def _close_transport(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        capsule_stream = self._capsule_stream() if self._h3 is not None else None
        if self._h3 is not None and capsule_stream is not None:
            with contextlib.suppress(Exception):  # the CONNECT stream may be gone already
                self._h3.send_data(capsule_stream, close_capsule(code, reason), end_stream=True)
            self.transmit()  # the capsule leaves before the CONNECTION_CLOSE
            self._quic.close(error_code=0, reason_phrase=reason)
        else:
            self._quic.close(error_code=code, reason_phrase=reason)
        self.transmit()

    def _terminated(self, code: int, reason: str) -> None:
        """End the connection's state with `code`/`reason` (once; later calls do nothing)."""
        if self._ended.is_set():
            return
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self.session is not None:
            self._dispatch(self.session.connection_lost(code, reason))
        self._ended.set()
        for handle in (self._flush_handle, self._timer_handle):
            if handle is not None:
                handle.cancel()
        self._on_ended(code, reason)
