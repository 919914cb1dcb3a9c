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
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    HandshakeCompleted,
)
from cryptography.hazmat.primitives import hashes

from gateway.moq.connection_base import MoqConnectionBase
from gateway.moq.publisher import DEFAULT_BACKLOG_BYTES, Publisher, SendBudget
from gateway.moq.session import (
    MoqSession,
    StreamAllocator,
)
from gateway.moq.subscriber import OpenBroadcast, Subscriber
from gateway.moq.webtransport import (
    RawAllocator,
    WebTransportAllocator,
    parse_sf_string_list,
)
from gateway.moq.wire import (
    SessionCode,
    Version,
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


class MoqClientConnection(MoqConnectionBase):
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
        self._ready: asyncio.Future[None] = self._loop.create_future()
        # A failure nobody waits for any more (a cancelled connect) is not an error to report.
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def ready(self) -> None:
        """Wait until the session is up. Raises `ConnectionError` (refused, pin mismatch,
        closed first)."""
        await asyncio.shield(self._ready)

    # -- the handshake and the CONNECT --

    def _on_handshake(self, event: HandshakeCompleted) -> None:
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
        self._wt_session = stream_id
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

    def _on_headers(self, event: HeadersReceived) -> None:
        if event.stream_id == self._wt_session:
            self._connect_answer(event.headers)

    def _accepts_wt_stream(self, session_id: int) -> bool:
        return session_id == self._wt_session and self.session is not None

    def _on_connect_data(self, event: DataReceived) -> None:
        if event.stream_ended:
            self._terminated(SessionCode.NO_ERROR, "server closed the WebTransport session")
            self._quic.close()
            self.transmit()

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
        assert self._wt_session is not None
        allocator = WebTransportAllocator(self._h3, self._wt_session)
        self._local_bidi = allocator.local_bidi
        self._start(version, allocator)

    # -- the session --

    def _start(self, version: Version, allocator: StreamAllocator) -> None:
        session = MoqSession(version, is_client=True, allocator=allocator)
        self.session = session
        self.budget = SendBudget(self._backlog, self.stream_backlog, self._backlog_cap)
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

    # -- the end --

    def _capsule_stream(self) -> int | None:
        # Before the session is up (a refused CONNECT) there is nothing to close with a capsule.
        return self._wt_session if self.session is not None else None

    async def aclose(self) -> None:
        """Close the session and drain the publisher's tasks (idempotent)."""
        self.close_session(SessionCode.NO_ERROR, "client closing")
        if self.subscriber is not None:
            self.subscriber.close()
        if self.publisher is not None:
            await self.publisher.aclose()

    def _fail(self, exc: ConnectionError) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)

    def _on_ended(self, code: int, reason: str) -> None:
        self._fail(ConnectionResetError(f"connection closed ({code}: {reason})"))


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
