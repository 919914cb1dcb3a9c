"""Import throughput into a metered broadcast vs ffmpeg's demuxer, on the same big file, for both
builds of the TS packet path (compiled `mux._fast`, and pure Python: `mux._impl.use`).

Generates (once, cached under fixtures/big/, gitignored) a ~200 MB 1080p30 H.264 + AAC stream at
~27 Mbit/s with the command of toolchain-notes section 2, then measures in the same run:
- ours: read the file in 3 MB chunks and `TsImporter.feed` them into a metered
  `BroadcastProducer` with a 256 MiB cache pool (the gateway's default budget), then `finish()`
  (in-process). The first run pays for fresh memory pages for the ~200 MB of cached frames;
  later runs reuse freed memory as a long-running gateway does once old groups expire.
  Wall and CPU seconds; the ratios use the median of the runs;
- ffmpeg: `ffmpeg -hide_banner -loglevel error -i big.ts -map 0 -c copy -f null -` (whole
  process, wall and CPU seconds from its rusage, median of several runs);
- `moqsrt probe big.ts --json` as a whole process (this checkout, both builds: the pure one with
  MOQSRT_PURE_PYTHON=1) against that same ffmpeg run, and the same process doing nothing but
  start up (`moqsrt probe --help`);
- live-sized imports: CPU per 1316-byte message of an 8.5 Mbit/s stream fed 1, 4, 16 and 64
  messages at a time (what the gateway does per SRT read).
The machine is shared, so the ratios are printed for CPU seconds (what other processes do not
move much) as well as wall time. Goals (issue 12): in-process import >= 2x ffmpeg's demux rate;
the probe, as a whole process, at least as fast as ffmpeg.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIG = ROOT / "fixtures" / "big" / "big.ts"
CHUNK = 188 * 16384  # ~3 MB reads, packet-aligned like SRT payloads
RUNS = 5
LIVE = ROOT / "fixtures" / "big" / "gw_8m.ts"
#: `moqsrt` from this checkout, whatever the venv's script points at.
MOQSRT = [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]
BUILDS = {"compiled": {}, "pure-python": {"MOQSRT_PURE_PYTHON": "1"}}


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


def import_once(path: Path) -> tuple[float, float, dict[str, int]]:
    """Import `path` into a metered broadcast; return (wall s, CPU s, ingress usage)."""
    from model import DEFAULT_BUDGET_BYTES, BroadcastProducer, CachePool, Usage
    from mux import TsImporter

    usage = Usage()
    broadcast = BroadcastProducer(pool=CachePool(DEFAULT_BUDGET_BYTES)).with_meter(usage)
    started, cpu = time.perf_counter(), time.process_time()
    importer = TsImporter(broadcast)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            importer.feed(chunk)
    importer.finish()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return elapsed, cpu, {"groups": usage.groups, "frames": usage.frames, "bytes": usage.bytes}


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run `argv` (output discarded, from the repository root); return (wall s, CPU s of the
    whole process tree, from the children's rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        argv, check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, **env} if env else None,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


def ffmpeg_once(path: Path) -> tuple[float, float]:
    """Run ffmpeg's demuxer over `path` (stream copy to the null muxer); return (wall, CPU) s."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    command += ["-map", "0", "-c", "copy", "-f", "null", "-"]
    return run_timed(command)


def live_us_per_message(path: Path, messages: int) -> float:
    """CPU microseconds per 1316-byte message importing `path` fed `messages` at a time."""
    from model import DEFAULT_BUDGET_BYTES, BroadcastProducer, CachePool, Usage
    from mux import TsImporter

    data = path.read_bytes()
    size = 1316 * messages
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    broadcast = BroadcastProducer(pool=CachePool(DEFAULT_BUDGET_BYTES)).with_meter(Usage())
    importer = TsImporter(broadcast)
    cpu = time.process_time()
    for part in parts:
        importer.feed(part)
    importer.finish()
    return (time.process_time() - cpu) / (len(data) / 1316) * 1e6


