"""`SrtSocket`: the owning object of one libsrt socket id.

It sets options, binds, listens, connects, accepts, sends without blocking and reads
statistics; `close()` is idempotent and a `weakref.finalize` closes a forgotten one with a
ResourceWarning. Which thread calls what is the reactor's business (`gateway.srt.iothread`).
"""

from __future__ import annotations

import ctypes
import threading
import warnings
import weakref
from collections.abc import Sequence

from gateway.srt import lib
from gateway.srt.addresses import SOCKADDR_BUF_BYTES, unpack_sockaddr
from gateway.srt.errors import SrtError, check, error_from_last
from gateway.srt.lib import SockOpt, SockStatus, SrtErrno
from gateway.srt.values import LinkStats, SrtOptions

__all__ = ["SrtSocket", "open_socket_count", "srt_now_us"]


def srt_now_us() -> int:
    """libsrt's steady clock now, in microseconds (`srt_time_now()`): the clock of `srctime_us`."""
    return lib.time_now()


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
        # At interpreter exit srt_cleanup (gateway.srt.runtime) closes what is left: no warning.
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
