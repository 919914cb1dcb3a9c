"""Sans-I/O MPEG-TS writing primitives: 188-byte packets, PSI sections, PES headers, PCR.

`PidWriter` owns one PID's continuity counter and appends whole packets to a caller's
`bytearray`; it never holds output. The section, descriptor and header builders are pure
functions. `mux.export.TsExporter` drives them; nothing here knows about tracks or catalogs.
Timestamps are 90 kHz ticks (`_90k`, taken modulo 2**33 when written) and PCR is 27 MHz.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from mux import _impl
from mux.psi import DescriptorTag, crc32_mpeg2
from mux.ts_packets import NULL_PID, SYNC_BYTE
from mux.ts_packets import PACKET_SIZE as TS_PACKET_BYTES

__all__ = [
    "PAT_PID",
    "PCR_PER_90K",
    "PTS_MASK",
    "TS_PACKET_BYTES",
    "TS_PAYLOAD_BYTES",
    "BytesLike",
    "PidWriter",
    "PmtStream",
    "StreamId",
    "TableId",
    "opus_extension_descriptor",
    "pat_section",
    "pcr_field",
    "pes_header",
    "pmt_section",
    "registration_descriptor",
]

#: What the writers accept as payload: read in place, never copied before packetizing.
BytesLike = bytes | bytearray | memoryview

TS_PAYLOAD_BYTES = TS_PACKET_BYTES - 4
PAT_PID = 0x0000
PTS_MASK = (1 << 33) - 1
#: One 90 kHz tick is 300 ticks of the 27 MHz system clock.
PCR_PER_90K = 300

# Below this many full packets, a plain loop beats numpy's fixed cost per call (measured in
# tests/bench/bench_export.py: the crossover is about 6 packets).
_NUMPY_MIN_PACKETS = 8
#: Header cycle length precomputed per PID (grown on demand for larger frames): 8 KB.
_CYCLE_PACKETS = 2048


class StreamId(IntEnum):
    """PES `stream_id` values (ISO/IEC 13818-1 table 2-22)."""

    PRIVATE_STREAM_1 = 0xBD
    AUDIO_0 = 0xC0
    VIDEO_0 = 0xE0


class TableId(IntEnum):
    """PSI `table_id` values."""

    PROGRAM_ASSOCIATION = 0x00
    PROGRAM_MAP = 0x02


def _long_section(table_id: int, extension: int, version: int, body: bytes) -> bytes:
    """Wrap `body` in a long-form PSI section (syntax indicator 1, one section) with CRC."""
    if not 0 <= version < 32:
        raise ValueError(f"PSI version must be 0..31, got {version}")
    section_length = 5 + len(body) + 4
    if section_length > 1021:
        raise ValueError(f"PSI section too long: {section_length} bytes")
    head = bytes(
        (
            table_id,
            0xB0 | (section_length >> 8),  # section_syntax_indicator=1, '0', reserved '11'
            section_length & 0xFF,
            extension >> 8,
            extension & 0xFF,
            0xC1 | (version << 1),  # reserved '11', version, current_next_indicator=1
            0,  # section_number
            0,  # last_section_number
        )
    )
    section = head + body
    return section + crc32_mpeg2(section).to_bytes(4, "big")


def pat_section(
    *, transport_stream_id: int, program_number: int, pmt_pid: int, version: int
) -> bytes:
    """Return a program association section naming one program and its PMT PID."""
    body = bytes(
        (program_number >> 8, program_number & 0xFF, 0xE0 | (pmt_pid >> 8), pmt_pid & 0xFF)
    )
    return _long_section(TableId.PROGRAM_ASSOCIATION, transport_stream_id, version, body)


@dataclass(frozen=True, slots=True, kw_only=True)
class PmtStream:
    """One elementary stream entry of a PMT: its type, PID and ES_info descriptors (raw)."""

    stream_type: int
    pid: int
    descriptors: bytes = b""


def pmt_section(
    *,
    program_number: int,
    pcr_pid: int,
    version: int,
    streams: Sequence[PmtStream],
    program_descriptors: bytes = b"",
) -> bytes:
    """Return a program map section for one program, with `program_descriptors` (raw) as its
    program_info. `ValueError` if it does not fit one section (1021 bytes of section_length)."""
    info = len(program_descriptors)
    parts = [bytes((0xE0 | (pcr_pid >> 8), pcr_pid & 0xFF, 0xF0 | (info >> 8), info & 0xFF))]
    parts.append(program_descriptors)
    for stream in streams:
        info = len(stream.descriptors)
        parts.append(
            bytes(
                (
                    stream.stream_type,
                    0xE0 | (stream.pid >> 8),
                    stream.pid & 0xFF,
                    0xF0 | (info >> 8),
                    info & 0xFF,
                )
            )
        )
        parts.append(stream.descriptors)
    return _long_section(TableId.PROGRAM_MAP, program_number, version, b"".join(parts))


def registration_descriptor(format_identifier: bytes) -> bytes:
    """Return a registration descriptor (tag 5) carrying a four-character format identifier."""
    if len(format_identifier) != 4:
        raise ValueError("format_identifier must be 4 bytes")
    return bytes((DescriptorTag.REGISTRATION, 4)) + format_identifier


def opus_extension_descriptor(channels: int) -> bytes:
    """Return the DVB extension descriptor (tag 0x7F, ext 0x80) giving Opus's channel config."""
    return bytes((DescriptorTag.DVB_EXTENSION, 2, 0x80, channels & 0xFF))


