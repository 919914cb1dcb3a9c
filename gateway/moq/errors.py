"""Errors of the MoQ edge: one base, `MoqError`; peer violations apart from our own misuse.

A `ProtocolViolation` is the peer's fault and closes the session with its `SessionCode`
(`PROTOCOL_VIOLATION` unless said otherwise); `MoqUsageError` is a caller's mistake (writing to
a stream that is gone, ...) and never reaches the peer.
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["MoqError", "MoqUsageError", "ProtocolViolation"]

_PROTOCOL_VIOLATION = 3  # SessionCode.PROTOCOL_VIOLATION (wire.py imports this module)


class MoqError(GatewayError):
    """Base class of the errors `gateway/moq` raises."""


class ProtocolViolation(MoqError, ValueError):
    """The peer sent something malformed, truncated, oversized or out of place.

    `reason`: what was wrong (safe to log and to send as the close reason: it never quotes
    peer bytes beyond short field values). `code`: the session close code (moq-lite session
    codes: 3 = protocol violation).
    """

    def __init__(self, reason: str, code: int = _PROTOCOL_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class MoqUsageError(MoqError):
    """A caller misused the session API (unknown stream, write after end, ...)."""
