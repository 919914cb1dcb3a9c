"""The exporter's output units: `TsFrame` (the TS packets of one muxed frame) and `TsChunk`
(at most `CHUNK_BYTES` of them, one SRT live-mode message), and the cutting between them.

`cut_chunks` cuts frames into chunks; `cut_payloads` cuts any run of whole packets into SRT
payloads (the gateway's egress uses it on its own batches). Stateless and hot: one object per
1316 bytes, built without Python-level constructors.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from mux import _impl
from mux.ts_mux import BytesLike
from mux.ts_packets import PACKET_SIZE

#: Largest chunk the exporter returns: 7 packets, the SRT live-mode payload.
CHUNK_BYTES = 7 * PACKET_SIZE


class TsChunk(NamedTuple):
    """A run of whole TS packets (`data`, a multiple of 188 bytes, at most 1316) to send as one
    SRT message, and the media time it belongs to in microseconds (`media_ts_us`).

    `media_ts_us` is the decode time of the frame that produced the packets (for video the
    authored DTS, for audio the PTS), never lower than the previous chunk's, so a pacer can send
    each chunk at `anchor + (media_ts_us - base)`. Chunks of different frames never share one.
    The chunk holding a video keyframe's first packet (random_access_indicator set) starts
    with PAT and PMT, so a sender that skipped data can resume at it.

    A named tuple rather than a frozen dataclass: the exporter makes one per 1316 bytes, and a
    frozen dataclass costs three times as much to build (tests/bench/bench_export.py).
    """

    data: bytes
    media_ts_us: int


class TsFrame(NamedTuple):
    """The TS packets one frame produced (`data`, whole packets: PAT/PMT and PCR packets due
    before it, then its PES), and the media time they belong to in microseconds (`media_ts_us`,
    as in `TsChunk`). `data` is handed over: the exporter never touches it again.
    `cut_chunks` turns frames into the `TsChunk`s that `TsExporter.push` returns.
    """

    data: bytearray
    media_ts_us: int


_CHUNK_STRUCT = struct.Struct(f"{CHUNK_BYTES}s")


def cut_chunks(frames: list[TsFrame]) -> list[TsChunk]:
    """Cut each frame into chunks of 1316 bytes from its start (its last chunk may be shorter),
    stamped with its `media_ts_us`.

    A hot loop (one object per 1316 bytes): `tuple.__new__` skips NamedTuple's Python-level
    constructor.
    """
    fast = _impl.cut_chunks
    if fast is not None:
        return fast(frames, TsChunk)
    new = tuple.__new__
    return [new(TsChunk, (data, ts)) for out, ts in frames for data in cut_payloads(out)]


def cut_payloads(data: BytesLike, start: int = 0) -> list[bytes]:
    """`data[start:]` (whole TS packets) as SRT payloads: 1316 bytes each, the last shorter.

    `Struct.iter_unpack` slices in C, one copy per payload.
    """
    fast = _impl.cut_payloads
    if fast is not None:
        return fast(data, start)
    view = memoryview(data)[start:]
    whole = len(view) // CHUNK_BYTES * CHUNK_BYTES
    payloads = [payload for (payload,) in _CHUNK_STRUCT.iter_unpack(view[:whole])]
    if whole < len(view):
        payloads.append(view[whole:].tobytes())
    return payloads
