"""Import throughput into a metered broadcast vs ffmpeg's demuxer, on the same big file.

Generates (once, cached under fixtures/big/, gitignored) a ~200 MB 1080p30 H.264 + AAC stream at
~27 Mbit/s with the command of toolchain-notes section 2, then measures in the same run:
- ours: read the file in 3 MB chunks and `TsImporter.feed` them into a metered
  `BroadcastProducer` with a 256 MiB cache pool (the gateway's default budget), then `finish()`
  (in-process wall time). The first run pays for fresh memory pages for the ~200 MB of cached
  frames; later runs reuse freed memory as a long-running gateway does once old groups expire.
  The ratio uses the median of the runs; the first run is printed too;
- ffmpeg: `ffmpeg -hide_banner -loglevel error -i big.ts -map 0 -c copy -f null -` (whole
  process wall time, median of several runs).
Prints MB/s for both and the ratio ours/ffmpeg (goal: >= 1.0).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIG = ROOT / "fixtures" / "big" / "big.ts"
CHUNK = 188 * 16384  # ~3 MB reads, packet-aligned like SRT payloads
RUNS = 5


def make_test_stream(
    path: Path, *, size: str, seconds: int, video_bps: str, timeout_s: float = 300
) -> Path:
    """Generate `path` once (kept until deleted): a `seconds`-long H.264 + AAC MPEG-TS of
    testsrc2 at `size` with noise (so it does not compress away), GOP 2 s at 30 fps,
    constant `video_bps` video (ffmpeg's rate syntax, e.g. "8M") and 128 kbit/s stereo AAC."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.ts")
        print(f"generating {path.relative_to(ROOT)} (once) ...", flush=True)
        argv = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
            "-t", str(seconds), "-map", "0:v", "-map", "1:a", "-vf", "noise=alls=12:allf=t",
            "-c:v", "libx264", "-profile:v", "high", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
            "-b:v", video_bps, "-maxrate", video_bps, "-bufsize", video_bps,
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "mpegts", str(partial),
        ]  # fmt: skip
        subprocess.run(argv, check=True, timeout=timeout_s)
        partial.rename(path)
    return path


def big_file() -> Path:
    """Return the cached big TS file (1080p30, 60 s, ~27 Mbit/s), generating it first if
    needed (about 20 s)."""
    return make_test_stream(BIG, size="1920x1080", seconds=60, video_bps="26M")


def import_once(path: Path) -> tuple[float, dict[str, int]]:
    """Import `path` into a metered broadcast; return (seconds, ingress usage)."""
    from model import DEFAULT_BUDGET_BYTES, BroadcastProducer, CachePool, Usage
    from mux import TsImporter

    usage = Usage()
    broadcast = BroadcastProducer(pool=CachePool(DEFAULT_BUDGET_BYTES)).with_meter(usage)
    started = time.perf_counter()
    importer = TsImporter(broadcast)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            importer.feed(chunk)
    importer.finish()
    elapsed = time.perf_counter() - started
    return elapsed, {"groups": usage.groups, "frames": usage.frames, "bytes": usage.bytes}


def ffmpeg_once(path: Path) -> float:
    """Run ffmpeg's demuxer over `path` (stream copy to the null muxer); return seconds."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    command += ["-map", "0", "-c", "copy", "-f", "null", "-"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def main() -> None:
    """Print import and ffmpeg throughput on the big file and their ratio."""
    sys.path.insert(0, str(ROOT))
    path = big_file()
    size_mb = path.stat().st_size / 1e6
    path.read_bytes()  # warm the page cache for both contenders
    ours: list[float] = []
    usage: dict[str, int] = {}
    theirs: list[float] = []
    for _ in range(RUNS):
        seconds, usage = import_once(path)
        ours.append(seconds)
        theirs.append(ffmpeg_once(path))
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"file: {path.name}, {size_mb:.1f} MB; ingress {usage}")
    print(
        f"import, first run (fresh memory):         {ours[0]:.3f} s, {size_mb / ours[0]:.0f} MB/s"
    )
    print(f"import (TsImporter -> metered broadcast): {ours_s:.3f} s, {size_mb / ours_s:.0f} MB/s")
    print(
        f"ffmpeg -c copy -f null:                   {theirs_s:.3f} s, {size_mb / theirs_s:.0f} MB/s"
    )
    print(f"ratio import/ffmpeg: {theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
