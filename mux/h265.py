"""H.265 (HEVC) bitstream facts the importer needs: NAL types, SPS fields, IRAP keyframes.

`parse_sps` reads profile/tier/level (for the `hev1.` codec string of ISO/IEC 14496-15 annex E)
and the picture size after the conformance window; `H265` bundles them for `mux.video`.
`parse_hvcc` reads the hvcC record a catalog `description` carries, for the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from mux.errors import MalformedBitstream
from mux.nal import BitReader, NalRef, read_nal_array, unescape


class NalType(IntEnum):
    """H.265 `nal_unit_type` values (ITU-T H.265 table 7-1) the importer looks at."""

    BLA_W_LP = 16
    CRA = 21
    RSV_IRAP_23 = 23
    VPS = 32
    SPS = 33
    PPS = 34
    AUD = 35
    SEI_PREFIX = 39


@dataclass(frozen=True, slots=True, kw_only=True)
class H265Sps:
    """What the catalog needs from an SPS: profile/tier/level and the cropped picture size.

    `compatibility_flags` is the 32-bit general_profile_compatibility_flags as read (flag 0 in
    the most significant bit); `constraint_bytes` are the 48 bits that follow it.
    """

    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int
    constraint_bytes: bytes
    level_idc: int
    width: int
    height: int

    @property
    def codec(self) -> str:
        """The WebCodecs codec string with in-band parameter sets, e.g. `hev1.1.6.L93.B0`."""
        space = "" if self.profile_space == 0 else chr(ord("A") + self.profile_space - 1)
        reversed_flags = int(f"{self.compatibility_flags:032b}"[::-1], 2)
        constraints = self.constraint_bytes.rstrip(b"\x00")
        parts = [
            "hev1",
            f"{space}{self.profile_idc}",
            f"{reversed_flags:X}",
            f"{'H' if self.tier else 'L'}{self.level_idc}",
            *(f"{b:X}" for b in constraints),
        ]
        return ".".join(parts)


def nal_type(header: int) -> int:
    """Return the `nal_unit_type` of a NAL unit from its first header byte."""
    return (header >> 1) & 0x3F


def is_slice(kind: int) -> bool:
    """True for VCL NAL units (types 0 to 31): coded slice segments."""
    return kind < 32


def parse_sps(nal: bytes) -> H265Sps:
    """Parse an SPS NAL unit (2-byte header included); `MalformedBitstream` if truncated."""
    if len(nal) < 16 or nal_type(nal[0]) != NalType.SPS:
        raise MalformedBitstream("not an H.265 SPS", offset=0)
    r = BitReader(unescape(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile_space = r.u(2)
    tier = r.u(1)
    profile_idc = r.u(5)
    compatibility_flags = r.u(32)
    constraint_bytes = r.u(48).to_bytes(6, "big")
    level_idc = r.u(8)
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise MalformedBitstream(f"chroma_format_idc {chroma_format_idc} out of range")
    if chroma_format_idc == 3 and r.flag():  # separate_colour_plane_flag
        chroma_format_idc = 0
    width = r.ue()
    height = r.ue()
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_width = 2 if chroma_format_idc in (1, 2) else 1
        sub_height = 2 if chroma_format_idc == 1 else 1
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
    if width <= 0 or height <= 0:
        raise MalformedBitstream(f"SPS gives a {width}x{height} picture")
    return H265Sps(
        profile_space=profile_space,
        tier=tier,
        profile_idc=profile_idc,
        compatibility_flags=compatibility_flags,
        constraint_bytes=constraint_bytes,
        level_idc=level_idc,
        width=width,
        height=height,
    )


def parse_hvcc(description: bytes) -> tuple[int, bytes]:
    """Return (NAL length size, VPS/SPS/PPS as Annex-B) from an hvcC record (ISO/IEC 14496-15
    8.3.3.1); `MalformedBitstream` if it is not one."""
    try:
        if len(description) < 23 or description[0] != 1:
            raise MalformedBitstream("hvcC: not a version 1 record", offset=0)
        length_size = (description[21] & 3) + 1
        parts: list[bytes] = []
        offset = 23
        for _ in range(description[22]):
            offset += 1  # array_completeness, reserved, NAL_unit_type
            count = int.from_bytes(description[offset : offset + 2], "big")
            offset += 2
            offset = read_nal_array(description, offset, count, parts, "hvcC")
    except IndexError as exc:
        raise MalformedBitstream("hvcC: truncated", offset=len(description)) from exc
    if length_size == 3:
        raise MalformedBitstream("hvcC: 3-byte NAL lengths are not allowed", offset=21)
    return length_size, b"".join(parts)


class H265:
    """H.265 specifics for `mux.video.VideoFramer` (Annex-B in, hev1 out)."""

    name = "H.265"
    suffix = ".hev1"
    #: Parameter-set NAL types in the order they go in front of a keyframe.
    param_types: tuple[int, ...] = (NalType.VPS, NalType.SPS, NalType.PPS)
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
        """An IRAP picture: IDR, BLA or CRA (NAL types 16 to 23)."""
        last = head[-1]
        return last.end == -1 and NalType.BLA_W_LP <= last.nal_type <= NalType.RSV_IRAP_23

    @staticmethod
    def describe(params: dict[int, list[bytes]]) -> tuple[str, int, int]:
        """Codec string and size from the cached SPS; `MalformedBitstream` if it is bad."""
        sps = parse_sps(params[NalType.SPS][0])
        return sps.codec, sps.width, sps.height
