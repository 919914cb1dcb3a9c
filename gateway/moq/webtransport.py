"""WebTransport over HTTP/3 glue for moq-lite: the extended CONNECT and its answer, the session
close capsule, and the stream allocators of both transports.

Pure helpers (no loop): `parse_connect` reads a CONNECT request's headers into a
`ConnectRequest` (or a refusal status), `accept_headers` is the `200` with the chosen
`wt-protocol`, `close_capsule` the CLOSE_WEBTRANSPORT_SESSION capsule. `RawAllocator` and
`WebTransportAllocator` open streams on an aioquic connection for `MoqSession`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from aioquic.h3.connection import H3Connection
from aioquic.quic.connection import QuicConnection

from gateway.moq.wire import Version, encode_varint, take_varint, version_for_alpn

__all__ = [
    "CLOSE_WEBTRANSPORT_SESSION",
    "ConnectRequest",
    "RawAllocator",
    "WebTransportAllocator",
    "accept_headers",
    "close_capsule",
    "parse_close_capsule",
    "parse_connect",
    "parse_sf_string_list",
    "refuse_headers",
]

CLOSE_WEBTRANSPORT_SESSION: Final = 0x2843
"""Capsule type ending a WebTransport session (u32 code + UTF-8 reason)."""

_MAX_REASON_BYTES: Final = 1024
_MAX_PATH_CHARS: Final = 4096

Transport = Literal["quic", "webtransport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectRequest:
    """What a MoQ client asked for when it connected.

    `transport`: `quic` (raw QUIC, ALPN = version) or `webtransport`. `path`: the URL path
    without its leading `/` (`""` on raw QUIC lite-03/04, which carries none). `query`: the
    URL query (e.g. `{"jwt": ...}`: secret, kept out of the repr). `authority`: `:authority` on
    WebTransport, the TLS server name on raw QUIC (`""` if none). `peer`: `host:port`.
    """

    transport: Transport
    version: Version
    path: str = ""
    query: dict[str, str] = field(default_factory=dict, repr=False)
    authority: str = ""
    peer: str = ""

    @property
    def token(self) -> str | None:
        """The access token of the query (`jwt`, as moq-relay names it, else `token`)."""
        return self.query.get("jwt", self.query.get("token"))


def parse_sf_string_list(value: str) -> list[str]:
    """The quoted strings of an HTTP Structured-Field list (`"a", "b";p=1`), in order;
    parameters and non-string members are ignored. Never raises."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        if value[i] != '"':
            i += 1
            continue
        i += 1
        chars: list[str] = []
        while i < n and value[i] != '"':
            if value[i] == "\\" and i + 1 < n:
                i += 1
            chars.append(value[i])
            i += 1
        i += 1
        out.append("".join(chars))
        while i < n and value[i] != ",":
            i += 1
    return out


def parse_connect(
    headers: list[tuple[bytes, bytes]], offered: tuple[Version, ...], peer: str
) -> ConnectRequest | int:
    """Read an HTTP/3 request's headers as a WebTransport CONNECT for moq-lite.

    Returns the request, with the first protocol of the client's `wt-available-protocols`
    that is in `offered` (client preference wins, as moq-rs servers do), or an HTTP status to
    refuse with: 405 not an extended CONNECT for webtransport, 400 bad path, 406 no common
    protocol (no `wt-available-protocols` at all means a SETUP-negotiating client; refused
    too, since lite-01/02 are not spoken).
    """
    values: dict[bytes, bytes] = {}
    for name, value in headers:
        values.setdefault(name, value)
    if values.get(b":method") != b"CONNECT" or values.get(b":protocol") != b"webtransport":
        return 405
    raw_path = values.get(b":path", b"/").decode("utf-8", "replace")
    if len(raw_path) > _MAX_PATH_CHARS or not raw_path.startswith("/"):
        return 400
    split = urlsplit(raw_path)
    available = parse_sf_string_list(
        values.get(b"wt-available-protocols", b"").decode("ascii", "replace")
    )
    version = None
    for token in available:
        candidate = version_for_alpn(token)
        if candidate is not None and candidate in offered:
            version = candidate
            break
    if version is None:
        return 406
    return ConnectRequest(
        transport="webtransport",
        version=version,
        path=unquote(split.path).strip("/"),
        query=dict(parse_qsl(split.query, keep_blank_values=True)),
        authority=values.get(b":authority", b"").decode("utf-8", "replace"),
        peer=peer,
    )


