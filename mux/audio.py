"""Cuts audio PES payloads into codec frames with timestamps: AAC in ADTS, MPEG audio, AC-3,
E-AC-3 and Opus (behind its MPEG-TS control header).

One `AudioFramer` per audio stream. `push(data, pts_us)` returns the frames that completed, each
stamped: the first frame that starts in a PES gets the PES timestamp and each next one is
advanced by its duration in samples. A frame cut by the end of a PES waits for the next PES;
`reset()` (after a continuity gap) forgets it. Sync is regained on a header confirmed by the
next one. `config` is the catalog entry the latest header describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mux import aac
from mux.catalog import AudioConfig
from mux.errors import MalformedBitstream


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameInfo:
    """What a frame header says: sizes in bytes (`length` includes the header), duration in
    samples, and the decoder config. `strip` bytes at the start are not part of the payload.
    `dependent` marks an E-AC-3 dependent substream that extends the previous frame."""

    length: int
    strip: int
    samples: int
    sample_rate: int
    channels: int
    codec: str
    description: bytes | None = None
    dependent: bool = False


class FrameFormat(Protocol):
    """A codec's frame syntax: the header size, where a sync word may be, and its parser."""

    name: str
    suffix: str
    min_header: int

    def find_sync(self, data: bytes, pos: int) -> int:
        """Offset of the next possible header at or after `pos`, or -1."""
        ...

    def parse(self, data: bytes, pos: int) -> FrameInfo:
        """Parse the header at `pos` (`min_header` bytes there); `MalformedBitstream` if bad."""
        ...


def find_two_byte_sync(data: bytes, pos: int, first: bytes, mask: int, value: int) -> int:
    """Offset of the first byte `first` at or after `pos` whose next byte has
    `next & mask == value`, or -1 (a sync word spanning two bytes)."""
    last = len(data) - 1
    while True:
        pos = data.find(first, pos)
        if pos == -1 or pos >= last:
            return -1
        if data[pos + 1] & mask == value:
            return pos
        pos += 1


