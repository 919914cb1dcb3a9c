"""Packed C socket addresses (`sockaddr_in` / `sockaddr_in6`) for libsrt calls.

Pure functions over bytes: numeric hosts only (the reactor resolves names first).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Final

__all__ = ["SOCKADDR_BUF_BYTES", "pack_sockaddr", "unpack_sockaddr"]

#: Large enough for sockaddr_in6 (28 bytes); libsrt never writes more than sockaddr_storage.
SOCKADDR_BUF_BYTES: Final = 128


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
