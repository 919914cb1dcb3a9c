"""Annex-B NAL unit helpers shared by the H.264 and H.265 parsers, and an RBSP bit reader.

Also the length-prefixed form of ISO/IEC 14496-15 (avcC/hvcC records and their samples), which
the exporter rewrites to Annex-B.

Stateless functions over `bytes`: the importer's video streams call `scan_head` on each access
unit to find the NAL units in front of the first slice (where parameter sets, SEI and the
keyframe decision live) without touching the slice data, which is most of the bytes. Start codes
are found with `bytes.find`, never by a per-byte loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mux.errors import MalformedBitstream

START_CODE = b"\x00\x00\x01"
START_CODE4 = b"\x00\x00\x00\x01"


@dataclass(frozen=True, slots=True)
class NalRef:
    """One NAL unit inside an access unit buffer.

    `start` is the offset of its start code (3 or 4 bytes), `header` the offset of its first
    header byte, `end` the offset just past its last byte (trailing zero bytes excluded), or -1
    when the scan stopped before finding the end (the first slice: the rest of the unit).
    """

    start: int
    header: int
    end: int
    nal_type: int


def scan_head(
    data: bytes, begin: int, nal_type_of: Callable[[int], int], is_slice: Callable[[int], bool]
) -> list[NalRef]:
    """List the NAL units of the Annex-B unit `data[begin:]` up to and including the first slice.

    `nal_type_of(first_header_byte)` extracts the type; `is_slice(type)` says where to stop.
    The last entry is the first slice (`end == -1`) unless the unit has no slice at all, in
    which case every NAL unit is listed with its end. Bytes before the first start code are
    ignored (a unit must start with one; the caller treats a unit without any as malformed).
    """
    out: list[NalRef] = []
    size = len(data)
    pos = data.find(START_CODE, begin)
    while pos != -1:
        header = pos + 3
        if header >= size:
            break
        start = pos - 1 if pos > begin and data[pos - 1] == 0 else pos
        nal_type = nal_type_of(data[header])
        if is_slice(nal_type):
            out.append(NalRef(start, header, -1, nal_type))
            break
        nxt = data.find(START_CODE, header)
        end = size if nxt == -1 else nxt
        while end > header and data[end - 1] == 0:
            end -= 1
        out.append(NalRef(start, header, end, nal_type))
        pos = nxt
    return out


def split_annexb(data: bytes) -> list[bytes]:
    """Split a whole Annex-B buffer into NAL units (start codes and trailing zeros removed)."""
    out: list[bytes] = []
    pos = data.find(START_CODE)
    while pos != -1:
        header = pos + 3
        nxt = data.find(START_CODE, header)
        end = len(data) if nxt == -1 else nxt
        while end > header and data[end - 1] == 0:
            end -= 1
        if end > header:
            out.append(data[header:end])
        pos = nxt
    return out


def length_prefixed_to_annexb(data: bytes | bytearray | memoryview, length_size: int) -> bytes:
    """Rewrite length-prefixed NAL units (avcC/hvcC sample format) with 4-byte start codes.

    Raises `MalformedBitstream` if a length runs past the end of `data`.
    """
    view = memoryview(data).cast("B")
    parts: list[bytes | memoryview] = []
    offset = 0
    end = len(view)
    while offset < end:
        if offset + length_size > end:
            raise MalformedBitstream("NAL length field truncated", offset=offset)
        size = int.from_bytes(view[offset : offset + length_size], "big")
        offset += length_size
        if offset + size > end:
            raise MalformedBitstream(f"NAL of {size} bytes runs past the frame", offset=offset)
        parts.append(START_CODE4)
        parts.append(view[offset : offset + size])
        offset += size
    return b"".join(parts)


def read_nal_array(record: bytes, offset: int, count: int, parts: list[bytes], name: str) -> int:
    """Append the `count` NAL units at `record[offset:]`, each behind a 16-bit length (as in
    avcC and hvcC), to `parts` in Annex-B form; return the offset after them.
    `MalformedBitstream` (naming the record, `name`) if one is truncated."""
    for _ in range(count):
        size = int.from_bytes(record[offset : offset + 2], "big")
        offset += 2
        nal = record[offset : offset + size]
        if len(nal) != size:
            raise MalformedBitstream(f"{name}: parameter set truncated", offset=offset)
        parts.append(START_CODE4 + nal)
        offset += size
    return offset


def unescape(nal: bytes) -> bytes:
    """Return the RBSP of a NAL unit: every emulation prevention byte (00 00 03) removed."""
    if b"\x00\x00\x03" not in nal:
        return nal
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    """Reads bits MSB-first from an RBSP, with the Exp-Golomb codes of H.264/H.265.

    Every read past the end raises `MalformedBitstream`, so a truncated parameter set becomes a
    problem report, not an `IndexError`.
    """

    __slots__ = ("_bits", "_pos", "_value")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bits left to read."""
        return self._bits - self._pos

    def u(self, count: int) -> int:
        """Read an unsigned `count`-bit integer (`u(n)` in the specs)."""
        if count == 0:
            return 0
        end = self._pos + count
        if end > self._bits:
            raise MalformedBitstream(f"bitstream ends {end - self._bits} bits early", offset=end)
        self._pos = end
        return (self._value >> (self._bits - end)) & ((1 << count) - 1)

    def flag(self) -> bool:
        """Read one bit as a boolean."""
        return self.u(1) == 1

    def skip(self, count: int) -> None:
        """Skip `count` bits."""
        if self._pos + count > self._bits:
            raise MalformedBitstream("bitstream ends inside skipped bits", offset=self._pos)
        self._pos += count

    def ue(self) -> int:
        """Read an unsigned Exp-Golomb code (`ue(v)`)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise MalformedBitstream("Exp-Golomb code longer than 32 bits", offset=self._pos)
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Read a signed Exp-Golomb code (`se(v)`)."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)
