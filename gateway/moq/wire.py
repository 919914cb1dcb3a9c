"""moq-lite-03/04 wire codec: varints, size-prefixed messages, stream types and error codes.

Pure functions and frozen message classes, no state and no I/O: `encode(version)` returns a
message's bytes with its `Length (i)` prefix (and `Type (i)` where the stream carries several
kinds), `decode(body, version)` parses exactly one body. `take_message` cuts one size-prefixed
body off the front of a receive buffer. Layouts follow `reference/moq-lite-wire.md` (moq-ffi
0.4.18 as captured on the wire); every decode error is a `ProtocolViolation`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Self

from gateway.moq.errors import ProtocolViolation

__all__ = [
    "ALPN_BY_VERSION",
    "MAX_CONTROL_MESSAGE_BYTES",
    "MAX_VARINT",
    "Announce",
    "AnnounceRequest",
    "BidiStreamType",
    "GroupHeader",
    "Probe",
    "Reader",
    "SessionCode",
    "StreamCode",
    "Subscribe",
    "SubscribeDrop",
    "SubscribeOk",
    "SubscribeResponseType",
    "SubscribeUpdate",
    "UniStreamType",
    "Version",
    "encode_frame",
    "encode_varint",
    "stream_code_from_wire",
    "stream_code_to_wire",
    "take_message",
    "take_varint",
    "version_for_alpn",
]

MAX_VARINT: Final = (1 << 62) - 1
"""Largest QUIC variable-length integer."""

MAX_CONTROL_MESSAGE_BYTES: Final = 8192
"""Cap on one control message body (paths, track names): a peer announcing a longer body is
violating the protocol, and nothing is buffered past it."""


class Version(enum.IntEnum):
    """The moq-lite versions spoken here (codes as in moq-rs' SETUP, unused on the wire by 03/04:
    the version is the ALPN token or the WebTransport `wt-protocol`)."""

    LITE_03 = 0xFF0DAD03
    LITE_04 = 0xFF0DAD04

    @property
    def alpn(self) -> str:
        """The ALPN token / WebTransport sub-protocol naming this version."""
        return ALPN_BY_VERSION[self]


ALPN_BY_VERSION: Final[dict[Version, str]] = {
    Version.LITE_03: "moq-lite-03",
    Version.LITE_04: "moq-lite-04",
}


def version_for_alpn(token: str | None) -> Version | None:
    """The version an ALPN token (or `wt-protocol` value) names, or `None` when not spoken."""
    for version, alpn in ALPN_BY_VERSION.items():
        if alpn == token:
            return version
    return None


class BidiStreamType(enum.IntEnum):
    """`Stream Type (i)` opening a bidirectional (control) stream."""

    SESSION = 0x0
    ANNOUNCE = 0x1
    SUBSCRIBE = 0x2
    FETCH = 0x3
    PROBE = 0x4
    GOAWAY = 0x5
    TRACK = 0x6


class UniStreamType(enum.IntEnum):
    """`Stream Type (i)` opening a unidirectional (data) stream."""

    GROUP = 0x0
    SETUP = 0x1


class SubscribeResponseType(enum.IntEnum):
    """`Type (i)` of a publisher's message on a lite-03/04 subscribe stream."""

    SUBSCRIBE_OK = 0x0
    SUBSCRIBE_DROP = 0x1


class StreamCode(enum.IntEnum):
    """Stream error codes (RESET_STREAM / STOP_SENDING) as moq-ffi 0.4.18 reads them, before
    the WebTransport mapping (`stream_code_to_wire`). Application codes are 64 + n."""

    INTERNAL = 0
    CANCELLED = 1
    DELIVERY_TIMEOUT = 2
    SESSION_CLOSED = 3
    GOING_AWAY = 4
    TOO_FAR_BEHIND = 5
    MALFORMED_TRACK = 0x12
    NOT_FOUND = 0x33
    OLD = 0x34
    EVICTED = 0x35
    UNROUTABLE = 0x36
    WRONG_FRAME_SIZE = 0x37
    FRAME_TOO_LARGE = 0x38
    TIMESTAMP_MISMATCH = 0x39


class SessionCode(enum.IntEnum):
    """Session close codes (QUIC application CONNECTION_CLOSE on raw QUIC, the
    CLOSE_WEBTRANSPORT_SESSION u32 on WebTransport); never mapped."""

    NO_ERROR = 0
    INTERNAL = 1
    UNAUTHORIZED = 2
    PROTOCOL_VIOLATION = 3
    KEY_VALUE_FORMAT = 6
    GOAWAY_TIMEOUT = 0x10
    CONTROL_MESSAGE_TIMEOUT = 0x11
    VERSION_NEGOTIATION_FAILED = 0x15


