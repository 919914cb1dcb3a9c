"""Test doubles for the sans-I/O MoQ session: a stream allocator numbering like QUIC."""

from __future__ import annotations


class CountingAllocator:
    """Opens server-side streams the way QUIC numbers them (uni 3, 7, 11 ...; bidi 1, 5 ...)."""

    def __init__(self, *, is_client: bool = False) -> None:
        base = 0 if is_client else 1
        self._next_uni = base + 2
        self._next_bidi = base

    def open_uni(self) -> int:
        sid, self._next_uni = self._next_uni, self._next_uni + 4
        return sid

    def open_bidi(self) -> int:
        sid, self._next_bidi = self._next_bidi, self._next_bidi + 4
        return sid