class AudioFramer:
    """Frame state of one audio stream; see the module docstring.

    `config` is None until a header parses; `config_changed` is set when it changes (the caller
    clears it). `skipped_bytes` counts bytes dropped while looking for sync.
    """

    #: A tail longer than this cannot be the start of a frame of any supported codec.
    MAX_FRAME = 1 << 14

    def __init__(self, fmt: FrameFormat) -> None:
        self.fmt = fmt
        self.config: AudioConfig | None = None
        self.config_changed = False
        self.skipped_bytes = 0
        self._tail = b""
        self._tail_ts_us: int | None = None
        self._base_us: int | None = None
        self._samples = 0
        self._rate = 0
        self._synced = False

    def reset(self) -> None:
        """Forget a partial frame and sync (a gap in the stream); timestamps continue."""
        self._tail = b""
        self._tail_ts_us = None
        self._synced = False

    def push(self, data: bytes, pts_us: int | None) -> list[tuple[int, bytes]]:
        """Add one PES payload; return the completed frames as `(timestamp_us, payload)`.

        `pts_us` is the PES timestamp (None if the PES had none: timestamps continue from the
        previous frames). Never raises on bad data: unparseable bytes are skipped and counted.
        """
        head = len(self._tail)
        buf = self._tail + data if head else data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        size = len(buf)
        fmt = self.fmt
        pes_started = False
        while pos < size:
            if size - pos < fmt.min_header:
                break
            try:
                info = fmt.parse(buf, pos)
            except MalformedBitstream:
                info = None
            if info is not None and not self._synced and pos != head:
                # After a loss of sync a header needs the next one to confirm it; the start
                # of a PES payload (PES packets are aligned to frames) needs no confirmation.
                info = self._confirmed(buf, pos, info)
            if info is None:
                self._synced = False
                nxt = fmt.find_sync(buf, pos + 1)
                nxt = size if nxt == -1 else nxt
                self.skipped_bytes += nxt - pos
                pos = nxt
                continue
            if pos + info.length > size:
                break
            self._synced = True
            if pos < head and self._tail_ts_us is not None:
                ts_us = self._tail_ts_us
                if self._rate != info.sample_rate:  # first frame, or a new rate: anchor here
                    self._base_us = ts_us
                    self._samples = 0
                    self._rate = info.sample_rate
            else:
                if not pes_started and pos >= head:
                    pes_started = True
                    if pts_us is not None:
                        self._base_us = pts_us
                        self._samples = 0
                ts_us = self._now_us(info)
            payload = buf[pos + info.strip : pos + info.length]
            if info.dependent:
                if frames:
                    last_ts, last_payload = frames[-1]
                    frames[-1] = (last_ts, last_payload + payload)
            else:
                self._set_config(info)
                frames.append((ts_us, payload))
                self._samples += info.samples
            pos += info.length
        rest = buf[pos:]
        if len(rest) > self.MAX_FRAME:
            self.skipped_bytes += len(rest)
            rest = b""
        if rest and pos >= head and pts_us is not None and not pes_started:
            self._base_us = pts_us
            self._samples = 0
        self._tail = rest
        self._tail_ts_us = self._peek_us() if rest else None
        return frames

    def _confirmed(self, buf: bytes, pos: int, info: FrameInfo) -> FrameInfo | None:
        """After a sync loss, trust a header only if the next one follows it (or data ends)."""
        nxt = pos + info.length
        if nxt + self.fmt.min_header > len(buf):
            return info
        try:
            self.fmt.parse(buf, nxt)
        except MalformedBitstream:
            return None
        return info

    def _now_us(self, info: FrameInfo) -> int:
        if self._rate != info.sample_rate and self._base_us is not None:
            self._base_us = self._peek_us()
            self._samples = 0
        self._rate = info.sample_rate
        return self._peek_us()

    def _peek_us(self) -> int:
        base = self._base_us or 0
        if not self._rate:
            return base
        return base + self._samples * 1_000_000 // self._rate

    def _set_config(self, info: FrameInfo) -> None:
        config = self.config
        if (
            config is None
            or config.codec != info.codec
            or config.sample_rate != info.sample_rate
            or config.channels != info.channels
            or config.description != info.description
        ):
            self.config = AudioConfig(
                codec=info.codec,
                sample_rate=info.sample_rate,
                channels=info.channels,
                description=info.description,
            )
            self.config_changed = True


class Adts:
    """AAC in ADTS frames; the ADTS header is stripped (payload = raw AAC)."""

    name = "AAC"
    suffix = ".aac"
    min_header = aac.ADTS_HEADER

    def find_sync(self, data: bytes, pos: int) -> int:
        # ADTS: 0xFFF sync word, layer 00 (checked again by aac.parse_adts)
        return find_two_byte_sync(data, pos, b"\xff", 0xF6, 0xF0)

    def parse(self, data: bytes, pos: int) -> FrameInfo:
        hdr = aac.parse_adts(data, pos)
        return FrameInfo(
            length=hdr.frame_length,
            strip=hdr.header_length,
            samples=aac.SAMPLES_PER_FRAME * hdr.raw_blocks,
            sample_rate=hdr.sample_rate,
            channels=hdr.channels,
            codec=f"mp4a.40.{hdr.object_type}",
            description=aac.audio_specific_config(
                hdr.object_type, hdr.sample_rate, hdr.channel_config
            ),
        )


# MPEG audio (ISO/IEC 11172-3, 13818-3): kbit/s by [version is MPEG-1][layer][index].
_MPA_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPA_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


