"""Authorization at handshake time: the hook's type, its answer, and the SRT rejection codes
the server uses.

`AuthHook` is the embedder's function; `AuthDecision` is plain data. The server
(`gateway.server`) runs the hook in libsrt's listen callback, bounded by
`ServerConfig.auth_timeout_s`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from gateway.streamid import StreamRequest

__all__ = [
    "REJECT_BAD_REQUEST",
    "REJECT_CONFLICT",
    "REJECT_FORBIDDEN",
    "REJECT_INTERNAL",
    "REJECT_NOT_FOUND",
    "REJECT_OVERLOAD",
    "REJECT_UNAUTHORIZED",
    "REJECT_UNAVAILABLE",
    "AuthDecision",
    "AuthHook",
]

# SRT rejection codes (SRT_REJX_*, 1000 + HTTP status) the server uses.
REJECT_BAD_REQUEST: Final = 1400
REJECT_UNAUTHORIZED: Final = 1401
REJECT_OVERLOAD: Final = 1402
"""Over an operator limit (sessions, sessions or handshakes per address): SRT_REJX_OVERLOAD."""
REJECT_FORBIDDEN: Final = 1403
REJECT_NOT_FOUND: Final = 1404
REJECT_CONFLICT: Final = 1409
REJECT_INTERNAL: Final = 1500
REJECT_UNAVAILABLE: Final = 1503

AuthHook = Callable[[StreamRequest, tuple[str, int]], Awaitable["AuthDecision"]]
"""Decides a caller at handshake time: `(request, peer) -> AuthDecision`.

It runs on the event loop while libsrt's receiver thread waits for the answer, which holds up
every connection on the listener's port: keep it fast (cache remote answers). It is bounded by
`ServerConfig.auth_timeout_s` (past it the caller gets 1503); an exception rejects with 1500.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthDecision:
    """The authorization hook's answer for one caller.

    `accept=False` refuses the handshake with `code` (an SRT rejection code, 1000..2999; 1401
    unauthorized and 1403 forbidden are the usual ones). When accepted, `tier` labels the
    session's usage (a customer plan; `internal` for the platform's own consumers), and
    `passphrase` (10..79 characters) is the SRT passphrase this caller must use, replacing the
    server's default; None keeps the default.
    """

    accept: bool = True
    code: int = REJECT_FORBIDDEN
    tier: str = "default"
    passphrase: str | None = field(default=None, repr=False)
