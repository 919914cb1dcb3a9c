"""libsrt through ctypes, for asyncio: `SrtReactor` listens and connects, one I/O thread feeds
the loop in batches, `SrtConnection` receives batches and sends without blocking.

`lib` holds the C prototypes and structs, `errors` the exceptions, `sockets` the owning
`SrtSocket`, `iothread` the I/O thread; around them, `values` (options, stats, handshake
verdicts), `addresses` (packed sockaddrs), `connection` and `listener` (what the loop holds),
`listen_callback` (libsrt's handshake callback), `throttle` (per-address handshake rate, log
line bounds), `runtime` (srt_startup/cleanup), `liblog`
(libsrt's log routing) and `reactor` (the facade). Needs the Debian package
libsrt1.5-openssl at run time. The names below load on first use, so importing one submodule
(`gateway.srt.lib` for a constant) does not import the asyncio machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {
    "Accept": "gateway.srt.values",
    "HandshakeHook": "gateway.srt.values",
    "HandshakeInfo": "gateway.srt.values",
    "LinkStats": "gateway.srt.values",
    "LogThrottle": "gateway.srt.throttle",
    "PeerRate": "gateway.srt.throttle",
    "ReactorCounters": "gateway.srt.reactor",
    "Reject": "gateway.srt.values",
    "SrtConnection": "gateway.srt.connection",
    "SrtConnectionLost": "gateway.srt.errors",
    "SrtError": "gateway.srt.errors",
    "SrtListener": "gateway.srt.listener",
    "SrtOptions": "gateway.srt.values",
    "SrtReactor": "gateway.srt.reactor",
    "SrtRejected": "gateway.srt.errors",
    "SrtSocket": "gateway.srt.sockets",
    "SrtTimeout": "gateway.srt.errors",
    "check": "gateway.srt.errors",
    "open_socket_count": "gateway.srt.sockets",
    "set_libsrt_log_level": "gateway.srt.liblog",
    "srt_now_us": "gateway.srt.sockets",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway.srt' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
