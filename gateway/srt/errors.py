"""libsrt errors as Python exceptions: one base, `SrtError(OSError)`, and leaves that also
inherit the matching builtin (as PyAV does), so callers catch either.

Every libsrt return code goes through `check(rc, op)`, which reads libsrt's thread-local last
error at once, on the calling thread, and raises with libsrt's own message. Handshake refusals
carry the code the listener chose (`SrtRejected.reject_code`).
"""

from __future__ import annotations

from typing import Final

from gateway.srt import lib
from gateway.srt.lib import RejectReason, SrtErrno

__all__ = [
    "SrtConnectionLost",
    "SrtError",
    "SrtRejected",
    "SrtTimeout",
    "check",
    "error_from_last",
    "rejection",
]

#: SRT_ERRNO codes that mean "the connection is gone" (peer closed, link timed out, id freed).
LOST_CODES: Final = frozenset({SrtErrno.SRT_ECONNLOST, SrtErrno.SRT_ENOCONN})
#: SRT_ERRNO codes that mean "waited too long".
TIMEOUT_CODES: Final = frozenset({SrtErrno.SRT_ETIMEOUT, SrtErrno.SRT_ENOSERVER})


class SrtError(OSError):
    """A libsrt call failed.

    `code` is libsrt's SRT_ERRNO (1000 x major + minor, e.g. 2001 = connection lost; also in
    `errno`), `sys_errno` the system errno libsrt reported with it (0 if none), `op` the libsrt
    call (e.g. "srt_bind"), `message` libsrt's own text (also in `strerror`).
    """

    def __init__(self, code: int, message: str, *, op: str, sys_errno: int = 0) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.op = op
        self.sys_errno = sys_errno

    def __str__(self) -> str:
        tail = f", errno {self.sys_errno}" if self.sys_errno else ""
        return f"{self.op}: {self.message} (SRT {self.code}{tail})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.code, self.message, self.op, self.sys_errno))


class SrtRejected(SrtError, ConnectionRefusedError):
    """The listener refused the handshake; `reject_code` says why.

    Codes below 1000 are libsrt's own `SRT_REJ_*` reasons (10 = wrong passphrase, 11 = missing
    or unexpected passphrase, 16 = timeout); 1000..1999 the predefined ones a listen callback
    sets (1400 bad request, 1401 unauthorized, 1403 forbidden, 1404 not found, 1409 conflict,
    1503 unavailable); 2000+ application-defined.
    """

    def __init__(
        self, code: int, message: str, *, op: str, reject_code: int, sys_errno: int = 0
    ) -> None:
        super().__init__(code, message, op=op, sys_errno=sys_errno)
        self.reject_code = reject_code

    def __str__(self) -> str:
        return f"{super().__str__()} reject {self.reject_code}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_rejected,
            (type(self), self.code, self.message, self.op, self.reject_code, self.sys_errno),
        )


class SrtTimeout(SrtError, TimeoutError):
    """A connect or wait ran out of time (SRT_ETIMEOUT, SRT_ENOSERVER or SRT_REJ_TIMEOUT)."""


class SrtConnectionLost(SrtError, ConnectionResetError):
    """The connection broke: the peer vanished (idle timeout) or the socket is gone."""


def _rebuild(cls: type[SrtError], code: int, message: str, op: str, sys_errno: int) -> SrtError:
    return cls(code, message, op=op, sys_errno=sys_errno)


def _rebuild_rejected(
    cls: type[SrtRejected], code: int, message: str, op: str, reject_code: int, sys_errno: int
) -> SrtRejected:
    return cls(code, message, op=op, reject_code=reject_code, sys_errno=sys_errno)


def error_from_last(op: str) -> SrtError:
    """Build the exception for this thread's last libsrt error (read now, on this thread).

    Call it right after the failing call, before any other libsrt call on the same thread.
    """
    code, sys_errno = lib.getlasterror()
    message = lib.getlasterror_str() or "unknown libsrt error"
    return make_error(code, message, op=op, sys_errno=sys_errno)


def make_error(code: int, message: str, *, op: str, sys_errno: int = 0) -> SrtError:
    """The SrtError leaf class for SRT_ERRNO `code` (lost, timeout, or the base class)."""
    if code in LOST_CODES:
        return SrtConnectionLost(code, message, op=op, sys_errno=sys_errno)
    if code in TIMEOUT_CODES:
        return SrtTimeout(code, message, op=op, sys_errno=sys_errno)
    if code == SrtErrno.SRT_ECONNREJ:
        return SrtRejected(code, message, op=op, reject_code=0, sys_errno=sys_errno)
    return SrtError(code, message, op=op, sys_errno=sys_errno)


def check(rc: int, op: str) -> int:
    """Return `rc` when it is >= 0; otherwise raise this thread's last libsrt error.

    `op` names the libsrt call that returned `rc` (e.g. "srt_connect"). Raises SrtError or
    the leaf class matching the code (SrtConnectionLost, SrtTimeout, SrtRejected).
    """
    if rc >= 0:
        return rc
    raise error_from_last(op)


def rejection(reject_code: int, *, op: str) -> SrtError:
    """The exception for a caller whose connection failed with `srt_getrejectreason` = code.

    SRT_REJ_TIMEOUT (no answer) gives SrtTimeout; every other code SrtRejected carrying it.
    The message is libsrt's `srt_rejectreason_str` text, or the code's meaning for 1000+.
    """
    if reject_code == RejectReason.SRT_REJ_TIMEOUT:
        return SrtTimeout(
            SrtErrno.SRT_ENOSERVER,
            f"connection timed out: {lib.rejectreason_str(reject_code)}",
            op=op,
        )
    if reject_code >= 1000:
        meaning = _PREDEFINED.get(reject_code, "application-defined reason")
        text = f"rejected by the listener: {meaning}"
    else:
        text = f"rejected: {lib.rejectreason_str(reject_code)}"
    return SrtRejected(SrtErrno.SRT_ECONNREJ, text, op=op, reject_code=reject_code)


_PREDEFINED: Final = {
    1000: "fallback",
    1400: "bad request",
    1401: "unauthorized",
    1402: "overload",
    1403: "forbidden",
    1404: "not found",
    1405: "bad mode",
    1406: "unacceptable",
    1409: "conflict",
    1415: "unsupported media type",
    1423: "locked",
    1424: "failed dependency",
    1500: "internal server error",
    1501: "unimplemented",
    1502: "gateway error",
    1503: "service unavailable",
    1505: "SRT version not supported",
    1507: "no room",
}