def main() -> None:
    """Print import, probe and ffmpeg throughput on the big file for both builds, their
    ratios against issue 12's goals, and the live-sized import cost."""
    sys.path.insert(0, str(ROOT))
    from mux import _impl

    path = big_file()
    size_mb = path.stat().st_size / 1e6
    path.read_bytes()  # warm the page cache for both contenders
    builds = ["compiled", "pure-python"] if _impl.compiled_available() else ["pure-python"]
    was = _impl.NAME == "compiled"
    ours: dict[str, list[tuple[float, float]]] = {b: [] for b in builds}
    probes: dict[str, list[tuple[float, float]]] = {b: [] for b in builds}
    startup: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    usage: dict[str, int] = {}
    try:
        for _ in range(RUNS):  # the contenders take turns
            for build in builds:
                _impl.use(compiled=build == "compiled")
                wall, cpu, usage = import_once(path)
                ours[build].append((wall, cpu))
                probe = [*MOQSRT, "probe", str(path), "--json"]
                probes[build].append(run_timed(probe, BUILDS[build]))
            theirs.append(ffmpeg_once(path))
            startup.append(run_timed([*MOQSRT, "probe", "--help"]))
    finally:
        _impl.use(compiled=was)

    def med(runs: list[tuple[float, float]], k: int) -> float:
        return statistics.median(r[k] for r in runs)

    ff_wall, ff_cpu = med(theirs, 0), med(theirs, 1)
    print(f"file: {path.name}, {size_mb:.1f} MB; ingress {usage}; {RUNS} runs each, medians")
    print(f"ffmpeg -c copy -f null (whole process): {ff_wall:.3f} s wall "
          f"({size_mb / ff_wall:.0f} MB/s), {ff_cpu:.3f} CPU s "
          f"({size_mb / ff_cpu:.0f} MB/CPU-s)")  # fmt: skip
    for build in builds:
        wall, cpu = med(ours[build], 0), med(ours[build], 1)
        first = ours[build][0][0]
        print(f"import, {build:<11} (TsImporter -> metered broadcast, in process): "
              f"{wall:.3f} s wall ({size_mb / wall:.0f} MB/s; first run {size_mb / first:.0f}), "
              f"{cpu:.3f} CPU s ({size_mb / cpu:.0f} MB/CPU-s)")  # fmt: skip
        print(f"  ratio import/ffmpeg rate: wall {ff_wall / wall:.2f}, CPU {ff_cpu / cpu:.2f} "
              f"(goal >= 2: {'met' if ff_cpu / cpu >= 2 else 'NOT met'} by CPU)")  # fmt: skip
    for build in builds:
        wall, cpu = med(probes[build], 0), med(probes[build], 1)
        print(f"moqsrt probe, {build:<11} (whole process): {wall:.3f} s wall, {cpu:.3f} CPU s; "
              f"ratio ffmpeg/probe: wall {ff_wall / wall:.2f}, CPU {ff_cpu / cpu:.2f} "
              f"(goal >= 1: {'met' if ff_cpu / cpu >= 1 else 'NOT met'} by CPU)")  # fmt: skip
    print(f"  of which start-up (moqsrt probe --help): {med(startup, 0):.3f} s wall, "
          f"{med(startup, 1):.3f} CPU s")  # fmt: skip

    if not LIVE.exists():
        print(f"live-sized imports: skipped ({LIVE.name} is made by bench_gateway)")
        return
    print(f"live-sized imports of {LIVE.name}, CPU us per 1316-byte message (best of 3):")
    try:
        for build in builds:
            _impl.use(compiled=build == "compiled")
            cells = [
                f"{n}/feed {min(live_us_per_message(LIVE, n) for _ in range(3)):.1f}"
                for n in (1, 4, 16, 64)
            ]
            print(f"  {build:<11} " + ", ".join(cells))
    finally:
        _impl.use(compiled=was)


if __name__ == "__main__":
    main()
