"""Expected media counts of a TS file, computed independently of `mux/` with PyAV (libavformat).

Tests compare what the importer produced against these numbers. The rules applied here are the
importer's specification, stated once: corrupt PES (continuity gaps, transport errors) are
dropped (`fflags=+discardcorrupt`), video frames before the first keyframe are dropped, a video
keyframe opens a group, and every audio frame is its own group.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaCounts:
    """What one elementary stream of a file holds, as libavformat/libavcodec report it.

    `frames` counts what the importer must emit (video: from the first keyframe on, in decode
    order); `packets` counts every demuxed access unit; `groups` is the group count the
    importer must produce (video: keyframes from the first one on; audio: one per frame).
    """

    pid: int
    kind: str
    codec: str
    packets: int
    frames: int
    keyframes: int
    groups: int
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    first_pts_90k: int | None


def expected_counts(path: str | Path) -> dict[str, MediaCounts]:
    """Return the counts of every audio and video stream of `path`, keyed by PID (`"0x100"`)."""
    out: dict[str, MediaCounts] = {}
    with av.open(str(path), options={"fflags": "+discardcorrupt"}) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        packets = {s.index: 0 for s in streams}
        frames = {s.index: 0 for s in streams}
        keyframes = {s.index: 0 for s in streams}
        seen_key = {s.index: False for s in streams}
        first_pts: dict[int, int | None] = {s.index: None for s in streams}
        for packet in container.demux(*streams):
            if packet.size == 0:
                continue
            index = packet.stream.index
            packets[index] += 1
            if packet.stream.type == "video":
                if packet.is_keyframe:
                    seen_key[index] = True
                    keyframes[index] += 1
                if seen_key[index]:
                    frames[index] += 1
            else:
                frames[index] += 1
            if first_pts[index] is None and packet.pts is not None:
                first_pts[index] = packet.pts
        for stream in streams:
            ctx = stream.codec_context
            is_video = isinstance(stream, av.VideoStream)
            vctx = ctx if isinstance(ctx, av.VideoCodecContext) else None
            actx = ctx if isinstance(ctx, av.AudioCodecContext) else None
            out[f"0x{stream.id:x}"] = MediaCounts(
                pid=stream.id,
                kind=stream.type,
                codec=ctx.name,
                packets=packets[stream.index],
                frames=frames[stream.index],
                keyframes=keyframes[stream.index],
                groups=keyframes[stream.index] if is_video else frames[stream.index],
                width=vctx.width if vctx is not None else None,
                height=vctx.height if vctx is not None else None,
                sample_rate=actx.sample_rate if actx is not None else None,
                channels=actx.channels if actx is not None else None,
                first_pts_90k=first_pts[stream.index],
            )
    return out


@dataclass(frozen=True, slots=True)
class EsPacket:
    """One access unit as libavformat demuxes it: its bytes, PTS (90 kHz) and key flag."""

    data: bytes
    pts_90k: int | None
    keyframe: bool


def es_packets(path: str | Path, pid: int) -> list[EsPacket]:
    """The demuxed access units of stream `pid` of `path` (Annex-B video, ADTS/raw audio)."""
    with av.open(str(path)) as container:
        (stream,) = [s for s in container.streams if s.id == pid]
        return [EsPacket(bytes(p), p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]


def ffprobe_streams(path: str | Path) -> dict[int, dict[str, object]]:
    """ffprobe's view of every stream of `path` (profile, level, ...), keyed by PID."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return {int(s["id"], 16): s for s in json.loads(out)["streams"]}
