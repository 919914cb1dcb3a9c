"""Errors of the mux layer: parsers raise `Malformed*` (also `ValueError`), caught at one
boundary in the importer, which turns them into problem reports; garbage never ends a broadcast.
"""

from __future__ import annotations


class MuxError(Exception):
    """Base class of every error raised by `mux/`."""


class Malformed(MuxError, ValueError):
    """Input bytes that do not parse; `offset` is where in the unit the parser gave up."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class MalformedFrame(Malformed):
    """A legacy container frame (varint timestamp + payload) that does not parse."""
