"""ADTS headers, AudioSpecificConfig, and the audio framers fed whole, byte by byte, in random
splits and with trailing bytes."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mux.aac import audio_specific_config, parse_adts
from mux.audio import Ac3, Adts, AudioFramer, Eac3, FrameFormat, MpegAudio, OpusTs
from mux.errors import MalformedBitstream
from tests.media import es_packets, expected_counts
from tests.unit.mux.support import FIXTURES
from tests.unit.mux.tsbuild import adts


@functools.cache
def fixture_frames(name: str, pid: int) -> list[bytes]:
    return [p.data for p in es_packets(FIXTURES / name, pid)]


def opus_control(packet: bytes) -> bytes:
    size = len(packet)
    return b"\x7f\xe0" + b"\xff" * (size // 255) + bytes([size % 255]) + packet


# fixture, pid, format, how PyAV's packets become the TS payload, what the track carries
CASES = [
    ("h264_aac.ts", 0x101, Adts(), lambda p: p, lambda p: p[7:]),
    ("aac_only.ts", 0x100, Adts(), lambda p: p, lambda p: p[7:]),
    ("h264_mp2.ts", 0x101, MpegAudio(), lambda p: p, lambda p: p),
    ("ac3.ts", 0x100, Ac3(), lambda p: p, lambda p: p),
    ("eac3.ts", 0x100, Eac3(), lambda p: p, lambda p: p),
    ("opus.ts", 0x100, OpusTs(2), opus_control, lambda p: p),
]
IDS = [c[0] + ":" + type(c[2]).__name__ for c in CASES]


def test_adts_header_fields() -> None:
    frame = adts(b"\x00" * 93, rate_index=4, channels=1)
    header = parse_adts(frame)
    assert (header.object_type, header.sample_rate, header.channels) == (2, 44100, 1)
    assert (header.frame_length, header.header_length, header.raw_blocks) == (100, 7, 1)
    with_crc = bytes([0xFF, 0xF0]) + frame[2:]
    assert parse_adts(with_crc).header_length == 9


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xf1\x50\x80\x0c", "truncated"),
        (b"\xff\xf1\x7c\x80\x0c\x9f\xfc", "reserved sampling index 15"),
        (b"\xff\xf1\x4c\x80\x00\x9f\xfc", "frame length shorter than the header"),
        (b"\xff\xf7\x4c\x80\x0c\x9f\xfc", "layer bits set"),
    ],
)
def test_bad_adts_headers_raise_malformed(data: bytes, why: str) -> None:
    with pytest.raises(MalformedBitstream):
        parse_adts(data)


def test_audio_specific_config_known_values() -> None:
    assert audio_specific_config(2, 48000, 2) == bytes.fromhex("1190")
    assert audio_specific_config(2, 44100, 2) == bytes.fromhex("1210")
    assert audio_specific_config(5, 24000, 1) == bytes.fromhex("2b08")
    # A rate outside the index table is written explicitly: 5 bytes.
    assert audio_specific_config(2, 50000, 2) == bytes.fromhex("178061a810")


@pytest.mark.parametrize(("name", "pid", "fmt", "wrap", "carried"), CASES, ids=IDS)
def test_framer_returns_the_frames_pyav_demuxes(
    name: str, pid: int, fmt: FrameFormat, wrap: object, carried: object
) -> None:
    packets = fixture_frames(name, pid)
    framer = AudioFramer(fmt)
    frames = framer.push(b"".join(wrap(p) for p in packets), 1_000_000)  # type: ignore[operator]
    assert [f for _, f in frames] == [carried(p) for p in packets]  # type: ignore[operator]
    counts = expected_counts(FIXTURES / name)[f"0x{pid:x}"]
    assert framer.config is not None
    assert (framer.config.sample_rate, framer.config.channels) == (
        counts.sample_rate,
        counts.channels,
    )
    assert framer.skipped_bytes == 0


def test_frame_timestamps_advance_by_the_frame_duration_from_each_pes_pts() -> None:
    framer = AudioFramer(Adts())
    frames = framer.push(b"".join(adts(bytes(50)) for _ in range(3)), 1_000_000)
    assert [t for t, _ in frames] == [1_000_000, 1_021_333, 1_042_666]  # 1024 / 48 kHz
    later = framer.push(adts(bytes(50)), 5_000_000)
    assert [t for t, _ in later] == [5_000_000]
    without_pts = framer.push(adts(bytes(50)), None)
    assert [t for t, _ in without_pts] == [5_021_333]


def split_push(framer: AudioFramer, data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    first = True
    for size in [*cuts, len(data)]:
        part = data[pos : pos + size]
        pos += size
        if part:
            out += framer.push(part, 0 if first else None)
            first = False
    return out


@pytest.mark.parametrize(("name", "pid", "fmt", "wrap", "carried"), CASES, ids=IDS)
def test_byte_by_byte_gives_the_same_frames_and_timestamps(
    name: str, pid: int, fmt: FrameFormat, wrap: object, carried: object
) -> None:
    data = b"".join(wrap(p) for p in fixture_frames(name, pid)[:20])  # type: ignore[operator]
    whole = AudioFramer(fmt).push(data, 0)
    assert split_push(AudioFramer(fmt), data, [1] * len(data)) == whole


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    case=st.sampled_from(CASES),
    cuts=st.lists(st.integers(1, 700), max_size=30),
    trailing=st.binary(max_size=5),
)
def test_random_splits_and_trailing_bytes_give_the_same_frames(
    case: tuple[str, int, FrameFormat, object, object], cuts: list[int], trailing: bytes
) -> None:
    name, pid, fmt, wrap, _ = case
    data = b"".join(wrap(p) for p in fixture_frames(name, pid)[:30])  # type: ignore[operator]
    whole = AudioFramer(fmt).push(data, 0)
    framer = AudioFramer(fmt)
    assert split_push(framer, data + trailing, cuts) == whole
    framer.reset()  # whatever partial frame the trailing bytes began is forgotten
    assert framer.push(data, 0) == whole


def test_resync_skips_garbage_and_a_false_header_needs_a_confirming_one() -> None:
    good = [adts(bytes([i]) * 60) for i in range(3)]
    fake = adts(b"\x00" * 10)[:7]  # a header whose frame is not followed by another header
    framer = AudioFramer(Adts())
    frames = framer.push(good[0] + b"\x12\x34" + fake + b"\x55" * 30 + good[1] + good[2], 0)
    assert [f for _, f in frames] == [g[7:] for g in good]
    assert framer.skipped_bytes == 2 + 7 + 30


def test_reset_forgets_a_partial_frame() -> None:
    frame = adts(bytes(80))
    framer = AudioFramer(Adts())
    assert framer.push(frame[:40], 0) == []
    framer.reset()
    assert [f for _, f in framer.push(frame, 100)] == [frame[7:]]


def test_eac3_dependent_substreams_extend_the_independent_frame() -> None:
    independent = fixture_frames("eac3.ts", 0x100)[0]
    dependent = bytearray(independent)
    dependent[2] = (dependent[2] & 0x3F) | 0x40  # strmtyp 1: dependent
    frames = AudioFramer(Eac3()).push(independent + bytes(dependent), 0)
    assert [f for _, f in frames] == [independent + bytes(dependent)]


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        (MpegAudio(), b"\xff\xfb\xf0\x00"),  # bitrate index 15
        (MpegAudio(), b"\xff\xe9\x90\x00"),  # MPEG version reserved
        (Ac3(), b"\x0b\x77\x00\x00\xc0\x40\x00\x00"),  # fscod 3
        (Eac3(), b"\x0b\x77\x00\x00\x00\x40\x00\x00"),  # bsid 8 is AC-3, not E-AC-3
        (OpusTs(), b"\x7f\xe0\x00"),  # empty access unit
    ],
)
def test_reserved_headers_raise_malformed(fmt: FrameFormat, data: bytes) -> None:
    with pytest.raises(MalformedBitstream):
        fmt.parse(data, 0)
