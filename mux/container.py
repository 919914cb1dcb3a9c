"""The hang `legacy` frame container: a QUIC varint timestamp in microseconds, then the payload.

Every media frame the importer writes into the model, and every frame the exporter reads back,
has this shape. The catalog track is plain JSON and does not use it.
"""

from __future__ import annotations

from mux.errors import MalformedFrame

_MAX_VARINT = (1 << 62) - 1


def encode_varint(value: int) -> bytes:
    """Encode `value` (0 <= value < 2**62) as a QUIC variable-length integer (RFC 9000 s16)."""
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= _MAX_VARINT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"varint out of range: {value}")


def decode_varint(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode a QUIC varint at `offset`; return `(value, offset_after)`.

    Raises `MalformedFrame` when the buffer ends inside the integer.
    """
    if offset >= len(data):
        raise MalformedFrame("varint: buffer ends before the first byte", offset=offset)
    first = data[offset]
    length = 1 << (first >> 6)
    end = offset + length
    if end > len(data):
        raise MalformedFrame(f"varint: needs {length} bytes, buffer ends early", offset=offset)
    value = first & 0x3F
    for i in range(offset + 1, end):
        value = (value << 8) | data[i]
    return value, end


def encode_frame(timestamp_us: int, payload: bytes) -> bytes:
    """Return one legacy frame: varint(`timestamp_us`) followed by the codec `payload`."""
    return encode_varint(timestamp_us) + payload


def decode_frame(frame: bytes) -> tuple[int, memoryview]:
    """Split a legacy frame into `(timestamp_us, payload view)`; `MalformedFrame` if truncated."""
    timestamp_us, offset = decode_varint(frame)
    return timestamp_us, memoryview(frame)[offset:]
