"""Owning objects over libsrt sockets, and the asyncio-facing connection and listener.

`SrtSocket` owns one libsrt socket id: options, bind/listen/connect/accept, non-blocking
send/recv, statistics, and an idempotent `close()` (a `weakref.finalize` closes a forgotten
one with a ResourceWarning). `SrtConnection` and `SrtListener` are what callers hold: the
reactor's I/O thread feeds them (received batches, accepted callers, end of stream) on the
event loop, and their `close()` hands the socket back to that thread, which closes it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ipaddress
import math
import socket
import struct
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, Self

from gateway.srt import lib
from gateway.srt.errors import SrtError, check, error_from_last
from gateway.srt.lib import SockOpt, SockStatus, SrtErrno

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "Accept",
    "HandshakeInfo",
    "LinkStats",
    "Reject",
    "SrtConnection",
    "SrtListener",
    "SrtOptions",
    "SrtSocket",
    "open_socket_count",
    "srt_now_us",
]

#: libsrt sizes its receive buffer in units of MSS - 28 (UDP/IP header) bytes (1472 at MSS 1500):
#: SRTO_RCVBUF in bytes is divided by this, whatever the payload size.
RCVBUF_UNIT_BYTES: Final = 1472
#: libsrt's live-mode defaults (srt.h 1.5.1): receive buffer 8192 units, flow window 25600.
DEFAULT_RCVBUF_PACKETS: Final = 8192
DEFAULT_FC_PACKETS: Final = 25600
MAX_PAYLOAD_BYTES: Final = 1456
MAX_STREAM_ID_CHARS: Final = 512
#: Large enough for sockaddr_in6 (28 bytes); libsrt never writes more than sockaddr_storage.
SOCKADDR_BUF_BYTES: Final = 128


def srt_now_us() -> int:
    """libsrt's steady clock now, in microseconds (`srt_time_now()`): the clock of `srctime_us`."""
    return lib.time_now()


# ---- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SrtOptions:
    """Socket options for a listener (accepted callers inherit them) or a caller.

    - `latency_ms`: SRTO_LATENCY (receive and peer latency), milliseconds.
    - `passphrase` / `pbkeylen`: SRTO_PASSPHRASE (10..79 characters; None = unencrypted) and
      SRTO_PBKEYLEN (16, 24 or 32 bytes: AES-128/192/256).
    - `payload_size`: SRTO_PAYLOADSIZE, bytes per message at most (1316 = 7 TS packets).
    - `maxbw_bytes_s`: SRTO_MAXBW, a cap on what *this* side sends (None = libsrt's 1 Gbit/s).
      It cannot limit a publisher: that is the receive buffer's and the server's job.
    - `peer_idle_timeout_ms`: SRTO_PEERIDLETIMEO, silence before the link counts as broken.
    - `rcvbuf_bytes`: SRTO_RCVBUF; None sizes it from `latency_ms` x `max_bitrate_bps` (see
      `receive_buffer_bytes`), because libsrt 1.5.1 locks a live connection up, rather than
      dropping, once the receive buffer overflows.
    - `max_bitrate_bps`: the highest bitrate the receive buffer must absorb, bits per second.
    - `stream_id`: SRTO_STREAMID a caller sends (at most 512 characters).
    - `linger_s`: SRTO_LINGER, seconds close() keeps sending queued data (None = libsrt's
      live default, off; publishers want it so the tail is not lost).
    - `connect_timeout_ms`: SRTO_CONNTIMEO for callers.
    """

    latency_ms: int = 120
    passphrase: str | None = None
    pbkeylen: int = 16
    payload_size: int = 1316
    maxbw_bytes_s: int | None = None
    peer_idle_timeout_ms: int = 5000
    rcvbuf_bytes: int | None = None
    max_bitrate_bps: int = 100_000_000
    stream_id: str | None = None
    linger_s: int | None = None
    connect_timeout_ms: int = 3000

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, not {self.latency_ms}")
        _check_passphrase(self.passphrase)
        if self.pbkeylen not in (16, 24, 32):
            raise ValueError(f"pbkeylen must be 16, 24 or 32, not {self.pbkeylen}")
        if not 188 <= self.payload_size <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload_size must be 188..{MAX_PAYLOAD_BYTES}")
        if self.maxbw_bytes_s is not None and self.maxbw_bytes_s <= 0:
            raise ValueError("maxbw_bytes_s must be positive (None = libsrt default)")
        if self.peer_idle_timeout_ms <= 0 or self.max_bitrate_bps <= 0:
            raise ValueError("peer_idle_timeout_ms and max_bitrate_bps must be positive")
        if self.rcvbuf_bytes is not None and self.rcvbuf_bytes < 32 * RCVBUF_UNIT_BYTES:
            raise ValueError(f"rcvbuf_bytes must be at least {32 * RCVBUF_UNIT_BYTES}")
        if self.stream_id is not None and len(self.stream_id) > MAX_STREAM_ID_CHARS:
            raise ValueError(f"stream_id is longer than {MAX_STREAM_ID_CHARS} characters")
        if self.linger_s is not None and self.linger_s < 0:
            raise ValueError("linger_s must be >= 0")

    def receive_buffer_bytes(self) -> int:
        """The SRTO_RCVBUF value set: `rcvbuf_bytes`, or room for 2 x latency + 100 ms at
        `max_bitrate_bps` in `payload_size` messages, never below libsrt's default 8192 units."""
        if self.rcvbuf_bytes is not None:
            return self.rcvbuf_bytes
        window_s = (2 * self.latency_ms + 100) / 1000
        packets = math.ceil(window_s * self.max_bitrate_bps / 8 / self.payload_size)
        return max(packets, DEFAULT_RCVBUF_PACKETS) * RCVBUF_UNIT_BYTES

    def flow_window_packets(self) -> int:
        """The SRTO_FC value set: at least the receive buffer, which libsrt caps at FC."""
        rcvbuf_packets = math.ceil(self.receive_buffer_bytes() / RCVBUF_UNIT_BYTES)
        return max(DEFAULT_FC_PACKETS, rcvbuf_packets)