_WT_CODE_FIRST: Final = 0x52E4A40FA8DB
_WT_CODE_LAST: Final = 0x52E4A40FA8DB + 0xFFFFFFFF + 0xFFFFFFFF // 0x1E


def stream_code_to_wire(code: int) -> int:
    """Map a moq stream code (0..2^32-1) into the WebTransport HTTP/3 error range, as moq-ffi
    0.4.18 expects on raw QUIC and WebTransport alike. Raises `ValueError` outside 32 bits."""
    if not 0 <= code <= 0xFFFFFFFF:
        raise ValueError(f"stream code {code} is not a 32-bit value")
    return _WT_CODE_FIRST + code + code // 0x1E


def stream_code_from_wire(wire: int) -> int:
    """The moq stream code a RESET_STREAM / STOP_SENDING code carries: mapped codes are
    unmapped, anything outside the WebTransport range is taken as the raw code (a peer that
    does not map, as later moq-rs releases plan on raw QUIC)."""
    if _WT_CODE_FIRST <= wire <= _WT_CODE_LAST:
        d = wire - _WT_CODE_FIRST
        return d - d // 0x1F
    return wire


# --- primitives ---------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """QUIC variable-length integer, shortest form. Raises `ValueError` outside 0..2^62-1."""
    if value < 0x40:
        if value < 0:
            raise ValueError(f"varint {value} is negative")
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"varint {value} exceeds 2^62-1")


