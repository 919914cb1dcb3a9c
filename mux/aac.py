"""AAC in ADTS (ISO/IEC 13818-7 / 14496-3): header parsing and AudioSpecificConfig synthesis.

`parse_adts` reads one ADTS header; `audio_specific_config` builds the 2-byte (or, for a rate
outside the index table, 5-byte) AudioSpecificConfig the catalog carries as `description`.
The framing loop lives in `mux.audio.AudioFramer`; `ADTS` adapts this module to it. For the
exporter, `adts_fields_from_asc` / `adts_fields_from_params` find the ADTS fields of a catalog
entry and `adts_header` writes the header.
"""

from __future__ import annotations

from dataclasses import dataclass

from mux.errors import Malformed, MalformedBitstream
from mux.nal import BitReader

#: samplingFrequencyIndex -> Hz (ISO/IEC 14496-3 table 1.18); 13 and 14 are reserved.
SAMPLE_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
#: channelConfiguration -> channel count (0 = defined in-band by a PCE).
CHANNELS = (0, 1, 2, 3, 4, 5, 6, 8)
ADTS_HEADER = 7
SAMPLES_PER_FRAME = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class AdtsHeader:
    """One ADTS frame header. `frame_length` includes the header; `header_length` is 7 or 9."""

    object_type: int
    sample_rate_index: int
    channel_config: int
    frame_length: int
    header_length: int
    raw_blocks: int

    @property
    def sample_rate(self) -> int:
        """Sampling rate in Hz."""
        return SAMPLE_RATES[self.sample_rate_index]

    @property
    def channels(self) -> int:
        """Channel count (0 when a program config element defines the layout)."""
        return CHANNELS[self.channel_config]


def parse_adts(data: bytes, pos: int = 0) -> AdtsHeader:
    """Parse the ADTS header at `data[pos:]` (at least 7 bytes; `MalformedBitstream` if not one)."""
    if len(data) - pos < ADTS_HEADER:
        raise MalformedBitstream("ADTS header truncated", offset=pos)
    b1, b2, b3, b4, b5, b6 = data[pos + 1 : pos + 7]
    if data[pos] != 0xFF or (b1 & 0xF6) != 0xF0:
        raise MalformedBitstream("no ADTS sync word", offset=pos)
    protection_absent = b1 & 1
    object_type = (b2 >> 6) + 1
    sample_rate_index = (b2 >> 2) & 0x0F
    if sample_rate_index >= len(SAMPLE_RATES):
        raise MalformedBitstream(f"ADTS sampling index {sample_rate_index} is reserved", offset=pos)
    channel_config = ((b2 & 1) << 2) | (b3 >> 6)
    frame_length = ((b3 & 0x03) << 11) | (b4 << 3) | (b5 >> 5)
    header_length = ADTS_HEADER if protection_absent else ADTS_HEADER + 2
    if frame_length <= header_length:
        raise MalformedBitstream(f"ADTS frame length {frame_length} too short", offset=pos)
    return AdtsHeader(
        object_type=object_type,
        sample_rate_index=sample_rate_index,
        channel_config=channel_config,
        frame_length=frame_length,
        header_length=header_length,
        raw_blocks=(b6 & 0x03) + 1,
    )


def audio_specific_config(object_type: int, sample_rate: int, channel_config: int) -> bytes:
    """Build an AudioSpecificConfig: 5 bits object type, rate index (or explicit rate), channels."""
    if not 1 <= object_type <= 30:
        raise ValueError(f"audio object type {object_type} out of range")
    if sample_rate in SAMPLE_RATES:
        bits = (object_type << 11) | (SAMPLE_RATES.index(sample_rate) << 7) | (channel_config << 3)
        return bits.to_bytes(2, "big")
    value = (object_type << 35) | (0xF << 31) | (sample_rate << 7) | (channel_config << 3)
    return value.to_bytes(5, "big")


#: ADTS header fields that stay the same for a stream: (profile, sampling index, channel config).
AdtsFields = tuple[int, int, int]


def _sampling_index(bits: BitReader) -> int:
    index = bits.u(4)
    if index == 15:
        rate = bits.u(24)
        if rate not in SAMPLE_RATES:
            raise Malformed(f"sample rate {rate} Hz has no ADTS sampling index")
        index = SAMPLE_RATES.index(rate)
    return index


def _object_type(bits: BitReader) -> int:
    aot = bits.u(5)
    return 32 + bits.u(6) if aot == 31 else aot


def adts_fields_from_asc(asc: bytes) -> AdtsFields:
    """Return (ADTS profile, sampling index, channel config) for an AudioSpecificConfig.

    HE-AAC (object type 5 or 29) is written as its AAC-LC core with the core sample rate
    (implicit SBR signalling, as ADTS streams carry it). Raises `Malformed` when ADTS cannot
    describe the stream (object types other than AAC Main/LC/SSR/LTP, or a bad config).
    """
    bits = BitReader(asc)
    try:
        aot = _object_type(bits)
        sfi = _sampling_index(bits)
        channels = bits.u(4)
        if aot in (5, 29):
            _sampling_index(bits)
            aot = _object_type(bits)
    except MalformedBitstream as exc:
        raise MalformedBitstream("AudioSpecificConfig truncated", offset=len(asc)) from exc
    if not 1 <= aot <= 4:
        raise Malformed(f"audio object type {aot} cannot be carried in ADTS")
    if sfi > 12:
        raise Malformed(f"sampling frequency index {sfi} is reserved")
    return aot - 1, sfi, channels


def adts_fields_from_params(aot: int, sample_rate: int, channels: int) -> AdtsFields:
    """Return ADTS fields from a codec string's object type, a sample rate and channel count.

    For HE-AAC (5, 29) the catalog's rate is the output rate, twice the AAC-LC core's. Raises
    `ValueError` when ADTS cannot describe them.
    """
    if aot in (5, 29):
        aot, sample_rate = 2, sample_rate // 2
    if not 1 <= aot <= 4:
        raise ValueError(f"audio object type {aot} cannot be carried in ADTS")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample rate {sample_rate} Hz has no ADTS sampling index")
    if not 1 <= channels <= 8:
        raise ValueError(f"{channels} channels have no AAC channel configuration")
    return aot - 1, SAMPLE_RATES.index(sample_rate), 7 if channels == 8 else channels


def adts_header(fields: AdtsFields, payload_bytes: int) -> bytes:
    """The 7-byte ADTS header (no CRC) of a raw AAC frame of `payload_bytes`; `Malformed` if
    the frame is too long for ADTS's 13-bit frame_length."""
    frame_length = payload_bytes + ADTS_HEADER
    if frame_length > 0x1FFF:
        raise Malformed(f"a {payload_bytes}-byte AAC frame exceeds ADTS's 8191-byte limit")
    profile, sfi, channels = fields
    return bytes(
        (
            0xFF,
            0xF1,
            (profile << 6) | (sfi << 2) | (channels >> 2),
            ((channels & 3) << 6) | (frame_length >> 11),
            (frame_length >> 3) & 0xFF,
            ((frame_length & 7) << 5) | 0x1F,
            0xFC,
        )
    )
