"""The elementary-stream framing of one exported frame: its PES header and codec header.

`frame_parts(plan, ...)` turns a frame's codec payload into what `mux.ts_mux.PidWriter.write_pes`
packetizes: video as Annex-B (length-prefixed NAL units rewritten, parameter sets in front of
keyframes, an access unit delimiter first), AAC behind a 7-byte ADTS header, Opus behind its
MPEG-TS control header, other audio as is. One call per frame, no state.
"""

from __future__ import annotations

from mux.aac import adts_header
from mux.export_plan import Codec, TrackPlan
from mux.nal import length_prefixed_to_annexb
from mux.ts_mux import BytesLike, pes_header

_H264_AUD = b"\x00\x00\x00\x01\x09\xf0"
_H265_AUD = b"\x00\x00\x00\x01\x46\x01\x50"


def frame_parts(
    plan: TrackPlan, pts: int, dts: int, payload: BytesLike, keyframe: bool
) -> tuple[bytes, BytesLike]:
    """Return (PES header + small codec header, body) for one frame of `plan`'s track;
    timestamps in 90 kHz ticks (`dts` is written for video only). `Malformed` if the payload
    cannot be framed (a NAL length past its end, an AAC frame too long for ADTS)."""
    codec = plan.codec
    if codec is Codec.H264 or codec is Codec.H265:
        h264 = codec is Codec.H264
        body: BytesLike = payload
        if plan.nal_length_size:
            body = length_prefixed_to_annexb(payload, plan.nal_length_size)
            if keyframe:
                body = plan.parameter_sets + body
        aud = b""
        if not _starts_with_aud(body, h264=h264):
            aud = _H264_AUD if h264 else _H265_AUD
        header = pes_header(plan.stream_id, pts_90k=pts, dts_90k=dts, payload_bytes=None)
        return header + aud, body
    size = len(payload)
    if codec is Codec.AAC:
        adts = adts_header(plan.adts_fields, size)
        return pes_header(plan.stream_id, pts_90k=pts, payload_bytes=7 + size) + adts, payload
    if codec is Codec.OPUS:
        control = bytearray(b"\x7f\xe0")
        remaining = size
        while remaining >= 255:
            control.append(255)
            remaining -= 255
        control.append(remaining)
        header = pes_header(plan.stream_id, pts_90k=pts, payload_bytes=len(control) + size)
        return header + control, payload
    return pes_header(plan.stream_id, pts_90k=pts, payload_bytes=size), payload


def _starts_with_aud(data: BytesLike, *, h264: bool) -> bool:
    if len(data) < 5:
        return False
    if data[0] != 0 or data[1] != 0:
        return False
    if data[2] == 1:
        nal = data[3]
    elif data[2] == 0 and data[3] == 1:
        nal = data[4]
    else:
        return False
    return (nal & 0x1F) == 9 if h264 else ((nal >> 1) & 0x3F) == 35
