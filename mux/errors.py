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


class MalformedCatalog(Malformed):
    """A `catalog.json` payload that is not JSON or does not have the hang catalog's shape."""


class MalformedSection(Malformed):
    """A PSI section (PAT, PMT) with a bad CRC, a bad length or fields out of range."""


class MalformedPes(Malformed):
    """A PES packet whose header does not parse (no start code, lengths past the end)."""


class MalformedBitstream(Malformed):
    """Codec data (an SPS, an ADTS header, an audio frame header) that does not parse."""