def _timestamp_field(prefix: int, ticks_90k: int) -> bytes:
    t = ticks_90k & PTS_MASK
    return bytes(
        (
            (prefix << 4) | ((t >> 29) & 0x0E) | 1,
            (t >> 22) & 0xFF,
            ((t >> 14) & 0xFE) | 1,
            (t >> 7) & 0xFF,
            ((t << 1) & 0xFE) | 1,
        )
    )


def pes_header(
    stream_id: int, *, pts_90k: int, dts_90k: int | None = None, payload_bytes: int | None
) -> bytes:
    """Return a PES header with PTS (and DTS when given and different), data_alignment set.

    `payload_bytes` is the size of what follows the header; None (or more than fits) writes
    PES_packet_length 0, "unbounded", which only video streams may use.
    """
    if dts_90k is None or dts_90k == pts_90k:
        optional = _timestamp_field(0b0010, pts_90k)
        flags = 0x80
    else:
        optional = _timestamp_field(0b0011, pts_90k) + _timestamp_field(0b0001, dts_90k)
        flags = 0xC0
    length = 0
    if payload_bytes is not None:
        length = 3 + len(optional) + payload_bytes
        if length > 0xFFFF:
            length = 0
    return (
        bytes((0, 0, 1, stream_id, length >> 8, length & 0xFF, 0x84, flags, len(optional)))
        + optional
    )


