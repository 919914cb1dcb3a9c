"""PES headers (ISO/IEC 13818-1 section 2.4.3.6) and the 33-bit timestamp unwrapper.

`parse_pes_header` reads the fixed part, PTS and DTS of a PES packet; `PtsUnwrapper` turns the
33-bit 90 kHz PTS values of one program into a monotonic timeline, and `to_us` converts ticks to
the microseconds the model's legacy frames carry.
"""

from __future__ import annotations

from dataclasses import dataclass

from mux.errors import MalformedPes

PTS_WRAP = 1 << 33
_HALF_WRAP = 1 << 32

# stream_ids whose PES packets have no optional header: program_stream_map, padding,
# private_stream_2, ECM, EMM, program_stream_directory, DSM-CC, H.222.1 type E.
_NO_HEADER_IDS = frozenset((0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xFF, 0xF2, 0xF8))


@dataclass(frozen=True, slots=True)
class PesHeader:
    """The parsed start of a PES packet.

    `packet_length` is PES_packet_length (0: unbounded, ends at the next PES); `total_length`
    is the whole PES size in bytes when bounded, else None; `payload_offset` is where the
    elementary stream data starts; timestamps are raw 33-bit 90 kHz values or None.
    """

    stream_id: int
    packet_length: int
    pts_90k: int | None
    dts_90k: int | None
    payload_offset: int

    @property
    def total_length(self) -> int | None:
        """Bytes from the start code to the end of the PES, or None if unbounded."""
        return 6 + self.packet_length if self.packet_length else None


def _timestamp(data: bytes | memoryview, at: int) -> int:
    b0, b1, b2, b3, b4 = data[at : at + 5]
    return ((b0 >> 1) & 0x07) << 30 | b1 << 22 | (b2 >> 1) << 15 | b3 << 7 | b4 >> 1


def parse_pes_header(data: bytes | memoryview) -> PesHeader:
    """Parse the PES header at the start of `data`; `MalformedPes` if it is not one.

    `data` must hold the whole header (9 bytes plus PES_header_data_length); marker bits are
    not checked, since muxers in the field get them wrong and the values still hold.
    """
    size = len(data)
    if size < 6 or data[0] != 0 or data[1] != 0 or data[2] != 1:
        raise MalformedPes("PES does not start with 00 00 01", offset=0)
    stream_id = data[3]
    packet_length = (data[4] << 8) | data[5]
    if stream_id in _NO_HEADER_IDS:
        return PesHeader(stream_id, packet_length, None, None, 6)
    if size < 9:
        raise MalformedPes("PES header truncated", offset=size)
    if data[6] & 0xC0 != 0x80:
        raise MalformedPes(f"PES optional header marker is {data[6] >> 6:02b}, not 10", offset=6)
    flags = data[7] >> 6
    header_end = 9 + data[8]
    if header_end > size:
        raise MalformedPes(f"PES header length {data[8]} runs past the packet", offset=8)
    if packet_length and header_end > 6 + packet_length:
        raise MalformedPes("PES header is longer than the PES packet", offset=8)
    pts = dts = None
    if flags & 0x2:
        if header_end < 14:
            raise MalformedPes("PES header too short for its PTS", offset=9)
        pts = _timestamp(data, 9)
        if flags == 0x3:
            if header_end < 19:
                raise MalformedPes("PES header too short for its DTS", offset=14)
            dts = _timestamp(data, 14)
    return PesHeader(stream_id, packet_length, pts, dts, header_end)


def pes_header_size(data: bytes | memoryview) -> int | None:
    """Bytes the header at the start of `data` needs, or None if `data` is too short to say."""
    if len(data) < 9:
        return None
    if data[3] in _NO_HEADER_IDS:
        return 6
    return 9 + data[8]


def to_us(ticks_90k: int) -> int:
    """Convert 90 kHz ticks to whole microseconds (floor)."""
    return ticks_90k * 100 // 9


class PtsUnwrapper:
    """Unwraps 33-bit PTS/DTS values of one program onto a single monotonic 90 kHz timeline.

    Each value is placed at the 2**33 multiple closest to the previous unwrapped value of any
    stream of the program, so audio and video stay in one clock domain across the ~26.5 h
    wrap; the result is never negative. Values are raw ticks in, unwrapped ticks out.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: int | None = None

    def unwrap(self, ticks_90k: int) -> int:
        """Return `ticks_90k` (0 <= value < 2**33) unwrapped next to the previous value."""
        last = self._last
        value = ticks_90k
        if last is not None:
            value += (last - ticks_90k + _HALF_WRAP) // PTS_WRAP * PTS_WRAP
            if value < 0:
                value += (-value + PTS_WRAP - 1) // PTS_WRAP * PTS_WRAP
        self._last = value
        return value