def take_varint(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Parse a varint at `offset`: `(value, offset after it)`, or `None` when `buf` ends first
    (need more bytes). Non-minimal encodings are accepted, as RFC 9000 requires."""
    if offset >= len(buf):
        return None
    first = buf[offset]
    size = 1 << (first >> 6)
    end = offset + size
    if end > len(buf):
        return None
    value = first & 0x3F
    for i in range(offset + 1, end):
        value = (value << 8) | buf[i]
    return value, end


def _string(value: str) -> bytes:
    data = value.encode()
    return encode_varint(len(data)) + data


def _opt_group(value: int | None) -> bytes:
    return b"\x00" if value is None else encode_varint(value + 1)


def _u8(value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"byte field {value} outside 0..255")
    return bytes((value,))


def _sized(body: bytes) -> bytes:
    return encode_varint(len(body)) + body


class Reader:
    """Reads the fields of one complete message body; every shortfall or bad value raises
    `ProtocolViolation` (the body was already cut to its announced `Length`, so a short field
    is a malformed message, never "wait for more")."""

    __slots__ = ("_buf", "_pos", "what")

    def __init__(self, body: bytes | bytearray | memoryview, what: str) -> None:
        self._buf = body
        self._pos = 0
        self.what = what
        """The message name, for errors."""

    def varint(self) -> int:
        """The next `(i)` field."""
        got = take_varint(self._buf, self._pos)
        if got is None:
            raise ProtocolViolation(f"{self.what}: truncated varint")
        value, self._pos = got
        return value

    def u8(self) -> int:
        """The next `(8)` field."""
        if self._pos >= len(self._buf):
            raise ProtocolViolation(f"{self.what}: truncated byte field")
        value = self._buf[self._pos]
        self._pos += 1
        return value

    def flag(self) -> bool:
        """The next `(8)` field that must be 0 or 1."""
        value = self.u8()
        if value > 1:
            raise ProtocolViolation(f"{self.what}: boolean field is {value}")
        return value == 1

    def string(self) -> str:
        """The next `(s)` field (UTF-8)."""
        size = self.varint()
        end = self._pos + size
        if end > len(self._buf):
            raise ProtocolViolation(f"{self.what}: string runs past the message")
        raw = bytes(self._buf[self._pos : end])
        self._pos = end
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolViolation(f"{self.what}: string is not UTF-8") from exc

    def opt_group(self) -> int | None:
        """The next `OptGroup (i)` field: 0 = none, else sequence + 1."""
        value = self.varint()
        return None if value == 0 else value - 1

    def end(self) -> None:
        """Check every byte was consumed (moq-rs rejects trailing bytes too)."""
        if self._pos != len(self._buf):
            raise ProtocolViolation(f"{self.what}: {len(self._buf) - self._pos} trailing bytes")


def take_message(
    buf: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    limit: int = MAX_CONTROL_MESSAGE_BYTES,
) -> tuple[memoryview, int] | None:
    """Cut one `Length (i)`-prefixed body at `offset`: `(body, offset after it)`, or `None`
    until the whole body is in `buf`. Raises `ProtocolViolation` when `Length` exceeds `limit`
    (checked as soon as the length is readable, so nothing past the cap is ever awaited)."""
    got = take_varint(buf, offset)
    if got is None:
        return None
    size, start = got
    if size > limit:
        raise ProtocolViolation(f"message of {size} bytes exceeds the {limit}-byte cap")
    end = start + size
    if end > len(buf):
        return None
    return memoryview(buf)[start:end], end


# --- messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnounceRequest:
    """ANNOUNCE_REQUEST, first message of an Announce stream (subscriber to publisher).

    `prefix`: broadcast path prefix ("" = all). `exclude_hop`: lite-04 only, the sender's hop
    ID (0 = none); announcements whose hop chain holds it should be skipped.
    """

    prefix: str
    exclude_hop: int = 0

    def encode(self, version: Version) -> bytes:
        """Length-prefixed bytes."""
        body = _string(self.prefix)
        if version >= Version.LITE_04:
            body += encode_varint(self.exclude_hop)
        return _sized(body)

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body. Raises `ProtocolViolation`."""
        r = Reader(body, "ANNOUNCE_REQUEST")
        prefix = r.string()
        exclude = r.varint() if version >= Version.LITE_04 else 0
        r.end()
        return cls(prefix=prefix, exclude_hop=exclude)


@dataclass(frozen=True, slots=True, kw_only=True)
class Announce:
    """ANNOUNCE on an Announce stream (publisher to subscriber): a broadcast under the
    requested prefix became active (`active=True`) or ended.

    `suffix`: the path relative to the requested prefix. `hop_count`: lite-03's hop count;
    on lite-04 the chain itself is `hops` (and `hop_count` must equal its length).
    """

    active: bool
    suffix: str
    hop_count: int = 0
    hops: tuple[int, ...] = ()

    def encode(self, version: Version) -> bytes:
        """Length-prefixed bytes."""
        body = _u8(1 if self.active else 0) + _string(self.suffix)
        if version >= Version.LITE_04:
            body += encode_varint(len(self.hops)) + b"".join(map(encode_varint, self.hops))
        else:
            body += encode_varint(self.hop_count)
        return _sized(body)

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body. Raises `ProtocolViolation` (unknown status included)."""
        r = Reader(body, "ANNOUNCE")
        status = r.u8()
        if status > 1:
            raise ProtocolViolation(f"ANNOUNCE: status {status}")
        suffix = r.string()
        count = r.varint()
        hops: tuple[int, ...] = ()
        if version >= Version.LITE_04:
            if count > 256:
                raise ProtocolViolation(f"ANNOUNCE: {count} hops")
            hops = tuple(r.varint() for _ in range(count))
        r.end()
        return cls(active=status == 1, suffix=suffix, hop_count=count, hops=hops)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe:
    """SUBSCRIBE, first message of a Subscribe stream (subscriber to publisher).

    `subscribe_id`: chosen by the subscriber, echoed in every group header. `broadcast`: the
    full path. `priority`: 0..255, higher first. `max_latency_ms`: 0 = publisher default.
    `start_group` / `end_group`: `None` = the latest group / open-ended.
    """

    subscribe_id: int
    broadcast: str
    track: str
    priority: int = 0
    ordered: bool = False
    max_latency_ms: int = 0
    start_group: int | None = None
    end_group: int | None = None

    def encode(self, version: Version) -> bytes:
        """Length-prefixed bytes."""
        body = b"".join(
            (
                encode_varint(self.subscribe_id),
                _string(self.broadcast),
                _string(self.track),
                _u8(self.priority),
                _u8(1 if self.ordered else 0),
                encode_varint(self.max_latency_ms),
                _opt_group(self.start_group),
                _opt_group(self.end_group),
            )
        )
        return _sized(body)

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body. Raises `ProtocolViolation`."""
        r = Reader(body, "SUBSCRIBE")
        msg = cls(
            subscribe_id=r.varint(),
            broadcast=r.string(),
            track=r.string(),
            priority=r.u8(),
            ordered=r.flag(),
            max_latency_ms=r.varint(),
            start_group=r.opt_group(),
            end_group=r.opt_group(),
        )
        r.end()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeUpdate:
    """SUBSCRIBE_UPDATE (untyped), later messages on a Subscribe stream from the subscriber."""

    priority: int = 0
    ordered: bool = False
    max_latency_ms: int = 0
    start_group: int | None = None
    end_group: int | None = None

    def encode(self, version: Version) -> bytes:
        """Length-prefixed bytes."""
        body = b"".join(
            (
                _u8(self.priority),
                _u8(1 if self.ordered else 0),
                encode_varint(self.max_latency_ms),
                _opt_group(self.start_group),
                _opt_group(self.end_group),
            )
        )
        return _sized(body)

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body. Raises `ProtocolViolation`."""
        r = Reader(body, "SUBSCRIBE_UPDATE")
        msg = cls(
            priority=r.u8(),
            ordered=r.flag(),
            max_latency_ms=r.varint(),
            start_group=r.opt_group(),
            end_group=r.opt_group(),
        )
        r.end()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeOk:
    """SUBSCRIBE_OK (type 0x0), the publisher's first answer on a Subscribe stream. The body is
    informational: moq-rs echoes the requested priority and zeros."""

    priority: int = 0
    ordered: bool = False
    max_latency_ms: int = 0
    start_group: int | None = None
    end_group: int | None = None

    def encode(self, version: Version) -> bytes:
        """`Type (i)` + length-prefixed bytes."""
        body = b"".join(
            (
                _u8(self.priority),
                _u8(1 if self.ordered else 0),
                encode_varint(self.max_latency_ms),
                _opt_group(self.start_group),
                _opt_group(self.end_group),
            )
        )
        return encode_varint(SubscribeResponseType.SUBSCRIBE_OK) + _sized(body)

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body (after its type and length). Raises `ProtocolViolation`."""
        r = Reader(body, "SUBSCRIBE_OK")
        msg = cls(
            priority=r.u8(),
            ordered=r.flag(),
            max_latency_ms=r.varint(),
            start_group=r.opt_group(),
            end_group=r.opt_group(),
        )
        r.end()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeDrop:
    """SUBSCRIBE_DROP (type 0x1): groups `start`..`end` (inclusive) will never come, because
    of `error_code` (a `StreamCode`)."""

    start: int
    end: int
    error_code: int

    def encode(self, version: Version) -> bytes:
        """`Type (i)` + length-prefixed bytes."""
        body = encode_varint(self.start) + encode_varint(self.end) + encode_varint(self.error_code)
        return encode_varint(SubscribeResponseType.SUBSCRIBE_DROP) + _sized(body)

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body (after its type and length). Raises `ProtocolViolation`."""
        r = Reader(body, "SUBSCRIBE_DROP")
        msg = cls(start=r.varint(), end=r.varint(), error_code=r.varint())
        r.end()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupHeader:
    """GROUP, the header of a Group uni stream (after its `Stream Type (i)` 0x0): which
    subscription and which group the frames that follow belong to."""

    subscribe_id: int
    sequence: int

    def encode(self, version: Version) -> bytes:
        """Length-prefixed bytes (without the stream type)."""
        return _sized(encode_varint(self.subscribe_id) + encode_varint(self.sequence))

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body. Raises `ProtocolViolation`."""
        r = Reader(body, "GROUP")
        msg = cls(subscribe_id=r.varint(), sequence=r.varint())
        r.end()
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """PROBE on a Probe stream (publisher to subscriber): estimated bitrate (bits/s, 0 =
    unknown) and, on lite-04, RTT in milliseconds."""

    bitrate: int = 0
    rtt_ms: int = 0

    def encode(self, version: Version) -> bytes:
        """Length-prefixed bytes."""
        body = encode_varint(self.bitrate)
        if version >= Version.LITE_04:
            body += encode_varint(self.rtt_ms)
        return _sized(body)

    @classmethod
    def decode(cls, body: bytes | bytearray | memoryview, version: Version) -> Self:
        """Parse one body. Raises `ProtocolViolation`."""
        r = Reader(body, "PROBE")
        bitrate = r.varint()
        rtt = r.varint() if version >= Version.LITE_04 else 0
        r.end()
        return cls(bitrate=bitrate, rtt_ms=rtt)


def encode_frame(payload: bytes) -> bytes:
    """A lite-03/04 FRAME on a group stream: `Payload Length (i)` + payload. (Large payloads:
    send `encode_varint(len(payload))` and the payload separately to avoid the copy.)"""
    return encode_varint(len(payload)) + payload
