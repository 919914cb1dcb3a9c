"""`fixtures/make_fixtures.py` (`make fixtures`) regenerates fixtures that hold what the committed
ones hold: the same streams and codecs, frame and keyframe counts, timestamps, all decodable.

Never the same bytes: x264 and libopus pick SIMD code paths by CPU, so another machine writes
other (equally valid) bytes. Everything is counted here with PyAV (libavformat/libavcodec).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import pytest

from tests.unit.mux.support import FIXTURES

# Cheap to encode (~2 s in all); the larger ones are built the same way by the same code.
REGENERATED = ["aac_only.ts", "h264_only.ts", "h264_mp2.ts", "ac3.ts", "eac3.ts", "opus.ts"]
DECODER_OF = {"libx264": "h264", "libx265": "hevc", "libopus": "opus"}


@functools.cache
def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """What one elementary stream of a TS file holds, as PyAV demuxes and decodes it."""

    pid: int
    kind: str
    codec: str
    profile: str | None
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    packets: int
    keyframes: int
    first_is_keyframe: bool
    pts: tuple[int, ...]  # presentation order (sorted), 90 kHz
    decoded: int  # video pictures, or audio samples per channel
    errors: int


def _count(frames: list[Any]) -> int:
    return sum(f.samples if isinstance(f, av.AudioFrame) else 1 for f in frames)


def held(path: Path) -> dict[int, Held]:
    """Every audio and video stream of `path`, keyed by PID."""
    out: dict[int, Held] = {}
    with av.open(str(path)) as container:
        for stream in [s for s in container.streams if s.type in ("video", "audio")]:
            ctx: Any = stream.codec_context
            packets = keyframes = decoded = errors = 0
            first_key: bool | None = None
            pts: list[int] = []
            container.seek(0)
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                keyframes += packet.is_keyframe
                first_key = packet.is_keyframe if first_key is None else first_key
                if packet.pts is not None:
                    pts.append(packet.pts)
                try:
                    decoded += _count(packet.decode())
                except av.error.FFmpegError:
                    errors += 1
            try:
                decoded += _count(ctx.decode(None))  # the frames a decoder holds back
            except av.error.FFmpegError:
                errors += 1
            out[stream.id] = Held(
                pid=stream.id,
                kind=stream.type,
                codec=ctx.name,
                profile=ctx.profile,
                width=ctx.width if stream.type == "video" else None,
                height=ctx.height if stream.type == "video" else None,
                sample_rate=ctx.sample_rate if stream.type == "audio" else None,
                channels=ctx.channels if stream.type == "audio" else None,
                packets=packets,
                keyframes=keyframes,
                first_is_keyframe=bool(first_key),
                pts=tuple(sorted(pts)),
                decoded=decoded,
                errors=errors,
            )
    return out


@functools.cache
def regenerated(name: str, out_dir: Path) -> Path:
    path = out_dir / name
    path.write_bytes(load_script().fixtures()[name]())
    return path


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("regenerated")


@pytest.mark.parametrize("name", REGENERATED)
def test_a_regenerated_fixture_holds_what_the_committed_one_holds(name: str, out_dir: Path) -> None:
    committed = held(FIXTURES / name)
    assert committed  # something to compare
    assert held(regenerated(name, out_dir)) == committed


@pytest.mark.parametrize("name", REGENERATED)
def test_a_fixture_holds_what_the_script_encodes(name: str, out_dir: Path) -> None:
    """Checked on the committed and the regenerated file alike, against the script's recipe."""
    recipe = load_script().encodings()[name]
    for path in (FIXTURES / name, regenerated(name, out_dir)):
        streams = held(path)
        kinds = sorted(h.kind for h in streams.values())
        assert kinds == sorted(
            k for k, s in (("video", recipe.video), ("audio", recipe.audio)) if s is not None
        )
        for stream in streams.values():
            assert stream.errors == 0, path
            if stream.kind == "video":
                check_video(stream, recipe.video, recipe.seconds)
            else:
                check_audio(stream, recipe.audio, recipe.seconds)


def check_video(stream: Held, video: Any, seconds: float) -> None:
    frames = round(seconds * video.fps)
    assert stream.codec == DECODER_OF.get(video.codec, video.codec)
    assert (stream.width, stream.height) == (video.width, video.height)
    assert stream.packets == stream.decoded == frames
    assert stream.first_is_keyframe
    assert stream.keyframes == math.ceil(frames / video.gop)  # a fixed GOP, no scene cuts
    step = 90_000 // video.fps
    assert stream.pts == tuple(range(stream.pts[0], stream.pts[0] + frames * step, step))


def check_audio(stream: Held, audio: Any, seconds: float) -> None:
    samples = round(seconds * audio.rate)
    assert stream.codec == DECODER_OF.get(audio.codec, audio.codec)
    assert stream.sample_rate == audio.rate
    assert stream.channels == len(av.AudioLayout(audio.layout).channels)
    # Every input sample is in some frame; an encoder may add one frame of priming/flush.
    fed = math.ceil(samples / audio.frame_samples)
    assert fed <= stream.packets <= fed + 1
    assert stream.decoded >= samples
    step = audio.frame_samples * 90_000 / audio.rate
    gaps = [b - a for a, b in zip(stream.pts, stream.pts[1:], strict=False)]
    assert all(abs(g - step) <= 1 for g in gaps), sorted(set(gaps))


def test_the_script_knows_every_committed_fixture() -> None:
    assert set(load_script().fixtures()) == {p.name for p in FIXTURES.glob("*.ts")}
