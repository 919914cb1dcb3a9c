"""Annex-B helpers, the RBSP bit reader, and the H.264 / H.265 SPS and keyframe parsers."""

from __future__ import annotations

import functools

import pytest

from mux.errors import Malformed, MalformedBitstream
from mux.h264 import H264, has_recovery_point, parse_sps, sei_payload_types
from mux.h265 import H265, H265Sps
from mux.h265 import parse_sps as parse_sps_h265
from mux.nal import BitReader, scan_head, split_annexb, unescape
from mux.video import VideoFramer
from tests.media import expected_counts, ffprobe_streams
from tests.unit.mux.support import FIXTURES


class BitWriter:
    """Builds RBSP bit strings for hand-made parameter sets."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, count: int, value: int) -> BitWriter:
        self.bits += [(value >> (count - 1 - i)) & 1 for i in range(count)]
        return self

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = [*self.bits, 1]
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


@functools.cache
def parameter_sets(fixture: str, pid: int = 0x100) -> list[bytes]:
    """The NAL units of the first keyframe of a fixture, as PyAV demuxes it."""
    from tests.media import es_packets

    key = next(p for p in es_packets(FIXTURES / fixture, pid) if p.keyframe)
    return split_annexb(key.data)


# -- Annex-B and bits ---------------------------------------------------------------------


def test_scan_head_lists_nal_units_up_to_the_first_slice() -> None:
    data = (
        b"\xaa"
        + b"\x00\x00\x00\x01\x09\xf0"
        + b"\x00\x00\x01\x67\x42\x00\x00"
        + (b"\x00\x00\x01\x65" + b"\x00\x00\x01\x41")
    )
    head = scan_head(data, 1, lambda b: b & 0x1F, lambda t: 1 <= t <= 5)
    assert [(r.nal_type, r.start, r.header, r.end) for r in head] == [
        (9, 1, 5, 7),
        (7, 7, 10, 12),  # trailing zero bytes are not part of the NAL unit
        (5, 13, 17, -1),  # a 4-byte start code: its leading zero is counted
    ]


def test_scan_head_without_a_slice_lists_everything() -> None:
    data = b"\x00\x00\x01\x06\x05\x00\x80\x00\x00\x01\x09\x10"
    head = scan_head(data, 0, lambda b: b & 0x1F, lambda t: 1 <= t <= 5)
    assert [(r.nal_type, r.end) for r in head] == [(6, 7), (9, 12)]
    assert scan_head(b"\x00\x00\x01", 0, lambda b: b, lambda t: True) == []
    assert scan_head(b"no start code", 0, lambda b: b, lambda t: True) == []


def test_split_annexb_and_unescape() -> None:
    assert split_annexb(b"\x00\x00\x00\x01\x67\x01\x00\x00\x01\x68\x02\x00") == [
        b"\x67\x01",
        b"\x68\x02",
    ]
    assert unescape(b"\x67\x00\x00\x03\x01\x00\x00\x03\x00") == b"\x67\x00\x00\x01\x00\x00\x00"


def test_bit_reader_reads_exp_golomb_codes_and_refuses_to_run_past_the_end() -> None:
    r = BitReader(BitWriter().ue(0).ue(5).se(-3).se(4).u(3, 5).rbsp())
    assert (r.ue(), r.ue(), r.se(), r.se(), r.u(3)) == (0, 5, -3, 4, 5)
    with pytest.raises(MalformedBitstream):
        r.u(9)
    with pytest.raises(MalformedBitstream):
        BitReader(b"\x00\x00\x00\x00\x00").ue()  # 40 zero bits: no code that long


# -- H.264 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["h264_aac.ts", "h264_only.ts", "h264_mp2.ts"])
def test_h264_sps_matches_ffprobe(fixture: str) -> None:
    sps_nal = next(n for n in parameter_sets(fixture) if n[0] & 0x1F == 7)
    sps = parse_sps(sps_nal)
    counts = expected_counts(FIXTURES / fixture)["0x100"]
    probe = ffprobe_streams(FIXTURES / fixture)[0x100]
    assert (sps.width, sps.height) == (counts.width, counts.height)
    assert sps.level_idc == probe["level"]
    profile = {"High": 100, "Constrained Baseline": 66}[str(probe["profile"])]
    assert sps.profile_idc == profile
    assert sps.codec == f"avc3.{profile:02x}{sps.constraint_flags:02x}{sps.level_idc:02x}"


def h264_sps(
    *, width_mbs: int, height_units: int, frame_mbs_only: bool, crop: tuple[int, ...]
) -> bytes:
    w = BitWriter().u(8, 100).u(8, 0).u(8, 40).ue(0)  # High, level 4.0, id 0
    w.ue(1).ue(0).ue(0).u(1, 0).u(1, 0)  # 4:2:0, 8 bit, no scaling matrix
    w.ue(0).ue(0).ue(4)  # frame_num bits, poc type 0, poc lsb bits
    w.ue(4).u(1, 0).ue(width_mbs - 1).ue(height_units - 1).u(1, int(frame_mbs_only))
    if not frame_mbs_only:
        w.u(1, 0)
    w.u(1, 1).u(1, 1 if crop else 0)
    for value in crop:
        w.ue(value)
    w.u(1, 0)  # no VUI
    return b"\x67" + w.rbsp()


def test_h264_cropping_is_applied_in_chroma_units() -> None:
    progressive = parse_sps(
        h264_sps(width_mbs=120, height_units=68, frame_mbs_only=True, crop=(0, 0, 0, 4))
    )
    assert (progressive.width, progressive.height) == (1920, 1080)
    interlaced = parse_sps(
        h264_sps(width_mbs=120, height_units=34, frame_mbs_only=False, crop=(0, 0, 0, 2))
    )
    assert (interlaced.width, interlaced.height) == (1920, 1080)
    assert progressive.codec == "avc3.640028"


def test_h264_sps_truncated_anywhere_raises_malformed_and_trailing_bytes_are_ignored() -> None:
    nal = h264_sps(width_mbs=40, height_units=23, frame_mbs_only=True, crop=(0, 0, 0, 4))
    assert parse_sps(nal + b"\x00\xff\x12") == parse_sps(nal)
    for end in range(len(nal) - 1):
        with pytest.raises(Malformed):
            parse_sps(nal[:end])


def test_recovery_point_sei_marks_an_open_gop_keyframe() -> None:
    recovery = b"\x06\x06\x01\x84\x80"  # payload type 6, 1 byte, trailing bits
    user_data = b"\x06\x05\x02\xaa\xbb\x80"
    assert has_recovery_point(recovery)
    assert not has_recovery_point(user_data)
    assert sei_payload_types(b"\x06" + b"\x05\x01\x00" + b"\x06\x01\x84" + b"\x80") == [5, 6]
    assert not has_recovery_point(b"\x06\x06\x09\x84")  # runs past the end
    frame = b"\x00\x00\x01" + recovery + b"\x00\x00\x01\x41\x9a"  # non-IDR slice after it
    head = scan_head(frame, 0, H264.nal_type, H264.is_slice)
    assert H264.is_keyframe(frame, head)


def test_framer_puts_cached_parameter_sets_in_front_of_a_keyframe_that_lacks_them() -> None:
    nals = parameter_sets("h264_only.ts")
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    idr = next(n for n in nals if n[0] & 0x1F == 5)
    framer = VideoFramer(H264())
    first = framer.push(b"TS" + b"\x00\x00\x00\x01".join([b"", b"\x09\xf0", sps, pps, idr]), 2)
    assert first.keyframe
    assert framer.config is not None
    assert (framer.config.coded_width, framer.config.coded_height) == (320, 240)
    bare = b"TS" + b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x01" + idr
    unit = framer.push(bare, 2)
    assert unit.keyframe
    assert split_annexb(unit.frame[2:]) == [b"\x09\xf0", sps, pps, idr]  # after the AUD
    assert unit.frame[:2] == b"TS"


def test_a_keyframe_before_any_parameter_set_is_not_a_keyframe() -> None:
    idr = next(n for n in parameter_sets("h264_only.ts") if n[0] & 0x1F == 5)
    assert not VideoFramer(H264()).push(b"\x00\x00\x01" + idr, 0).keyframe
    with pytest.raises(MalformedBitstream):
        VideoFramer(H264()).push(b"no start code here", 0)


# -- H.265 ----------------------------------------------------------------------------------


def test_h265_sps_matches_ffprobe() -> None:
    sps_nal = next(n for n in parameter_sets("h265_aac.ts") if (n[0] >> 1) & 0x3F == 33)
    sps = parse_sps_h265(sps_nal)
    probe = ffprobe_streams(FIXTURES / "h265_aac.ts")[0x100]
    assert (sps.width, sps.height) == (640, 360)  # 368 coded rows, conformance window crops 8
    assert sps.level_idc == probe["level"]
    assert probe["profile"] == "Main"
    assert sps.profile_idc == 1
    assert sps.codec == "hev1.1.6.L63.90"  # Main; compatible with Main and Main 10; progressive


@pytest.mark.parametrize(
    ("sps", "codec"),
    [
        (dict(profile_space=0, tier=0, profile_idc=1, compatibility_flags=0x60000000,
              constraint_bytes=bytes([0xB0, 0, 0, 0, 0, 0]), level_idc=93), "hev1.1.6.L93.B0"),
        (dict(profile_space=1, tier=1, profile_idc=4, compatibility_flags=0x82000000,
              constraint_bytes=bytes([0xB0, 0x23, 0, 0, 0, 0]), level_idc=120),
         "hev1.A4.41.H120.B0.23"),
    ],
)  # fmt: skip
def test_h265_codec_strings_follow_iso_14496_15(sps: dict[str, object], codec: str) -> None:
    # The two strings of moq-rs's hang::catalog::video::h265 tests.
    assert H265Sps(**sps, width=1, height=1).codec == codec  # type: ignore[arg-type]


def test_h265_sps_truncated_anywhere_raises_malformed_or_parses_the_same() -> None:
    sps_nal = next(n for n in parameter_sets("h265_aac.ts") if (n[0] >> 1) & 0x3F == 33)
    whole = parse_sps_h265(sps_nal)
    raised = 0
    for end in range(len(sps_nal)):
        try:
            assert parse_sps_h265(sps_nal[:end]) == whole  # cut after the fields we read
        except Malformed:
            raised += 1
    assert raised >= 20  # everything up to the picture size is needed
    assert parse_sps_h265(sps_nal + b"\xff\x00") == whole


def test_h265_irap_pictures_are_keyframes() -> None:
    for nal_type, key in [(19, True), (20, True), (21, True), (16, True), (1, False), (0, False)]:
        frame = b"\x00\x00\x01" + bytes([nal_type << 1, 1]) + b"\xaa"
        head = scan_head(frame, 0, H265.nal_type, H265.is_slice)
        assert H265.is_keyframe(frame, head) is key, nal_type