class MpegAudio:
    """MPEG-1/2 audio layers I-III, carried whole (stream types 0x03 and 0x04)."""

    name = "MPEG audio"
    suffix = ".mp2"
    min_header = 4

    def find_sync(self, data: bytes, pos: int) -> int:
        return find_two_byte_sync(data, pos, b"\xff", 0xE0, 0xE0)  # 11-bit frame sync

    def parse(self, data: bytes, pos: int) -> FrameInfo:
        b1, b2, b3 = data[pos + 1], data[pos + 2], data[pos + 3]
        if data[pos] != 0xFF or b1 & 0xE0 != 0xE0:
            raise MalformedBitstream("no MPEG audio sync word", offset=pos)
        version = (b1 >> 3) & 3
        layer = 4 - ((b1 >> 1) & 3)
        bitrate_index = b2 >> 4
        rate_index = (b2 >> 2) & 3
        if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
            raise MalformedBitstream("reserved or free-format MPEG audio header", offset=pos)
        mpeg1 = version == 3
        bitrate = _MPA_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
        rate = _MPA_RATES[version][rate_index]
        padding = (b2 >> 1) & 1
        if layer == 1:
            length = (12 * bitrate // rate + padding) * 4
            samples = 384
        elif layer == 3 and not mpeg1:
            length = 72 * bitrate // rate + padding
            samples = 576
        else:
            length = 144 * bitrate // rate + padding
            samples = 1152
        return FrameInfo(
            length=length,
            strip=0,
            samples=samples,
            sample_rate=rate,
            channels=1 if (b3 >> 6) == 3 else 2,
            codec="mp3" if layer == 3 else "mp2",
        )


# AC-3 (ATSC A/52): words per syncframe by [frmsizecod // 2][fscod].
_AC3_WORDS = (
    (64, 69, 96), (80, 87, 120), (96, 104, 144), (112, 121, 168), (128, 139, 192),
    (160, 174, 240), (192, 208, 288), (224, 243, 336), (256, 278, 384), (320, 348, 480),
    (384, 417, 576), (448, 487, 672), (512, 557, 768), (640, 696, 960), (768, 835, 1152),
    (896, 975, 1344), (1024, 1114, 1536), (1152, 1253, 1728), (1280, 1393, 1920),
)  # fmt: skip
_AC3_RATES = (48000, 44100, 32000)
_ACMOD_CHANNELS = (2, 1, 2, 3, 3, 4, 4, 5)


class _SyncWord0B77:
    min_header = 8

    def find_sync(self, data: bytes, pos: int) -> int:
        return data.find(b"\x0b\x77", pos)


class Ac3(_SyncWord0B77):
    """AC-3 syncframes, carried whole (stream type 0x81, or 0x06 with an AC-3 descriptor)."""

    name = "AC-3"
    suffix = ".ac3"

    def parse(self, data: bytes, pos: int) -> FrameInfo:
        if data[pos] != 0x0B or data[pos + 1] != 0x77:
            raise MalformedBitstream("no AC-3 sync word", offset=pos)
        fscod = data[pos + 4] >> 6
        frmsizecod = data[pos + 4] & 0x3F
        bsid = data[pos + 5] >> 3
        if fscod == 3 or frmsizecod >= 38 or bsid > 10:
            raise MalformedBitstream("reserved AC-3 header fields", offset=pos)
        words = _AC3_WORDS[frmsizecod >> 1][fscod]
        if fscod == 1:
            words += frmsizecod & 1
        return FrameInfo(
            length=words * 2,
            strip=0,
            samples=1536,
            sample_rate=_AC3_RATES[fscod],
            channels=_ac3_channels(data, pos),
            codec="ac-3",
        )


def _ac3_channels(data: bytes, pos: int) -> int:
    """acmod, then lfeon after the optional mix-level fields (A/52 section 5.4.2)."""
    bits = int.from_bytes(data[pos + 6 : pos + 8], "big")
    acmod = bits >> 13
    shift = 12
    if acmod & 1 and acmod != 1:
        shift -= 2  # cmixlev
    if acmod & 4:
        shift -= 2  # surmixlev
    if acmod == 2:
        shift -= 2  # dsurmod
    return _ACMOD_CHANNELS[acmod] + ((bits >> shift) & 1)


_EAC3_BLOCKS = (1, 2, 3, 6)


class Eac3(_SyncWord0B77):
    """E-AC-3 syncframes (stream type 0x87, or 0x06 with an E-AC-3 descriptor); dependent
    substreams are appended to the independent frame they extend."""

    name = "E-AC-3"
    suffix = ".eac3"

    def parse(self, data: bytes, pos: int) -> FrameInfo:
        if data[pos] != 0x0B or data[pos + 1] != 0x77:
            raise MalformedBitstream("no E-AC-3 sync word", offset=pos)
        bsid = data[pos + 5] >> 3
        if not 11 <= bsid <= 16:
            raise MalformedBitstream(f"E-AC-3 bsid {bsid} out of range", offset=pos)
        strmtyp = data[pos + 2] >> 6
        if strmtyp == 3:
            raise MalformedBitstream("reserved E-AC-3 stream type", offset=pos)
        length = ((((data[pos + 2] & 0x07) << 8) | data[pos + 3]) + 1) * 2
        fscod = data[pos + 4] >> 6
        if fscod == 3:
            fscod2 = (data[pos + 4] >> 4) & 3
            if fscod2 == 3:
                raise MalformedBitstream("reserved E-AC-3 fscod2", offset=pos)
            rate = _AC3_RATES[fscod2] // 2
            blocks = 6
        else:
            rate = _AC3_RATES[fscod]
            blocks = _EAC3_BLOCKS[(data[pos + 4] >> 4) & 3]
        acmod = (data[pos + 4] >> 1) & 7
        lfeon = data[pos + 4] & 1
        return FrameInfo(
            length=length,
            strip=0,
            samples=256 * blocks,
            sample_rate=rate,
            channels=_ACMOD_CHANNELS[acmod] + lfeon,
            codec="ec-3",
            dependent=strmtyp == 1,
        )


# Opus frame durations in 48 kHz samples by TOC config (RFC 6716 section 3.1).
_OPUS_FRAME_SAMPLES = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


class OpusTs:
    """Opus packets behind the `opus_control_header` of the Opus-in-MPEG-TS mapping (stream
    type 0x06 with an `Opus` registration descriptor); the control header is stripped."""

    name = "Opus"
    suffix = ".opus"
    min_header = 3

    def __init__(self, channels: int = 2) -> None:
        self.channels = channels

    def find_sync(self, data: bytes, pos: int) -> int:
        return find_two_byte_sync(data, pos, b"\x7f", 0xE0, 0xE0)  # control header prefix

    def parse(self, data: bytes, pos: int) -> FrameInfo:
        size = len(data)
        if data[pos] != 0x7F or data[pos + 1] & 0xE0 != 0xE0:
            raise MalformedBitstream("no Opus control header", offset=pos)
        flags = data[pos + 1]
        at = pos + 2
        au_size = 0
        while at < size and data[at] == 0xFF:
            au_size += 255
            at += 1
        if at >= size:
            # Not enough bytes to know the size yet: report a length past the end.
            return FrameInfo(
                length=size - pos + 1, strip=0, samples=0, sample_rate=48000,
                channels=self.channels, codec="opus",
            )  # fmt: skip
        au_size += data[at]
        at += 1
        if flags & 0x10:
            at += 2  # start_trim
        if flags & 0x08:
            at += 2  # end_trim
        if flags & 0x04:
            if at >= size:
                return FrameInfo(
                    length=size - pos + 1, strip=0, samples=0, sample_rate=48000,
                    channels=self.channels, codec="opus",
                )  # fmt: skip
            at += 1 + data[at]
        strip = at - pos
        if au_size == 0:
            raise MalformedBitstream("empty Opus access unit", offset=pos)
        samples = 0
        if at < size:
            toc = data[at]
            count = toc & 3
            frames = 1 if count == 0 else 2 if count < 3 else 0
            if count == 3:
                frames = data[at + 1] & 0x3F if at + 1 < size else 1
            samples = _OPUS_FRAME_SAMPLES[toc >> 3] * frames
        return FrameInfo(
            length=strip + au_size,
            strip=strip,
            samples=samples,
            sample_rate=48000,
            channels=self.channels,
            codec="opus",
        )
