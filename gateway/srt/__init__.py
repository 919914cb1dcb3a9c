"""libsrt through ctypes, for asyncio: `SrtReactor` listens and connects, one I/O thread feeds
the loop in batches, `SrtConnection` receives batches and sends without blocking.

`lib` holds the C prototypes and structs, `errors` the exceptions, `sockets` the owning
objects, `reactor` the I/O thread. Needs the Debian package libsrt1.5-openssl at run time.
"""

from __future__ import annotations

from gateway.srt.errors import (
    SrtConnectionLost,
    SrtError,
    SrtRejected,
    SrtTimeout,
    check,
)
from gateway.srt.reactor import ReactorCounters, SrtReactor, set_libsrt_log_level
from gateway.srt.sockets import (
    Accept,
    HandshakeHook,
    HandshakeInfo,
    LinkStats,
    Reject,
    SrtConnection,
    SrtListener,
    SrtOptions,
    SrtSocket,
    open_socket_count,
    srt_now_us,
)

__all__ = [
    "Accept",
    "HandshakeHook",
    "HandshakeInfo",
    "LinkStats",
    "ReactorCounters",
    "Reject",
    "SrtConnection",
    "SrtConnectionLost",
    "SrtError",
    "SrtListener",
    "SrtOptions",
    "SrtReactor",
    "SrtRejected",
    "SrtSocket",
    "SrtTimeout",
    "check",
    "open_socket_count",
    "set_libsrt_log_level",
    "srt_now_us",
]
