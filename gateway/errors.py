"""The gateway layer's base exception; each edge (SRT, config, ...) derives from it."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of errors raised by `gateway/` outside the libsrt binding."""
