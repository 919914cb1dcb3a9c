"""TS export throughput vs ffmpeg's remuxer, on the same big file, plus the packetizer profile.

Uses the ~200 MB 1080p30 H.264 + AAC stream at ~27 Mbit/s that bench_import caches under
fixtures/big/ (`bench_import.big_file` makes it once), and measures in the same run (run with
`make bench BENCH=bench_export` or `python -m tests.bench.bench_export` from the repository):
- ours: every frame (PyAV demux, done beforehand, as hang legacy frames) pushed through
  `TsExporter` into 1316-byte `TsChunk`s; MB/s of TS output, in-process, median of 5 runs;
- ffmpeg: `ffmpeg -i big.ts -map 0 -c copy -f mpegts -y /dev/null` (demux + mux, whole
  process, median of 5 runs), MB/s of its input;
- ours end to end, the like-for-like peer of that remux: `TsImporter` into a broadcast, every
  group read back, `TsExporter` (in-process, median of 3 runs), MB/s of input;
- the packetizer alone (one PES of a median video frame into 188-byte packets): a per-packet
  loop with bytes slicing and join (the floor), our plain-Python path, our numpy path.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.bench_import import big_file

ROOT = Path(__file__).resolve().parents[2]
RUNS = 5

Frame = tuple[str, bytes, bool]


def load_frames(path: Path) -> tuple[list[Frame], object]:
    """Demux `path` with PyAV into (track, legacy frame, keyframe) in file order + a catalog."""
    import av

    from mux.catalog import AudioConfig, Catalog, VideoConfig
    from mux.container import encode_frame

    frames: list[Frame] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        catalog = Catalog(
            video={"0.avc3": VideoConfig(codec="avc3.42c028", coded_width=video.width)},
            audio={
                "1.aac": AudioConfig(
                    codec="mp4a.40.2", sample_rate=audio.rate, channels=audio.channels
                )
            },
        )
        for packet in container.demux():
            if packet.pts is None or packet.size == 0 or packet.time_base is None:
                continue
            ts_us = int(packet.pts * packet.time_base * 1_000_000)
            data = bytes(packet)
            if packet.stream.type == "audio":
                header = 7 if data[1] & 1 else 9  # strip ADTS (protection_absent)
                frames.append(("1.aac", encode_frame(ts_us, data[header:]), True))
            else:
                frames.append(("0.avc3", encode_frame(ts_us, data), bool(packet.is_keyframe)))
    return frames, catalog


def export_once(frames: list[Frame], catalog: object) -> tuple[float, int, int]:
    """Export every frame; return (seconds, TS bytes, chunks)."""
    from mux.catalog import Catalog
    from mux.export import TsExporter

    assert isinstance(catalog, Catalog)
    exporter = TsExporter()
    exporter.set_catalog(catalog)
    nbytes = nchunks = 0
    push = exporter.push
    started = time.perf_counter()
    for track, frame, keyframe in frames:
        chunks = push(track, frame, keyframe=keyframe)
        nchunks += len(chunks)
        for chunk in chunks:
            nbytes += len(chunk.data)
    elapsed = time.perf_counter() - started
    return elapsed, nbytes, nchunks


async def _read_all(consumer: object) -> tuple[object, list[Frame]]:
    """Every frame of a finished broadcast, tracks merged by running-max timestamp."""
    from model import BroadcastConsumer
    from mux.catalog import CATALOG_TRACK, Catalog
    from mux.container import decode_varint

    assert isinstance(consumer, BroadcastConsumer)
    catalog_track = consumer.subscribe_track(CATALOG_TRACK)
    assert catalog_track.latest_sequence is not None
    group = await catalog_track.fetch_group(catalog_track.latest_sequence)
    catalog = Catalog.from_json((await group.read_all())[0])
    keyed: list[tuple[int, int, int, str, bytes, bool]] = []
    for order, name in enumerate(catalog.track_names()):
        track = consumer.subscribe_track(name)
        latest = track.latest_sequence
        key = -1
        for sequence in range(0 if latest is None else latest + 1):
            frames = await (await track.fetch_group(sequence)).read_all()
            for i, frame in enumerate(frames):
                key = max(key, decode_varint(frame)[0])
                keyed.append((key, order, len(keyed), name, frame, i == 0))
    keyed.sort(key=lambda item: item[:3])
    return catalog, [(name, frame, first) for _, _, _, name, frame, first in keyed]


def remux_once(path: Path) -> tuple[float, int]:
    """Ours end to end: TsImporter into a broadcast, read it back, TsExporter; (s, TS bytes)."""
    import asyncio

    from model import BroadcastProducer, CachePool
    from mux import TsImporter

    data = path.read_bytes()
    step = 188 * 16384
    started = time.perf_counter()
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast)
    for offset in range(0, len(data), step):
        importer.feed(data[offset : offset + step])
    importer.finish()
    catalog, frames = asyncio.run(_read_all(broadcast.consume()))
    elapsed_import = time.perf_counter() - started
    elapsed_export, nbytes, _ = export_once(frames, catalog)
    return elapsed_import + elapsed_export, nbytes


def ffmpeg_once(path: Path) -> float:
    """Remux `path` to MPEG-TS with ffmpeg (stream copy to /dev/null); return seconds."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    command += ["-map", "0", "-c", "copy", "-f", "mpegts", "-y", "/dev/null"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def _naive_packetize(pid: int, prefix: bytes, body: bytes) -> bytes:
    """The floor: one loop iteration per packet, bytes slicing, one join (stuffing faked)."""
    data = prefix + body
    parts = []
    cc = 0
    for offset in range(0, len(data), 184):
        piece = data[offset : offset + 184]
        if len(piece) < 184:
            piece = b"\xff" * (184 - len(piece)) + piece
        parts.append(bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | cc)))
        parts.append(piece)
        cc = (cc + 1) & 15
    return b"".join(parts)