def accept_headers(version: Version) -> list[tuple[bytes, bytes]]:
    """The `200` answering an accepted CONNECT: `wt-protocol` as an SF quoted string, plus
    the draft header moq-rs servers send (harmless)."""
    return [
        (b":status", b"200"),
        (b"wt-protocol", f'"{version.alpn}"'.encode()),
        (b"sec-webtransport-http3-draft", b"draft02"),
    ]


def refuse_headers(status: int) -> list[tuple[bytes, bytes]]:
    """A refusal (`status` 4xx/5xx) of a CONNECT or any other request."""
    return [(b":status", str(status).encode())]


def parse_close_capsule(data: bytes) -> tuple[int, str] | None:
    """`(code, reason)` of a CLOSE_WEBTRANSPORT_SESSION capsule at the start of `data`, or
    `None` when `data` does not start with a whole one."""
    got = take_varint(data)
    if got is None or got[0] != CLOSE_WEBTRANSPORT_SESSION:
        return None
    got_len = take_varint(data, got[1])
    if got_len is None:
        return None
    size, start = got_len
    body = data[start : start + size]
    if len(body) != size or size < 4:
        return None
    return int.from_bytes(body[:4], "big"), body[4:].decode("utf-8", "replace")


def close_capsule(code: int, reason: str) -> bytes:
    """CLOSE_WEBTRANSPORT_SESSION: type, length, u32 `code`, `reason` (UTF-8, truncated to
    1024 bytes)."""
    text = reason.encode()[:_MAX_REASON_BYTES]
    body = (code & 0xFFFFFFFF).to_bytes(4, "big") + text
    return encode_varint(CLOSE_WEBTRANSPORT_SESSION) + encode_varint(len(body)) + body


class RawAllocator:
    """Opens moq-lite streams on a raw QUIC connection. Creating the stream at once (with an
    empty write) moves aioquic's next-stream-id on, so two opens never get the same id."""

    def __init__(self, quic: QuicConnection) -> None:
        self._quic = quic

    def open_uni(self) -> int:
        """A new unidirectional stream id."""
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=True)
        self._quic.send_stream_data(stream_id, b"")
        return stream_id

    def open_bidi(self) -> int:
        """A new bidirectional stream id."""
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=False)
        self._quic.send_stream_data(stream_id, b"")
        return stream_id


class WebTransportAllocator:
    """Opens streams of WebTransport session `session_id` (aioquic writes the 0x54 / 0x41
    prefix and the session id). Locally opened bidi ids are recorded in `local_bidi`: the
    adapter must feed their data to the session itself, bypassing `H3Connection`, which
    mistakes it for an HTTP response (the aioquic pitfall of the wire reference, 2.3)."""

    def __init__(self, h3: H3Connection, session_id: int) -> None:
        self._h3 = h3
        self._session_id = session_id
        self.local_bidi: set[int] = set()
        """Bidi streams this side opened."""

    def open_uni(self) -> int:
        """A new unidirectional WebTransport stream id."""
        return self._h3.create_webtransport_stream(self._session_id, is_unidirectional=True)

    def open_bidi(self) -> int:
        """A new bidirectional WebTransport stream id."""
        stream_id = self._h3.create_webtransport_stream(self._session_id, is_unidirectional=False)
        self.local_bidi.add(stream_id)
        return stream_id