def _check_passphrase(passphrase: str | None) -> None:
    if passphrase is not None and not 10 <= len(passphrase) <= 79:
        raise ValueError("an SRT passphrase must be 10..79 characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkStats:
    """One `srt_bstats` snapshot; counters are totals since the connection started.

    Byte counters include the SRT/UDP/IP headers (44 bytes per packet), so `bytes_recv` is
    at least the payload received; the `*_unique` ones count payload bytes once (no
    retransmits). Rates are Mbit/s over libsrt's last interval; `rtt_ms` is smoothed RTT.
    """

    rtt_ms: float
    pkt_sent: int
    pkt_recv: int
    pkt_sent_loss: int
    pkt_recv_loss: int
    pkt_retrans: int
    pkt_recv_drop: int
    pkt_send_drop: int
    bytes_sent: int
    bytes_recv: int
    bytes_retrans: int
    mbps_send: float
    mbps_recv: float
    pkt_sent_unique: int = 0
    pkt_recv_unique: int = 0
    bytes_sent_unique: int = 0
    bytes_recv_unique: int = 0
    bytes_recv_drop: int = 0
    bytes_send_drop: int = 0
    pkt_recv_undecrypt: int = 0
    connected_ms: int = 0

    @classmethod
    def from_struct(cls, perf: lib.SrtTraceBStats) -> LinkStats:
        """Copy the fields callers use out of an SRT_TRACEBSTATS."""
        return cls(
            rtt_ms=perf.msRTT,
            pkt_sent=perf.pktSentTotal,
            pkt_recv=perf.pktRecvTotal,
            pkt_sent_loss=perf.pktSndLossTotal,
            pkt_recv_loss=perf.pktRcvLossTotal,
            pkt_retrans=perf.pktRetransTotal,
            pkt_recv_drop=perf.pktRcvDropTotal,
            pkt_send_drop=perf.pktSndDropTotal,
            bytes_sent=perf.byteSentTotal,
            bytes_recv=perf.byteRecvTotal,
            bytes_retrans=perf.byteRetransTotal,
            mbps_send=perf.mbpsSendRate,
            mbps_recv=perf.mbpsRecvRate,
            pkt_sent_unique=perf.pktSentUniqueTotal,
            pkt_recv_unique=perf.pktRecvUniqueTotal,
            bytes_sent_unique=perf.byteSentUniqueTotal,
            bytes_recv_unique=perf.byteRecvUniqueTotal,
            bytes_recv_drop=perf.byteRcvDropTotal,
            bytes_send_drop=perf.byteSndDropTotal,
            pkt_recv_undecrypt=perf.pktRcvUndecryptTotal,
            connected_ms=perf.msTimeStamp,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeInfo:
    """What the listener knows about a caller before accepting it.

    `stream_id` is the caller's SRTO_STREAMID ("" if none; invalid UTF-8 replaced), `peer`
    its (host, port).
    """

    stream_id: str
    peer: tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """Let the caller in. `passphrase` (10..79 characters) encrypts this connection (None keeps
    the listener's); `context` is handed back as `SrtConnection.context`; `pbkeylen` overrides
    the listener's key length for this connection."""

    passphrase: str | None = None
    context: object = None
    pbkeylen: int | None = None

    def __post_init__(self) -> None:
        _check_passphrase(self.passphrase)
        if self.pbkeylen is not None and self.pbkeylen not in (16, 24, 32):
            raise ValueError("pbkeylen must be 16, 24 or 32")


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the caller with `code` (1000..2999), which it reads with srt_getrejectreason:
    1400 bad request, 1401 unauthorized, 1403 forbidden, 1404 not found, 1409 conflict,
    1503 unavailable."""

    code: int

    def __post_init__(self) -> None:
        if not 1000 <= self.code < 3000:
            raise ValueError(f"reject codes are 1000..2999, not {self.code}")


# ---- addresses -------------------------------------------------------------------------------


def pack_sockaddr(host: str, port: int) -> bytes:
    """A `sockaddr_in` / `sockaddr_in6` for a numeric IPv4 or IPv6 `host` and `port`."""
    ip = ipaddress.ip_address(host)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    if ip.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack(">H", port) + ip.packed + bytes(8)
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack(">HI", port, 0)
        + ip.packed
        + struct.pack("=I", 0)
    )


def unpack_sockaddr(raw: bytes) -> tuple[str, int]:
    """(host, port) of a packed sockaddr_in / sockaddr_in6; ("", 0) for other families."""
    if len(raw) < 8:
        return ("", 0)
    (family,) = struct.unpack_from("=H", raw)
    (port,) = struct.unpack_from(">H", raw, 2)
    if family == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6 and len(raw) >= 24:
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port)
    return ("", 0)


# ---- SrtSocket -------------------------------------------------------------------------------

_count_lock = threading.Lock()
_counts = {"opened": 0, "closed": 0}


def _count(key: str) -> None:
    with _count_lock:
        _counts[key] += 1


def open_socket_count() -> int:
    """libsrt sockets this process created or accepted and has not closed yet (leak checks)."""
    with _count_lock:
        return _counts["opened"] - _counts["closed"]


def _finalize_socket(handle: int) -> None:
    warnings.warn(f"unclosed SRT socket @{handle}", ResourceWarning, stacklevel=1)
    _count("closed")
    lib.close(handle)


class SrtSocket:
    """Owns one libsrt socket id (SRTSOCKET) until `close()`.

    Thread-agnostic: the reactor decides which thread calls what (srt_close, srt_listen and
    srt_connect only on its I/O thread, because they take locks libsrt holds while a listen
    callback runs). Methods raise SrtError (via `check`) with libsrt's message; after
    `close()` they raise SrtError(SRT_EINVSOCK).
    """

    __slots__ = ("__weakref__", "_finalizer", "_handle", "_mctrl", "_mctrl_ref")

    def __init__(self, handle: int) -> None:
        """Take ownership of `handle` (from srt_create_socket or srt_accept)."""
        self._handle = handle
        # One message control per socket, its pointer built once: sends set `srctime` on it.
        self._mctrl = lib.SrtMsgCtrl()
        lib.msgctrl_init(self._mctrl)
        self._mctrl_ref = lib.msgctrl_ref(self._mctrl)
        _count("opened")
        self._finalizer = weakref.finalize(self, _finalize_socket, handle)
        # At interpreter exit srt_cleanup (reactor.py) closes what is left; no warning then.
        self._finalizer.atexit = False

    @classmethod
    def create(cls) -> SrtSocket:
        """`srt_create_socket()`: a new unbound socket (live mode by default)."""
        return cls(check(lib.create_socket(), "srt_create_socket"))

    @property
    def handle(self) -> int:
        """The libsrt socket id (valid until close)."""
        return self._handle

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return not self._finalizer.alive

    def _h(self, op: str) -> int:
        if not self._finalizer.alive:
            raise SrtError(SrtErrno.SRT_EINVSOCK, "socket is closed", op=op)
        return self._handle

    def close(self) -> None:
        """`srt_close()`, once; later calls do nothing. Errors (id already gone) are ignored."""
        if self._finalizer.detach() is not None:
            _count("closed")
            lib.close(self._handle)

    # -- options

    def set_int(self, opt: SockOpt, value: int) -> None:
        """`srt_setsockflag(opt, int32)`."""
        check(lib.setsockflag(self._h("srt_setsockflag"), opt, ctypes.c_int(value)), _op(opt))

    def set_int64(self, opt: SockOpt, value: int) -> None:
        """`srt_setsockflag(opt, int64)` (SRTO_MAXBW, SRTO_INPUTBW)."""
        check(lib.setsockflag(self._h("srt_setsockflag"), opt, ctypes.c_int64(value)), _op(opt))

    def set_bytes(self, opt: SockOpt, value: bytes) -> None:
        """`srt_setsockflag(opt, char*, len)` (SRTO_PASSPHRASE, SRTO_STREAMID)."""
        check(lib.setsockflag_bytes(self._h("srt_setsockflag"), opt, value), _op(opt))

    def set_linger(self, seconds: int) -> None:
        """SRTO_LINGER: keep sending queued data up to `seconds` after close (0 = off)."""
        linger = lib.SrtLinger(1 if seconds > 0 else 0, seconds)
        check(
            lib.setsockflag(self._h("srt_setsockflag"), SockOpt.SRTO_LINGER, linger), "SRTO_LINGER"
        )

    def get_int(self, opt: SockOpt) -> int:
        """`srt_getsockflag(opt)` for 32-bit options."""
        value = ctypes.c_int(0)
        check(lib.getsockflag(self._h("srt_getsockflag"), opt, value), _op(opt, "srt_getsockflag"))
        return value.value

    def get_int64(self, opt: SockOpt) -> int:
        """`srt_getsockflag(opt)` for 64-bit options (SRTO_MAXBW)."""
        value = ctypes.c_int64(0)
        check(lib.getsockflag(self._h("srt_getsockflag"), opt, value), _op(opt, "srt_getsockflag"))
        return value.value

    def get_bytes(self, opt: SockOpt) -> bytes:
        """`srt_getsockflag(opt)` for string options (SRTO_STREAMID)."""
        rc, value = lib.getsockflag_bytes(self._h("srt_getsockflag"), opt)
        check(rc, _op(opt, "srt_getsockflag"))
        return value

    def get_linger(self) -> int:
        """SRTO_LINGER in seconds (0 = off)."""
        linger = lib.SrtLinger(0, 0)
        check(
            lib.getsockflag(self._h("srt_getsockflag"), SockOpt.SRTO_LINGER, linger), "SRTO_LINGER"
        )
        return linger.l_linger if linger.l_onoff else 0

    def apply(self, options: SrtOptions, *, caller: bool) -> None:
        """Set `options` before bind/connect, plus non-blocking mode (SRTO_RCVSYN/SNDSYN off).

        On a listener these are inherited by every accepted socket, RCVBUF/FC included.
        """
        self.set_int(SockOpt.SRTO_TRANSTYPE, 0)  # SRTT_LIVE
        self.set_int(SockOpt.SRTO_SNDSYN, 0)
        self.set_int(SockOpt.SRTO_RCVSYN, 0)
        self.set_int(SockOpt.SRTO_LATENCY, options.latency_ms)
        self.set_int(SockOpt.SRTO_PAYLOADSIZE, options.payload_size)
        self.set_int(SockOpt.SRTO_PEERIDLETIMEO, options.peer_idle_timeout_ms)
        # FC first: libsrt caps the receive buffer at the flow window.
        self.set_int(SockOpt.SRTO_FC, options.flow_window_packets())
        self.set_int(SockOpt.SRTO_RCVBUF, options.receive_buffer_bytes())
        if options.maxbw_bytes_s is not None:
            self.set_int64(SockOpt.SRTO_MAXBW, options.maxbw_bytes_s)
        if options.passphrase is not None:
            self.set_int(SockOpt.SRTO_PBKEYLEN, options.pbkeylen)
            self.set_bytes(SockOpt.SRTO_PASSPHRASE, options.passphrase.encode())
        if options.linger_s is not None:
            self.set_linger(options.linger_s)
        if caller:
            self.set_int(SockOpt.SRTO_CONNTIMEO, options.connect_timeout_ms)
            if options.stream_id is not None:
                self.set_bytes(SockOpt.SRTO_STREAMID, options.stream_id.encode())

    # -- connection set-up (reactor I/O thread)

    def bind(self, addr: bytes) -> None:
        """`srt_bind()` to a packed sockaddr (see `pack_sockaddr`); port 0 picks a free port."""
        check(lib.bind(self._h("srt_bind"), addr), "srt_bind")

    def listen(self, backlog: int) -> None:
        """`srt_listen()`: accept up to `backlog` callers not yet picked up by srt_accept."""
        check(lib.listen(self._h("srt_listen"), backlog), "srt_listen")

    def connect(self, addr: bytes) -> None:
        """`srt_connect()`; non-blocking sockets return at once, epoll reports the outcome."""
        check(lib.connect(self._h("srt_connect"), addr), "srt_connect")

    def accept(self, addr_buf: ctypes.Array[ctypes.c_char]) -> SrtSocket | None:
        """`srt_accept()` without blocking: the new socket, or None when none is waiting."""
        handle = lib.accept(self._h("srt_accept"), addr_buf)
        if handle >= 0:
            return SrtSocket(handle)
        exc = error_from_last("srt_accept")
        if exc.code == SrtErrno.SRT_EASYNCRCV:
            return None
        raise exc

    def sockname(self) -> tuple[str, int]:
        """`srt_getsockname()`: the bound (host, port)."""
        buf = ctypes.create_string_buffer(SOCKADDR_BUF_BYTES)
        check(lib.getsockname(self._h("srt_getsockname"), buf), "srt_getsockname")
        return unpack_sockaddr(buf.raw)

    def peername(self) -> tuple[str, int]:
        """`srt_getpeername()`: the peer's (host, port)."""
        buf = ctypes.create_string_buffer(SOCKADDR_BUF_BYTES)
        check(lib.getpeername(self._h("srt_getpeername"), buf), "srt_getpeername")
        return unpack_sockaddr(buf.raw)

    def state(self) -> SockStatus:
        """`srt_getsockstate()` (SRTS_NONEXIST once closed)."""
        if not self._finalizer.alive:
            return SockStatus.SRTS_NONEXIST
        return SockStatus(lib.getsockstate(self._handle))

    def reject_reason(self) -> int:
        """`srt_getrejectreason()`: why this caller's connect failed (0 = it did not)."""
        return lib.getrejectreason(self._h("srt_getrejectreason"))

    # -- data

    def send(
        self, payload: bytes | bytearray | memoryview, *, srctime_us: int | None = None
    ) -> bool:
        """`srt_sendmsg2()` one message without blocking.

        `srctime_us` is the message's SRT source time on libsrt's clock (`srt_now_us()`,
        microseconds; never in the future): the receiver's TSBPD plays it out at that time plus
        the latency. None stamps it with the send time. True when queued; False when the send
        buffer is full (SRT_EASYNCSND, nothing sent). Raises SrtConnectionLost once the
        connection broke, SrtError (e.g. SRT_ELARGEMSG for a payload over `payload_size`)
        otherwise.
        """
        if not isinstance(payload, bytes):  # bytearray / memoryview: ctypes wants bytes
            payload = bytes(payload)
        return self.send_many((payload,), srctime_us=srctime_us) == 1

    def send_many(self, payloads: Sequence[bytes], *, srctime_us: int | None = None) -> int:
        """`srt_sendmsg2()` each of `payloads` (bytes only) in order without blocking, all with
        the source time `srctime_us` (as in `send`; None stamps each with its send time).

        Returns how many were queued (the first ones): `len(payloads)`, or fewer when the
        send buffer filled (SRT_EASYNCSND; the rest were not sent). Raises SrtConnectionLost
        once the connection broke, SrtError for any other failure (e.g. SRT_ELARGEMSG); the
        payloads before the failing one stay queued then.
        """
        if srctime_us is None:
            ref = None
        else:
            self._mctrl.srctime = srctime_us
            ref = self._mctrl_ref
        queued = lib.sendmsg2_many(self._h("srt_sendmsg2"), payloads, ref)
        if queued == len(payloads):
            return queued
        # Read right after the failing call, on its thread (libsrt's last error is per thread).
        exc = error_from_last("srt_sendmsg2")
        if exc.code == SrtErrno.SRT_EASYNCSND:
            return queued
        raise exc

    def stats(self) -> LinkStats:
        """`srt_bstats()` without clearing."""
        perf = lib.SrtTraceBStats()
        check(lib.bstats(self._h("srt_bstats"), perf), "srt_bstats")
        return LinkStats.from_struct(perf)

    def send_buffer_bytes(self) -> int:
        """`srt_getsndbuffer()`: payload bytes queued and not yet acknowledged."""
        rc, _blocks, nbytes = lib.getsndbuffer(self._h("srt_getsndbuffer"))
        check(rc, "srt_getsndbuffer")
        return nbytes


def _op(opt: SockOpt, call: str = "srt_setsockflag") -> str:
    return f"{call}({opt.name})"


# ---- asyncio-facing objects ------------------------------------------------------------------


class _Owner(Protocol):
    """What connections and listeners need from the reactor (implemented in reactor.py)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the reactor delivers to."""
        ...

    def close_socket(self, sock: SrtSocket, on_closed: Callable[[], None] | None) -> None:
        """Close `sock` on the I/O thread, then call `on_closed()` on the loop."""

    def close_listener(self, state: _ListenerState, on_closed: Callable[[], None] | None) -> None:
        """Stop a listener: reject new callers, close its socket on the I/O thread, then
        call `on_closed()` on the loop."""


class _Ended:
    """Sentinel type: the connection has not ended."""


_NOT_ENDED: Final = _Ended()


def _finalize_connection(owner: _Owner, sock: SrtSocket) -> None:
    warnings.warn(f"unclosed SrtConnection @{sock.handle}", ResourceWarning, stacklevel=1)
    owner.close_socket(sock, None)


class SrtConnection:
    """One connected SRT socket: a publisher or viewer the listener accepted, or a caller.

    Received messages arrive in batches from the reactor's I/O thread (`recv_batch`, or a
    receiver callback, `set_receiver`); `send` never blocks. Whoever holds it closes it
    (`close()` or `async with`); the reactor closes whatever is left when it closes. A
    forgotten one is closed with a ResourceWarning. Use it from the event loop's thread only.
    """

    def __init__(
        self,
        sock: SrtSocket,
        owner: _Owner,
        *,
        stream_id: str,
        peer: tuple[str, int],
        context: object,
        options: SrtOptions,
    ) -> None:
        """Built by the reactor (possibly on its I/O thread); do not construct directly."""
        self._sock = sock
        self._owner = owner
        #: The caller's SRTO_STREAMID ("" when it sent none).
        self.stream_id = stream_id
        #: The peer's (host, port).
        self.peer = peer
        #: What the handshake hook's Accept carried (None for callers).
        self.context = context
        #: The options the socket was set up with (a listener's, for accepted sockets).
        self.options = options
        self._pending: list[bytes] = []
        self._receiver: Callable[[list[bytes]], None] | None = None
        self._receiver_error: Exception | None = None
        self._end: BaseException | _Ended | None = _NOT_ENDED
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._released_flag = False
        self._done: asyncio.Future[None] | None = None
        self._final_stats: LinkStats | None = None
        self._finalizer = weakref.finalize(self, _finalize_connection, owner, sock)
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self.ended else "open"
        return f"<SrtConnection @{self._sock.handle} {self.peer} {self.stream_id!r} {state}>"

    @property
    def handle(self) -> int:
        """The libsrt socket id (for logs and leak checks)."""
        return self._sock.handle

    @property
    def ended(self) -> bool:
        """True once the peer ended the connection (EOF or breakage) or close() was called."""
        return self._closed or not isinstance(self._end, _Ended)

    async def recv_batch(self) -> list[bytes]:
        """All messages received since the last call, oldest first; waits while there are none.

        Each message is one srt_recvmsg payload (at most `payload_size` bytes; for ffmpeg a
        multiple of 188). Returns [] at a clean end (the peer closed, or close() was called
        here); raises SrtConnectionLost when the link broke (peer silent for about
        `peer_idle_timeout_ms`). Only one task may wait at a time (RuntimeError otherwise).
        """
        while True:
            if self._receiver_error is not None:
                error, self._receiver_error = self._receiver_error, None
                raise error
            if self._pending:
                batch, self._pending = self._pending, []
                return batch
            if self._closed:
                return []
            if not isinstance(self._end, _Ended):
                if self._end is not None:
                    raise self._end
                return []
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting in recv_batch()")
            waiter: asyncio.Future[None] = self._owner.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def set_receiver(self, receiver: Callable[[list[bytes]], None] | None) -> None:
        """Hand every batch received from now on to `receiver(batch)` (on the loop thread, in
        the reactor's delivery, with the batch's ownership) instead of keeping it for
        `recv_batch()`: no task wake-up per batch. Messages already waiting go to it at once.
        While it is set, `recv_batch()` only reports the end (returns [] or raises as usual).
        If `receiver` raises an `Exception`, it is removed and `recv_batch()` raises that
        exception once; later batches wait for `recv_batch()` again. None removes it.
        """
        self._receiver = receiver
        if receiver is not None and self._pending:
            batch, self._pending = self._pending, []
            self._deliver(receiver, batch)

    def send(
        self, payload: bytes | bytearray | memoryview, *, srctime_us: int | None = None
    ) -> bool:
        """Queue one message (`srt_sendmsg2`, non-blocking): at most `payload_size` bytes.

        `srctime_us`: SRT source time on libsrt's clock (`srt_now_us()`, never in the future);
        None = now. True when queued; False when libsrt's send buffer is full (nothing was
        sent: retry later or skip). Raises SrtConnectionLost when the connection broke,
        SrtError after close() or for an oversized payload.
        """
        if self._closed:
            raise SrtError(SrtErrno.SRT_ESCLOSED, "connection is closed", op="srt_sendmsg2")
        return self._sock.send(payload, srctime_us=srctime_us)

    def send_many(self, payloads: Sequence[bytes], *, srctime_us: int | None = None) -> int:
        """Queue `payloads` (bytes, each at most `payload_size`) in order, non-blocking, all
        with the source time `srctime_us` (as in `send`): one call for a burst.

        Returns how many were queued, from the first: `len(payloads)`, or fewer when libsrt's
        send buffer filled (the rest were not sent: retry later or skip them). Raises as
        `send` does (the payloads before a failing one stay queued).
        """
        if self._closed:
            raise SrtError(SrtErrno.SRT_ESCLOSED, "connection is closed", op="srt_sendmsg2")
        return self._sock.send_many(payloads, srctime_us=srctime_us)

    def send_buffer_bytes(self) -> int:
        """Bytes sent but not yet acknowledged by the peer (`srt_getsndbuffer`); 0 once closed."""
        if self._closed:
            return 0
        return self._sock.send_buffer_bytes()

    def stats(self) -> LinkStats:
        """Link statistics (`srt_bstats`).

        libsrt refuses srt_bstats once the link broke or the peer closed, so after the end
        this is the last snapshot the I/O thread took (at most about 0.1 s before the last
        data arrived, 0.5 s for idle links), and after close() the one taken at close.
        Raises SrtError only when no snapshot exists.
        """
        if not self._closed:
            try:
                return self._sock.stats()
            except SrtError:
                if self._final_stats is None:
                    raise
        if self._final_stats is None:
            raise SrtError(SrtErrno.SRT_ESCLOSED, "connection is closed", op="srt_bstats")
        return self._final_stats

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the peer acknowledged everything sent, then for its latency.

        A libsrt 1.5.1 receiver drops what it holds for its play time (TSBPD) as soon as our
        close() reaches it, so call this before close() when the tail matters. True when
        done; False when the connection ended or `timeout_s` ran out first. Polls every 10 ms.
        """
        loop = self._owner.loop
        deadline = loop.time() + timeout_s
        try:
            while self.send_buffer_bytes() > 0:
                if self.ended or loop.time() >= deadline:
                    return False
                await asyncio.sleep(0.01)
            peer_latency_ms = self._sock.get_int(SockOpt.SRTO_PEERLATENCY)
        except SrtError:
            return False
        await asyncio.sleep(min(peer_latency_ms / 1000 + 0.05, max(deadline - loop.time(), 0)))
        return not self.ended

    async def wait_closed(self) -> None:
        """Wait until the connection is over: the peer ended it (EOF or breakage), or close()
        was called here and libsrt released the socket. Never raises."""
        if self._released_flag or (not self._closed and self.ended):
            return
        if self._done is None:
            self._done = self._owner.loop.create_future()
        await asyncio.shield(self._done)

    def close(self) -> None:
        """Close the connection (idempotent). Takes a final stats snapshot, wakes a waiting
        `recv_batch` (which returns []) and hands the socket to the I/O thread for srt_close."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        with contextlib.suppress(SrtError):  # broken: keep the I/O thread's last snapshot
            self._final_stats = self._sock.stats()
        self._wake()
        self._owner.close_socket(self._sock, self._released)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    # -- fed by the reactor on the loop thread

    def _feed(self, messages: list[bytes]) -> None:
        if self._closed:
            return
        receiver = self._receiver
        if receiver is not None:
            self._deliver(receiver, messages)
            return
        if self._pending:
            self._pending.extend(messages)
        else:
            self._pending = messages
        self._wake()

    def _deliver(self, receiver: Callable[[list[bytes]], None], batch: list[bytes]) -> None:
        try:
            receiver(batch)
        except Exception as exc:  # noqa: BLE001  (raised by recv_batch, in the reader's task)
            self._receiver = None
            self._receiver_error = exc
            self._wake()

    def _feed_end(self, exc: BaseException | None, last_stats: LinkStats | None = None) -> None:
        if last_stats is not None and self._final_stats is None:
            self._final_stats = last_stats
        if isinstance(self._end, _Ended):
            self._end = exc
        self._wake()
        self._resolve_done()

    def _released(self) -> None:
        self._released_flag = True
        self._resolve_done()

    def _reactor_closed(self) -> None:
        """The reactor closed and released the socket: a clean end for readers."""
        self._finalizer.detach()
        self._feed_end(None)
        self._released()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resolve_done(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)


def _finalize_listener(owner: _Owner, state: _ListenerState) -> None:
    warnings.warn(f"unclosed SrtListener on port {state.port}", ResourceWarning, stacklevel=1)
    owner.close_listener(state, None)


#: The handshake hook a listener runs for every caller (see SrtReactor.listen).
HandshakeHook = Callable[[HandshakeInfo], Awaitable[Accept | Reject]]


@dataclass(slots=True, eq=False)
class _ListenerState:
    """What a listener's facade, the listen callback (libsrt's thread), the I/O thread and the
    finalizer share; it never refers to the facade, so a dropped facade can be finalized."""

    options: SrtOptions
    on_handshake: HandshakeHook
    hook_timeout_s: float
    loop: asyncio.AbstractEventLoop
    sock: SrtSocket | None = None
    token: int = 0
    closing: bool = False
    host: str = ""
    port: int = 0
    #: Hook runs in flight (cancelled when the listener closes, so callbacks return at once).
    pending_hooks: set[concurrent.futures.Future[Accept | Reject]] = field(default_factory=set)
    #: socket id -> (Accept.context, monotonic time) between the callback and srt_accept.
    decisions: dict[int, tuple[object, float]] = field(default_factory=dict)
    #: (peer, stream id) -> (reject code, monotonic expiry): the answer for handshake
    #: retransmissions of a caller already refused (see reactor._decide).
    recent_rejects: dict[tuple[tuple[str, int], str], tuple[int, float]] = field(
        default_factory=dict
    )
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The facade, weakly: the I/O thread hands it accepted callers while it is alive.
    facade: weakref.ref[SrtListener] | None = None


class SrtListener:
    """A listening SRT socket; `accept()` / `async for` yield the callers the hook accepted.

    Created by `SrtReactor.listen`. `aclose()` (or `async with`) stops it: new callers are
    rejected, callers accepted but not yet taken are closed, the socket is released. Closing
    the reactor closes it too. Use it from the event loop's thread only.
    """

    def __init__(self, owner: _Owner, state: _ListenerState) -> None:
        """Built by the reactor; do not construct directly."""
        self._owner = owner
        self._state = state
        self._queue: deque[SrtConnection] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._released_flag = False
        self._done: asyncio.Future[None] | None = None
        self._finalizer = weakref.finalize(self, _finalize_listener, owner, state)
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        return f"<SrtListener {self.host}:{self.port}{' closed' if self._closed else ''}>"

    @property
    def host(self) -> str:
        """The bound address."""
        return self._state.host

    @property
    def port(self) -> int:
        """The bound UDP port (the real one when 0 was asked for)."""
        return self._state.port

    @property
    def options(self) -> SrtOptions:
        """The options every accepted socket inherits."""
        return self._state.options

    @property
    def closed(self) -> bool:
        """True once close() or aclose() was called (or the reactor closed)."""
        return self._closed

    async def accept(self) -> SrtConnection:
        """The next accepted caller, in arrival order; waits for one.

        The caller owns the returned connection. Raises SrtError(SRT_ESCLOSED) once the
        listener is closed and no accepted caller is left.
        """
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise SrtError(SrtErrno.SRT_ESCLOSED, "listener is closed", op="srt_accept")
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting in accept()")
            waiter: asyncio.Future[None] = self._owner.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SrtConnection:
        """`accept()`, ending the iteration when the listener closes."""
        try:
            return await self.accept()
        except SrtError as exc:
            if self._closed and exc.code == SrtErrno.SRT_ESCLOSED:
                raise StopAsyncIteration from None
            raise

    def close(self) -> None:
        """Stop listening (idempotent, non-blocking): the I/O thread closes the socket."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._owner.close_listener(self._state, self._released)
        while self._queue:
            self._queue.popleft().close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def aclose(self) -> None:
        """close(), then wait until libsrt released the socket."""
        self.close()
        if self._released_flag:
            return
        if self._done is None:
            self._done = self._owner.loop.create_future()
        await asyncio.shield(self._done)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- fed by the reactor on the loop thread

    def _reactor_closed(self) -> None:
        """The reactor closed: the socket is gone, accepted-but-untaken callers too."""
        if not self._closed:
            self._closed = True
            self._finalizer.detach()
            while self._queue:
                self._queue.popleft().close()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._released()

    def _feed_accepted(self, conn: SrtConnection) -> None:
        if self._closed:
            conn.close()
            return
        self._queue.append(conn)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _released(self) -> None:
        self._released_flag = True
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