def packetizer_profile(body: bytes) -> list[tuple[str, float]]:
    """Microseconds per PES of `body` for the naive loop, our pure-Python loop and numpy
    paths, and the compiled one (when built)."""
    import mux.ts_mux as ts_mux
    from mux import _impl

    prefix = bytes(25)
    writer = ts_mux.PidWriter(0x100)

    def ours() -> None:
        writer.write_pes(bytearray(), prefix, body, random_access=True)

    def timed(fn: object, reps: int = 200) -> float:
        assert callable(fn)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(reps):
                fn()
            best = min(best, (time.perf_counter() - started) / reps)
        return best * 1e6

    results = [
        ("per-packet loop + join (floor)", timed(lambda: _naive_packetize(256, prefix, body)))
    ]
    was = _impl.NAME == "compiled"
    saved = ts_mux._NUMPY_MIN_PACKETS
    _impl.use(compiled=False)
    ts_mux._NUMPY_MIN_PACKETS = 1 << 30
    try:
        results.append(("ours, plain Python path", timed(ours)))
        ts_mux._NUMPY_MIN_PACKETS = saved
        results.append(("ours, numpy path", timed(ours)))
        if _impl.compiled_available():
            _impl.use(compiled=True)
            results.append(("ours, compiled (mux._fast)", timed(ours)))
    finally:
        ts_mux._NUMPY_MIN_PACKETS = saved
        _impl.use(compiled=was)
    return results


def main() -> None:
    """Print export and ffmpeg remux throughput on the big file, their ratio, the profile."""
    sys.path.insert(0, str(ROOT))
    path = big_file()
    size_mb = path.stat().st_size / 1e6
    started = time.perf_counter()
    frames, catalog = load_frames(path)
    print(
        f"input {path.name}: {size_mb:.1f} MB, {len(frames)} frames "
        f"(demuxed with PyAV in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )

    from mux import _impl

    builds = ["compiled", "pure-python"] if _impl.compiled_available() else ["pure-python"]
    was = _impl.NAME == "compiled"
    ours: dict[str, list[float]] = {b: [] for b in builds}
    remux: dict[str, list[float]] = {b: [] for b in builds}
    out_mb = remux_mb = 0.0
    chunks = 0
    ffmpeg: list[float] = []
    try:
        for run in range(RUNS):  # the contenders take turns
            for build in builds:
                _impl.use(compiled=build == "compiled")
                elapsed, nbytes, chunks = export_once(frames, catalog)
                out_mb = nbytes / 1e6
                ours[build].append(elapsed)
                if run < 3:
                    elapsed, nbytes = remux_once(path)
                    remux[build].append(elapsed)
                    remux_mb = nbytes / 1e6
            ffmpeg.append(ffmpeg_once(path))
    finally:
        _impl.use(compiled=was)
    ffmpeg_s = statistics.median(ffmpeg)
    ffmpeg_rate = size_mb / ffmpeg_s
    print(f"ffmpeg remux:   {size_mb:.1f} MB in {ffmpeg_s:.3f} s median (whole process)")
    print(f"                {ffmpeg_rate:.0f} MB/s")
    for build in builds:
        ours_s = statistics.median(ours[build])
        ours_rate = out_mb / ours_s
        print(f"export ({build}): {out_mb:.1f} MB of TS in {chunks} chunks, {ours_s:.3f} s "
              f"median, {ours_rate:.0f} MB/s, ratio ours/ffmpeg: "
              f"{ours_rate / ffmpeg_rate:.2f}")  # fmt: skip
    for build in builds:
        remux_s = statistics.median(remux[build])
        remux_rate = size_mb / remux_s
        print(
            f"remux ({build}, import -> model -> export, in-process): {size_mb:.1f} MB in "
            f"{remux_s:.3f} s median, {remux_rate:.0f} MB/s ({remux_mb:.1f} MB of TS out), "
            f"ratio to ffmpeg {remux_rate / ffmpeg_rate:.2f}"
        )

    video = sorted((f for t, f, _ in frames if t == "0.avc3"), key=len)
    body = video[len(video) // 2]
    print(f"packetizer, one PES of a median video frame ({len(body)} bytes):")
    for name, us in packetizer_profile(body):
        print(f"  {name:32} {us:8.1f} us  {len(body) / us:8.0f} MB/s")


if __name__ == "__main__":
    main()
