"""H.264 (AVC) bitstream facts the importer needs: NAL types, SPS fields, keyframe SEI.

`parse_sps` reads the profile, constraint flags, level and the cropped picture size from a
sequence parameter set; `has_recovery_point` finds the recovery-point SEI that marks an open-GOP
keyframe; `H264` bundles them for the generic access-unit framer in `mux.video`. `parse_avcc`
reads the avcC record a catalog `description` carries, for the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from mux.errors import MalformedBitstream
from mux.nal import BitReader, NalRef, read_nal_array, unescape


class NalType(IntEnum):
    """H.264 `nal_unit_type` values (ITU-T H.264 table 7-1) the importer looks at."""

    SLICE = 1
    SLICE_DPA = 2
    SLICE_DPB = 3
    SLICE_DPC = 4
    IDR = 5
    SEI = 6
    SPS = 7
    PPS = 8
    AUD = 9


_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
_SEI_RECOVERY_POINT = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class H264Sps:
    """What the catalog needs from an SPS: codec string fields and the cropped picture size."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    width: int
    height: int

    @property
    def codec(self) -> str:
        """The WebCodecs codec string with in-band parameter sets, e.g. `avc3.64001f`."""
        return f"avc3.{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


def nal_type(header: int) -> int:
    """Return the `nal_unit_type` of a NAL unit from its first header byte."""
    return header & 0x1F


def is_slice(kind: int) -> bool:
    """True for coded slice NAL units (types 1 to 5): the picture data."""
    return 1 <= kind <= 5


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_sps(nal: bytes) -> H264Sps:
    """Parse an SPS NAL unit (header byte included); `MalformedBitstream` if it is truncated.

    The size is the displayed size: coded macroblocks minus the frame cropping rectangle.
    """
    if len(nal) < 4 or nal_type(nal[0]) != NalType.SPS:
        raise MalformedBitstream("not an H.264 SPS", offset=0)
    r = BitReader(unescape(nal[1:]))
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise MalformedBitstream(f"chroma_format_idc {chroma_format_idc} out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            raise MalformedBitstream(f"num_ref_frames_in_pic_order_cnt_cycle {cycle} > 255")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise MalformedBitstream(f"pic_order_cnt_type {poc_type} out of range")
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if r.flag():  # frame_cropping_flag
        crop_left, crop_right, crop_top, crop_bottom = r.ue(), r.ue(), r.ue(), r.ue()
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    field_factor = 1 if frame_mbs_only else 2
    if chroma_array_type == 0:
        unit_x, unit_y = 1, field_factor
    else:
        sub_width = 1 if chroma_array_type == 3 else 2
        sub_height = 2 if chroma_array_type == 1 else 1
        unit_x, unit_y = sub_width, sub_height * field_factor
    width = width_mbs * 16 - unit_x * (crop_left + crop_right)
    height = height_units * 16 * field_factor - unit_y * (crop_top + crop_bottom)
    if width <= 0 or height <= 0:
        raise MalformedBitstream(f"SPS crops the picture to {width}x{height}")
    return H264Sps(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        width=width,
        height=height,
    )


def sei_payload_types(nal: bytes) -> list[int]:
    """Return the payload types of the SEI messages in an SEI NAL unit (header byte included).

    Stops at the RBSP trailing bits; `MalformedBitstream` if a message runs past the end.
    """
    rbsp = unescape(nal[1:])
    types: list[int] = []
    pos = 0
    size = len(rbsp)
    while pos < size and not (rbsp[pos] == 0x80 and pos == size - 1):
        payload_type = 0
        while pos < size and rbsp[pos] == 0xFF:
            payload_type += 255
            pos += 1
        if pos >= size:
            raise MalformedBitstream("SEI ends inside a payload type", offset=pos)
        payload_type += rbsp[pos]
        pos += 1
        payload_size = 0
        while pos < size and rbsp[pos] == 0xFF:
            payload_size += 255
            pos += 1
        if pos >= size:
            raise MalformedBitstream("SEI ends inside a payload size", offset=pos)
        payload_size += rbsp[pos]
        pos += 1 + payload_size
        if pos > size:
            raise MalformedBitstream("SEI payload runs past the NAL unit", offset=pos)
        types.append(payload_type)
    return types


def has_recovery_point(nal: bytes) -> bool:
    """True if an SEI NAL unit carries a recovery point message (an open-GOP entry point)."""
    try:
        return _SEI_RECOVERY_POINT in sei_payload_types(nal)
    except MalformedBitstream:
        return False


def parse_avcc(description: bytes) -> tuple[int, bytes]:
    """Return (NAL length size, SPS and PPS as Annex-B) from an avcC record (ISO/IEC 14496-15
    5.3.3.1); `MalformedBitstream` if it is not one."""
    try:
        if len(description) < 7 or description[0] != 1:
            raise MalformedBitstream("avcC: not a version 1 record", offset=0)
        length_size = (description[4] & 3) + 1
        parts: list[bytes] = []
        offset = 5
        for count_mask in (0x1F, 0xFF):
            count = description[offset] & count_mask
            offset += 1
            offset = read_nal_array(description, offset, count, parts, "avcC")
    except IndexError as exc:
        raise MalformedBitstream("avcC: truncated", offset=len(description)) from exc
    if length_size == 3:
        raise MalformedBitstream("avcC: 3-byte NAL lengths are not allowed", offset=4)
    return length_size, b"".join(parts)


class H264:
    """H.264 specifics for `mux.video.VideoFramer` (Annex-B in, avc3 out)."""

    name = "H.264"
    suffix = ".avc3"
    #: Parameter-set NAL types in the order they go in front of a keyframe.
    param_types: tuple[int, ...] = (NalType.SPS, NalType.PPS)
    aud_type: int = NalType.AUD

    @staticmethod
    def nal_type(header: int) -> int:
        """The NAL unit type from its first header byte."""
        return nal_type(header)

    @staticmethod
    def is_slice(kind: int) -> bool:
        """True for slice (picture data) NAL unit types."""
        return is_slice(kind)

    @staticmethod
    def is_keyframe(data: bytes, head: list[NalRef]) -> bool:
        """An IDR slice, or any picture announced by a recovery-point SEI."""
        last = head[-1]
        if last.end == -1 and last.nal_type == NalType.IDR:
            return True
        return any(
            ref.nal_type == NalType.SEI and has_recovery_point(data[ref.header : ref.end])
            for ref in head
        )

    @staticmethod
    def describe(params: dict[int, list[bytes]]) -> tuple[str, int, int]:
        """Codec string and size from the cached SPS; `MalformedBitstream` if it is bad."""
        sps = parse_sps(params[NalType.SPS][0])
        return sps.codec, sps.width, sps.height
