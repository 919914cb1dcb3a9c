"""Turns H.264/H.265 access units into self-contained legacy frames.

One `VideoFramer` per video stream: `push` takes an access unit (already behind its legacy
timestamp prefix), caches the parameter sets it carries, decides whether it is a keyframe, and
puts the cached parameter sets in front of every keyframe that lacks them, so a viewer can start
at any group. `config` is the catalog entry those parameter sets describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mux.catalog import VideoConfig
from mux.errors import MalformedBitstream
from mux.nal import START_CODE4, NalRef, scan_head

#: Most bytes of parameter sets one access unit may carry (real ones take a few hundred).
MAX_PARAM_BYTES = 64 * 1024


class VideoCodec(Protocol):
    """The codec specifics `VideoFramer` needs (`mux.h264.H264`, `mux.h265.H265`)."""

    name: str
    suffix: str
    param_types: tuple[int, ...]
    aud_type: int

    @staticmethod
    def nal_type(header: int) -> int: ...

    @staticmethod
    def is_slice(kind: int) -> bool: ...

    @staticmethod
    def is_keyframe(data: bytes, head: list[NalRef]) -> bool: ...

    @staticmethod
    def describe(params: dict[int, list[bytes]]) -> tuple[str, int, int]: ...


@dataclass(frozen=True, slots=True)
class VideoUnit:
    """One framed access unit: the legacy `frame` bytes and whether it opens a group."""

    frame: bytes
    keyframe: bool


class VideoFramer:
    """Per-stream access-unit state: the parameter-set cache and the current config.

    `config` is None until a complete set of parameter sets has been seen and parsed;
    `config_changed` is set by `push` when it changes (the caller clears it).
    """

    def __init__(self, codec: VideoCodec) -> None:
        self.codec = codec
        self.params: dict[int, list[bytes]] = {}
        self.config: VideoConfig | None = None
        self.config_changed = False

    def push(self, frame: bytes, begin: int) -> VideoUnit:
        """Frame one access unit found at `frame[begin:]` (before it: the timestamp prefix).

        A keyframe is reported only when the parameter sets it needs are known; the returned
        frame then carries them. Raises `MalformedBitstream` when the unit has no NAL unit, when
        its parameter sets take over `MAX_PARAM_BYTES` (nothing is cached), or when new
        parameter sets do not parse (the cache keeps them; `config` stays as it was).
        """
        codec = self.codec
        head = scan_head(frame, begin, codec.nal_type, codec.is_slice)
        if not head:
            raise MalformedBitstream("access unit has no start code", offset=0)
        found: dict[int, list[bytes]] = {}
        for ref in head:
            if ref.nal_type in codec.param_types and ref.end != -1:
                found.setdefault(ref.nal_type, []).append(frame[ref.header : ref.end])
        if found:
            if sum(len(nal) for nals in found.values() for nal in nals) > MAX_PARAM_BYTES:
                # Cached for the stream's lifetime: a peer must not make us keep a huge one.
                raise MalformedBitstream(
                    f"parameter sets of over {MAX_PARAM_BYTES} bytes in one access unit", offset=0
                )
            changed = False
            for kind, nals in found.items():
                if self.params.get(kind) != nals:
                    self.params[kind] = nals
                    changed = True
            if changed or self.config is None:
                self._update_config()
        keyframe = codec.is_keyframe(frame, head)
        if not keyframe:
            return VideoUnit(frame, False)
        missing = [t for t in codec.param_types if t not in found]
        if not missing:
            return VideoUnit(frame, self.config is not None)
        if self.config is None or any(t not in self.params for t in missing):
            # A keyframe nobody can decode: treat it as a delta until parameter sets arrive.
            return VideoUnit(frame, False)
        at = (
            head[1].start if head[0].nal_type == codec.aud_type and len(head) > 1 else head[0].start
        )
        inserted = b"".join(START_CODE4 + nal for t in missing for nal in self.params[t])
        return VideoUnit(b"".join((frame[:at], inserted, frame[at:])), True)

    def _update_config(self) -> None:
        if any(t not in self.params for t in self.codec.param_types):
            return
        codec_string, width, height = self.codec.describe(self.params)
        config = VideoConfig(codec=codec_string, coded_width=width, coded_height=height)
        if config != self.config:
            self.config = config
            self.config_changed = True