def pcr_field(pcr_27m: int) -> bytes:
    """Return the 6-byte program_clock_reference field (33-bit base, 6 reserved 1s, 9-bit ext)."""
    base = (pcr_27m // PCR_PER_90K) & PTS_MASK
    ext = pcr_27m % PCR_PER_90K
    return bytes(
        (
            base >> 25,
            (base >> 17) & 0xFF,
            (base >> 9) & 0xFF,
            (base >> 1) & 0xFF,
            ((base & 1) << 7) | 0x7E | (ext >> 8),
            ext & 0xFF,
        )
    )


def _stuffing_af(total: int, flags: int) -> bytes:
    """An adaptation field of exactly `total` bytes (length byte included)."""
    if total == 1:
        return b"\x00"
    return bytes((total - 1, flags)) + b"\xff" * (total - 2)


def _header_cycle(headers: Sequence[bytes], packets: int) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """Headers of `packets` + 16 consecutive payload packets (row i has counter i % 16), each
    as a little-endian uint32, so a run of packets starting at counter c is `cycle[c : c + n]`.
    """
    rows = (packets + 16 + 15) // 16 * 16
    return np.frombuffer(b"".join(headers) * (rows // 16), "<u4")


_PLAIN_STUFFING = tuple(b"" if n == 0 else _stuffing_af(n, 0) for n in range(TS_PAYLOAD_BYTES))
_PSI_FILL = b"\xff" * TS_PAYLOAD_BYTES


class PidWriter:
    """Writes the packets of one PID and owns its 4-bit continuity counter.

    Each method appends whole 188-byte packets to `out` and returns how many it wrote.
    Payload packets advance the counter; adaptation-only (PCR) packets repeat the last one, as
    ISO/IEC 13818-1 2.4.3.3 requires. The counter starts so that the first payload packet is 0.
    """

    __slots__ = ("_b1", "_b1_start", "_b2", "_header_cycle", "_headers", "cc", "pid")

    def __init__(self, pid: int) -> None:
        if not 0 <= pid < NULL_PID:
            raise ValueError(f"PID out of range: {pid:#x}")
        self.pid = pid
        #: The counter of the last packet written (15 before the first, so the first is 0).
        self.cc = 15
        self._b1 = pid >> 8
        self._b1_start = 0x40 | (pid >> 8)
        self._b2 = pid & 0xFF
        self._headers = tuple(bytes((SYNC_BYTE, self._b1, self._b2, 0x10 | cc)) for cc in range(16))
        self._header_cycle = _header_cycle(self._headers, _CYCLE_PACKETS)

    def write_section(self, out: bytearray, section: bytes) -> int:
        """Append `section` as PSI packets (pointer_field 0, 0xFF fill); return the count."""
        payload = b"\x00" + section
        count = 0
        for offset in range(0, len(payload), TS_PAYLOAD_BYTES):
            piece = payload[offset : offset + TS_PAYLOAD_BYTES]
            self.cc = cc = (self.cc + 1) & 15
            b1 = self._b1_start if offset == 0 else self._b1
            out += bytes((SYNC_BYTE, b1, self._b2, 0x10 | cc))
            out += piece
            if len(piece) < TS_PAYLOAD_BYTES:
                out += _PSI_FILL[len(piece) :]
            count += 1
        return count

    def write_pcr(self, out: bytearray, pcr_27m: int, *, discontinuity: bool = False) -> int:
        """Append one adaptation-only packet carrying `pcr_27m`; the counter does not move."""
        flags = 0x90 if discontinuity else 0x10
        out += bytes((SYNC_BYTE, self._b1, self._b2, 0x20 | self.cc, 183, flags))
        out += pcr_field(pcr_27m)
        out += _PSI_FILL[:176]
        return 1

    def write_pes(
        self, out: bytearray, prefix: bytes, body: BytesLike, *, random_access: bool = False
    ) -> int:
        """Append one PES, `prefix + body`, as packets; return the count.

        `prefix` (the PES header and any small codec header, at most 182 bytes) and `body` are
        not joined: `body` is read in place. The first packet has payload_unit_start and, with
        `random_access`, an adaptation field with random_access_indicator; the last packet is
        padded with adaptation-field stuffing.
        """
        fast = _impl.write_pes
        if fast is not None and type(prefix) is bytes:
            count, self.cc = fast(out, self.pid, self.cc, prefix, body, random_access)
            return count
        view = memoryview(body).cast("B")
        body_len = len(view)
        total = len(prefix) + body_len
        af_flags = 0x40 if random_access else 0
        cap_first = TS_PAYLOAD_BYTES - (2 if random_access else 0)
        b1s, b2 = self._b1_start, self._b2
        self.cc = cc = (self.cc + 1) & 15
        if total <= TS_PAYLOAD_BYTES and not (random_access and total > cap_first):
            stuff = TS_PAYLOAD_BYTES - total
            if stuff == 0:
                out += bytes((SYNC_BYTE, b1s, b2, 0x10 | cc))
            else:
                out += bytes((SYNC_BYTE, b1s, b2, 0x30 | cc))
                out += _stuffing_af(stuff, af_flags) if af_flags else _PLAIN_STUFFING[stuff]
            out += prefix
            out += view
            return 1
        if len(prefix) > cap_first:
            raise ValueError(f"PES prefix too long for one packet: {len(prefix)} bytes")
        take = cap_first - len(prefix)
        if random_access:
            out += bytes((SYNC_BYTE, b1s, b2, 0x30 | cc, 1, 0x40))
        else:
            out += bytes((SYNC_BYTE, b1s, b2, 0x10 | cc))
        out += prefix
        out += view[:take]
        rest = body_len - take
        full, tail = divmod(rest, TS_PAYLOAD_BYTES)
        if full >= _NUMPY_MIN_PACKETS:
            # Every full packet at once: headers as one little-endian uint32 column sliced
            # from a precomputed counter cycle (a gather costs 10x more), payload rows copied
            # straight from `body`.
            cycle = self._header_cycle
            start = (cc + 1) & 15
            if start + full > len(cycle):
                cycle = self._header_cycle = _header_cycle(self._headers, full)
            block = np.empty((full, TS_PACKET_BYTES), np.uint8)
            block.view("<u4")[:, 0] = cycle[start : start + full]
            block[:, 4:] = np.frombuffer(
                view, np.uint8, count=full * TS_PAYLOAD_BYTES, offset=take
            ).reshape(full, TS_PAYLOAD_BYTES)
            out += block.data
            cc = (cc + full) & 15
        else:
            headers = self._headers
            pos = take
            for _ in range(full):
                cc = (cc + 1) & 15
                out += headers[cc]
                out += view[pos : pos + TS_PAYLOAD_BYTES]
                pos += TS_PAYLOAD_BYTES
        count = 1 + full
        if tail:
            cc = (cc + 1) & 15
            out += bytes((SYNC_BYTE, self._b1, b2, 0x30 | cc))
            out += _PLAIN_STUFFING[TS_PAYLOAD_BYTES - tail]
            out += view[body_len - tail :]
            count += 1
        self.cc = cc
        return count
