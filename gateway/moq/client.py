"""The client role: connect to a MoQ server or relay, publish the local origin to it and (when
asked) ingest what it announces.

```python
async with connect("moqt://relay:4443", origin=origin, fingerprint=HEX) as conn:
    await conn.wait_closed()          # publishing until the relay goes away
```

`connect` dials raw QUIC (`moqt://` / `moql://`, ALPN = moq-lite version) or WebTransport
(`https://`, an HTTP/3 extended CONNECT with `wt-available-protocols`), checks the server's
certificate against the system CAs or a pinned SHA-256 (what moq-rs' `tls_fingerprints` does),
and yields a `MoqClientConnection` once the moq-lite session is up. Its `Publisher` answers
the server's Announce and Subscribe streams from `origin` (egress metered through `meter_for`);
with `ingest`, its `Subscriber` asks the server for broadcasts under `prefix` and writes them
into the model. The connection is one-shot: reconnecting is the caller's business (`upstream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
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
from cryptography.hazmat.primitives import hashes

from gateway.moq.publisher import DEFAULT_BACKLOG_BYTES, Publisher, SendBudget
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
    RawAllocator,
    WebTransportAllocator,
    close_capsule,
    parse_sf_string_list,
)
from gateway.moq.wire import (
    SessionCode,
    Version,
    stream_code_from_wire,
    stream_code_to_wire,
    version_for_alpn,
)
from model import Origin, Usage

__all__ = ["CONNECT_TIMEOUT_S", "MoqClientConnection", "MoqUrl", "connect", "parse_moq_url"]

CONNECT_TIMEOUT_S: Final = 10.0
"""Bound on the QUIC handshake plus the WebTransport CONNECT."""

_log = structlog.get_logger("moqsrt.moq.client")


@dataclass(frozen=True, slots=True, kw_only=True)
class MoqUrl:
    """A parsed MoQ URL. `webtransport`: `https://` (else raw QUIC). `path_query`: what a
    WebTransport CONNECT puts in `:path` (path plus query; it may hold a token: never log it)."""

    webtransport: bool
    host: str
    port: int
    path_query: str

    @property
    def authority(self) -> str:
        """`host:port` (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def redacted(self) -> str:
        """The URL without its query (safe to log)."""
        scheme = "https" if self.webtransport else "moqt"
        return f"{scheme}://{self.authority}{self.path_query.split('?', 1)[0]}"


def parse_moq_url(url: str) -> MoqUrl:
    """Parse `moqt://` / `moql://` (raw QUIC) or `https://` (WebTransport) `host[:port]/path?q`;
    the port defaults to 443. Raises `ValueError` for another scheme or no host."""
    split = urlsplit(url)
    scheme = split.scheme.lower()
    if scheme not in ("moqt", "moql", "https"):
        raise ValueError(f"MoQ URL scheme must be moqt, moql or https, not {scheme!r}")
    if not split.hostname:
        raise ValueError("MoQ URL has no host")
    try:
        port = split.port or 443
    except ValueError as exc:
        raise ValueError(f"MoQ URL port: {exc}") from exc
    path_query = (split.path or "/") + (f"?{split.query}" if split.query else "")
    return MoqUrl(
        webtransport=scheme == "https", host=split.hostname, port=port, path_query=path_query
    )


def client_configuration(
    url: MoqUrl,
    *,
    fingerprint: str | None,
    versions: Sequence[Version],
    idle_timeout_s: float,
) -> QuicConfiguration:
    """The aioquic client configuration: ALPN (moq-lite tokens, or `h3` for WebTransport),
    SNI, and trust: the system CAs, or none when `fingerprint` pins the certificate instead
    (checked by `MoqClientConnection` when the handshake completes)."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"] if url.webtransport else [v.alpn for v in versions],
        server_name=url.host,
        idle_timeout=idle_timeout_s,
        max_datagram_frame_size=65536,
    )
    if fingerprint is not None:
        config.verify_mode = ssl.CERT_NONE
    else:
        paths = ssl.get_default_verify_paths()
        config.load_verify_locations(
            cafile=paths.cafile or paths.openssl_cafile, capath=paths.capath
        )
    return config


class MoqClientConnection(QuicConnectionProtocol):
    """The client end of one QUIC connection carrying one moq-lite session (made by
    `connect`). `ready()` waits for the session; `wait_closed()` for its end; `close_session`
    ends it. `session`, `publisher`, `subscriber` are set once it is up."""

    def __init__(
        self,
        quic: QuicConnection,
        *,
        url: MoqUrl,
        fingerprint: str | None,
        versions: tuple[Version, ...],
        origin: Origin | None,
        meter_for: Callable[[str], Usage | None],
        ingest: OpenBroadcast | None,
        prefix: str,
        backlog_cap_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(quic, **kwargs)
        self._url = url
        self._fingerprint = fingerprint.lower() if fingerprint else None
        self._versions = versions
        self._origin = origin
        self._meter_for = meter_for
        self._ingest = ingest
        self._prefix = prefix
        self._backlog_cap = backlog_cap_bytes
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        # A failure nobody waits for any more (a cancelled connect) is not an error to report.
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._ended = asyncio.Event()
        self.session: MoqSession | None = None
        """The moq-lite session once up."""
        self.publisher: Publisher | None = None
        """Serves `origin` to the server, once up (None without an origin)."""
        self.subscriber: Subscriber | None = None
        """Ingests from the server, once up (None without `ingest`)."""
        self.budget: SendBudget | None = None
        self.close_code: int | None = None
        """The session's close code once ended."""
        self.close_reason = ""
        self._h3: H3Connection | None = None
        self._connect_stream: int | None = None
        self._local_bidi: set[int] = set()
        self._wt_streams: set[int] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._timer_handle: asyncio.TimerHandle | None = None

    # -- waiting --

    async def ready(self) -> None:
        """Wait until the session is up. Raises `ConnectionError` (refused, pin mismatch,
        closed first)."""
        await asyncio.shield(self._ready)

    async def wait_closed(self) -> None:
        """Wait until the session (and connection) ended."""
        await self._ended.wait()

    @property
    def is_closed(self) -> bool:
        """True once the connection ended."""
        return self._ended.is_set()

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
            self._handshake_done(event)
            return
        if isinstance(event, ConnectionTerminated):
            self._terminated(event.error_code, event.reason_phrase)
            return
        if self._h3 is None:
            if isinstance(event, StreamDataReceived | StreamReset | StopSendingReceived):
                self._to_session(event)
            return
        self._h3_event(event)

    def _handshake_done(self, event: HandshakeCompleted) -> None:
        if self._fingerprint is not None:
            cert = getattr(self._quic.tls, "_peer_certificate", None)  # aioquic keeps it there
            got = "" if cert is None else cert.fingerprint(hashes.SHA256()).hex()
            if got != self._fingerprint:
                self._fail(ConnectionRefusedError("server certificate does not match the pin"))
                self._close_transport(SessionCode.UNAUTHORIZED, "certificate pin mismatch")
                return
        if self._h3 is not None:
            self._send_connect()
            return
        version = version_for_alpn(event.alpn_protocol)
        if version is None:
            self._fail(ConnectionRefusedError(f"no moq-lite version ({event.alpn_protocol!r})"))
            self._close_transport(SessionCode.VERSION_NEGOTIATION_FAILED, "no moq-lite ALPN")
            return
        self._start(version, RawAllocator(self._quic))

    def _send_connect(self) -> None:
        assert self._h3 is not None
        stream_id = self._quic.get_next_available_stream_id()
        self._connect_stream = stream_id
        offered = ", ".join(f'"{v.alpn}"' for v in self._versions)
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"webtransport"),
            (b":scheme", b"https"),
            (b":authority", self._url.authority.encode()),
            (b":path", self._url.path_query.encode()),
            (b"wt-available-protocols", offered.encode()),
        ]
        self._h3.send_headers(stream_id, headers)
        self.transmit()

    def _h3_event(self, event: QuicEvent) -> None:
        assert self._h3 is not None
        if isinstance(event, StreamDataReceived) and event.stream_id in self._local_bidi:
            self._to_session(event)  # aioquic would parse our own WT bidi streams as HTTP
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived) and h3_event.stream_id == self._connect_stream:
                self._connect_answer(h3_event.headers)
            elif isinstance(h3_event, WebTransportStreamDataReceived):
                if h3_event.session_id == self._connect_stream and self.session is not None:
                    self._wt_streams.add(h3_event.stream_id)
                    self._to_session(h3_event)
                else:
                    self._quic.stop_stream(h3_event.stream_id, stream_code_to_wire(1))
            elif (
                isinstance(h3_event, DataReceived)
                and h3_event.stream_id == self._connect_stream
                and h3_event.stream_ended
            ):
                self._terminated(SessionCode.NO_ERROR, "server closed the WebTransport session")
                self._quic.close()
                self.transmit()
        if isinstance(event, StreamReset | StopSendingReceived) and (
            event.stream_id in self._wt_streams or event.stream_id in self._local_bidi
        ):
            self._to_session(event)

    def _connect_answer(self, headers: list[tuple[bytes, bytes]]) -> None:
        values = dict(headers)
        status = values.get(b":status", b"").decode("ascii", "replace")
        if status != "200":
            self._fail(ConnectionRefusedError(f"WebTransport CONNECT refused with {status}"))
            self._close_transport(SessionCode.NO_ERROR, f"refused {status}")
            return
        chosen = parse_sf_string_list(values.get(b"wt-protocol", b"").decode("ascii", "replace"))
        version = version_for_alpn(chosen[0]) if chosen else None
        if version is None or version not in self._versions:
            self._fail(ConnectionRefusedError("server chose no moq-lite version we offered"))
            self._close_transport(SessionCode.VERSION_NEGOTIATION_FAILED, "no common version")
            return
        assert self._h3 is not None
        assert self._connect_stream is not None
        allocator = WebTransportAllocator(self._h3, self._connect_stream)
        self._local_bidi = allocator.local_bidi
        self._start(version, allocator)

    # -- the session --

    def _start(self, version: Version, allocator: StreamAllocator) -> None:
        session = MoqSession(version, is_client=True, allocator=allocator)
        self.session = session
        self.budget = SendBudget(self._backlog, self._stream_backlog, self._backlog_cap)
        if self._origin is not None:
            self.publisher = Publisher(
                session,
                self._origin,
                flush=self.flush,
                budget=self.budget,
                meter_for=self._meter_for,
            )
        if self._ingest is not None:
            self.subscriber = Subscriber(
                session, open_broadcast=self._ingest, flush=self.flush, prefix=self._prefix
            )
            self.subscriber.start()
        if not self._ready.done():
            self._ready.set_result(None)
        self.flush()

    def _backlog(self) -> int:
        # aioquic keeps unacknowledged bytes in each stream sender's `_buffer`.
        return sum(len(s.sender._buffer) for s in self._quic._streams.values())

    def _stream_backlog(self, stream_id: int) -> int:
        stream = self._quic._streams.get(stream_id)
        return 0 if stream is None else len(stream.sender._buffer)

    def _to_session(self, event: QuicEvent | WebTransportStreamDataReceived) -> None:
        session = self.session
        if session is None:
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
        for event in events:
            if self.publisher is not None:
                self.publisher.handle(event)
            if self.subscriber is not None:
                self.subscriber.handle(event)
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
            with contextlib.suppress(ValueError, AssertionError):  # the stream is already gone
                if isinstance(command, StreamData):
                    quic.send_stream_data(command.stream_id, command.data, command.end_stream)
                elif isinstance(command, ResetStream):
                    quic.reset_stream(command.stream_id, stream_code_to_wire(command.code))
                elif isinstance(command, StopSending):
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
        """End the session with `code` and close the connection (idempotent)."""
        if self.session is not None and self.session.ended is None:
            self._dispatch(self.session.close(code, reason))
            return
        self._close_transport(code, reason)

    async def aclose(self) -> None:
        """Close the session and drain the publisher's tasks (idempotent)."""
        self.close_session(SessionCode.NO_ERROR, "client closing")
        if self.subscriber is not None:
            self.subscriber.close()
        if self.publisher is not None:
            await self.publisher.aclose()

    def _close_transport(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._h3 is not None and self._connect_stream is not None and self.session is not None:
            with contextlib.suppress(Exception):  # the CONNECT stream may be gone already
                self._h3.send_data(self._connect_stream, close_capsule(code, reason), True)
            self._quic.close(error_code=0, reason_phrase=reason)
        else:
            self._quic.close(error_code=code, reason_phrase=reason)
        self.transmit()

    def _fail(self, exc: ConnectionError) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)

    def _terminated(self, code: int, reason: str) -> None:
        if self._ended.is_set():
            return
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self.session is not None:
            self._dispatch(self.session.connection_lost(code, reason))
        self._fail(ConnectionResetError(f"connection closed ({code}: {reason})"))
        self._ended.set()
        for handle in (self._flush_handle, self._timer_handle):
            if handle is not None:
                handle.cancel()


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    origin: Origin | None = None,
    meter_for: Callable[[str], Usage | None] = lambda path: None,
    ingest: OpenBroadcast | None = None,
    prefix: str = "",
    fingerprint: str | None = None,
    versions: Sequence[Version] = (Version.LITE_03, Version.LITE_04),
    idle_timeout_s: float = 10.0,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    backlog_cap_bytes: int = DEFAULT_BACKLOG_BYTES,
) -> AsyncIterator[MoqClientConnection]:
    """Connect to the MoQ server at `url` and yield the connection once the session is up;
    leaving the block closes it (and drains its tasks).

    `origin`: served to the server (its Announce/Subscribe streams), each broadcast's reads
    metered into `meter_for(path)`. `ingest`: called for each broadcast the server announces
    under `prefix` (see `Subscriber`). `fingerprint`: hex SHA-256 of the server certificate's
    DER to pin instead of trusting the system CAs. `versions`: moq-lite versions offered, in
    preference order. Raises `ValueError` for a bad URL, `ConnectionError` when refused or the
    pin does not match, `TimeoutError` past `connect_timeout_s`, `OSError` for DNS/socket errors.
    """
    parsed = parse_moq_url(url)
    offered = tuple(versions)
    config = client_configuration(
        parsed, fingerprint=fingerprint, versions=offered, idle_timeout_s=idle_timeout_s
    )

    def create_protocol(quic: QuicConnection, **kwargs: Any) -> MoqClientConnection:
        return MoqClientConnection(
            quic,
            url=parsed,
            fingerprint=fingerprint,
            versions=offered,
            origin=origin,
            meter_for=meter_for,
            ingest=ingest,
            prefix=prefix,
            backlog_cap_bytes=backlog_cap_bytes,
            **kwargs,
        )

    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.timeout(connect_timeout_s):
            protocol = await stack.enter_async_context(
                quic_connect(
                    parsed.host,
                    parsed.port,
                    configuration=config,
                    create_protocol=create_protocol,
                    wait_connected=False,  # ready() waits: aioquic's waiter would outlive a cancel
                )
            )
            assert isinstance(protocol, MoqClientConnection)
            stack.push_async_callback(protocol.aclose)
            protocol.transmit()  # the ClientHello (aioquic does not send it without waiting)
            await protocol.ready()
        _log.info("moq.client_connected", url=parsed.redacted)
        yield protocol
