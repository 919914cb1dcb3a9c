"""A deliberately small MPEG-TS writer for importer tests: PAT/PMT sections, PES packets, and
packetization with continuity counters, so tests can build exactly the damage they need.
Independent of `mux/` except for the CRC (which has its own known-vector test)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mux.psi import crc32_mpeg2

PMT_PID = 0x1000


def section(table_id: int, id_ext: int, body: bytes, version: int = 0) -> bytes:
    """A long-form PSI section with its CRC."""
    length = 5 + len(body) + 4
    head = bytes(
        [table_id, 0xB0 | (length >> 8), length & 0xFF, id_ext >> 8, id_ext & 0xFF,
         0xC1 | (version << 1), 0, 0]
    )  # fmt: skip
    data = head + body
    return data + crc32_mpeg2(data).to_bytes(4, "big")


def pat(pmt_pid: int = PMT_PID, program: int = 1, extra: Iterable[tuple[int, int]] = ()) -> bytes:
    """A PAT section listing `program` at `pmt_pid` (plus `extra` (program, pid) pairs)."""
    entries = [(program, pmt_pid), *extra]
    body = b"".join(p.to_bytes(2, "big") + (0xE000 | pid).to_bytes(2, "big") for p, pid in entries)
    return section(0x00, 1, body)


@dataclass(frozen=True, slots=True)
class Es:
    """One PMT entry."""

    stream_type: int
    pid: int
    descriptors: bytes = b""


def pmt(
    streams: Iterable[Es], *, pcr_pid: int = 0x100, version: int = 0, program: int = 1
) -> bytes:
    """A PMT section for `streams`."""
    body = (0xE000 | pcr_pid).to_bytes(2, "big") + (0xF000).to_bytes(2, "big")
    for es in streams:
        body += bytes([es.stream_type]) + (0xE000 | es.pid).to_bytes(2, "big")
        body += (0xF000 | len(es.descriptors)).to_bytes(2, "big") + es.descriptors
    return section(0x02, program, body, version)


def pts_bytes(marker: int, value: int) -> bytes:
    """The 5-byte PTS/DTS field with its 4-bit prefix."""
    return bytes(
        [
            (marker << 4) | (((value >> 30) & 7) << 1) | 1,
            (value >> 22) & 0xFF,
            (((value >> 15) & 0x7F) << 1) | 1,
            (value >> 7) & 0xFF,
            ((value & 0x7F) << 1) | 1,
        ]
    )


def pes(stream_id: int, payload: bytes, *, pts: int | None = None, bounded: bool = True) -> bytes:
    """A PES packet; `bounded=False` writes PES_packet_length 0 (video style)."""
    optional = b""
    flags = 0
    if pts is not None:
        optional = pts_bytes(2, pts)
        flags = 0x80
    header = bytes([0x80, flags, len(optional)]) + optional
    length = len(header) + len(payload) if bounded else 0
    return b"\x00\x00\x01" + bytes([stream_id]) + length.to_bytes(2, "big") + header + payload


@dataclass
class Muxer:
    """Cuts units into 188-byte packets, keeping one continuity counter per PID."""

    cc: dict[int, int] = field(default_factory=dict)

    def packets(self, pid: int, unit: bytes, *, psi: bool = False) -> list[bytes]:
        """Packetize one PES (or one PSI section, with a pointer field) on `pid`."""
        data = (b"\x00" + unit) if psi else unit
        out = []
        first = True
        while data:
            cc = self.cc.get(pid, -1) + 1 & 0x0F
            self.cc[pid] = cc
            header = bytes([0x47, (0x40 if first else 0) | (pid >> 8), pid & 0xFF])
            chunk = data[:184]
            data = data[184:]
            if len(chunk) == 184:
                out.append(header + bytes([0x10 | cc]) + chunk)
            elif psi:
                out.append(header + bytes([0x10 | cc]) + chunk + b"\xff" * (184 - len(chunk)))
            else:
                stuffing = 184 - len(chunk) - 1  # adaptation_field_length byte
                af = bytes([stuffing]) + (b"\x00" + b"\xff" * (stuffing - 1) if stuffing else b"")
                out.append(header + bytes([0x30 | cc]) + af + chunk)
            first = False
        return out

    def psi(self, pmt_section: bytes, pat_section: bytes | None = None) -> list[bytes]:
        """PAT (default: program 1 at `PMT_PID`) then the PMT."""
        return self.packets(0, pat_section or pat(), psi=True) + self.packets(
            PMT_PID, pmt_section, psi=True
        )


def adts(payload: bytes, *, rate_index: int = 3, channels: int = 2, profile: int = 1) -> bytes:
    """One ADTS frame (no CRC) around `payload`."""
    length = 7 + len(payload)
    return bytes(
        [
            0xFF, 0xF1, (profile << 6) | (rate_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (length >> 11), (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F, 0xFC,
        ]
    ) + payload  # fmt: skip
