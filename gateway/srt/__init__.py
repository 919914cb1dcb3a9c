"""libsrt through ctypes, for asyncio: `SrtReactor` listens and connects, one I/O thread feeds
the loop in batches, `SrtConnection` receives batches and sends without blocking.

`lib` holds the C prototypes and structs, `errors` the exceptions, `sockets` the owning
`SrtSocket`, `iothread` the I/O thread; around them, `values` (options, stats, handshake
verdicts), `addresses` (packed sockaddrs), `connection` and `listener` (what the loop holds),
`listen_callback` (libsrt's handshake callback), `throttle` (per-address handshake rate, log
line bounds), `runtime` (srt_startup/cleanup), `liblog`
(libsrt's log routing) and `reactor` (the facade). Needs the Debian package
libsrt1.5-openssl at run time.
"""

from __future__ import annotations

from gateway.srt.connection import SrtConnection
from gateway.srt.errors import (
    SrtConnectionLost,
    SrtError,
    SrtRejected,
    SrtTimeout,
    check,
)
from gateway.srt.liblog import set_libsrt_log_level
from gateway.srt.listener import SrtListener
from gateway.srt.reactor import ReactorCounters, SrtReactor
from gateway.srt.sockets import SrtSocket, open_socket_count, srt_now_us
from gateway.srt.throttle import LogThrottle, PeerRate
from gateway.srt.values import (
    Accept,
    HandshakeHook,
    HandshakeInfo,
    LinkStats,
    Reject,
    SrtOptions,
)

__all__ = [
    "Accept",
    "HandshakeHook",
    "HandshakeInfo",
    "LinkStats",
    "LogThrottle",
    "PeerRate",
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
