"""AAC in ADTS (ISO/IEC 13818-7 / 14496-3): header parsing and AudioSpecificConfig synthesis.

`parse_adts` reads one ADTS header; `audio_specific_config` builds the 2-byte (or, for a rate
outside the index table, 5-byte) AudioSpecificConfig the catalog carries as `description`.
The framing loop lives in `mux.audio.AudioFramer`; `ADTS` adapts this module to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mux.errors import MalformedBitstream

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


def is_sync(data: bytes, pos: int) -> bool:
    """True if an ADTS sync word (12 ones, layer 00) starts at `pos` (needs 2 bytes)."""
    return data[pos] == 0xFF and (data[pos + 1] & 0xF6) == 0xF0


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
