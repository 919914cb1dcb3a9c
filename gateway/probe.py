"""`moqsrt probe FILE|-`: import an MPEG-TS file (or stdin) and report what it contains.

It runs the same importer the SRT ingest uses, into a metered broadcast, and prints the hang
catalog, per media track the frames, groups and payload bytes written, the problems found in the
stream (continuity gaps, damaged packets, sync losses, unsupported streams) and the time taken.
`--json` prints `{"catalog", "tracks", "problems", "seconds", ...}` for machines. A live source
is read for `--seconds`: `srt://host:port?streamid=...` (an `m=request` pull, probed like a file)
or `moqt://` / `https://` (MoQ, `gateway.moq.probe_live`, `--fingerprint` to pin). Exit status:
0 when the source was read (whatever its problems), 2 when it cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import time
from typing import IO, Any
from urllib.parse import unquote

from gateway.logs import configure_logging
from model import BroadcastProducer, CachePool, Usage
from mux import Problem, TsImporter

READ_BYTES = 1 << 20
"""How much of the input one read asks for (bytes)."""
_PROGRESS_EVERY_S = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `probe`'s arguments on its subcommand parser."""
    parser.add_argument(
        "file",
        help="MPEG-TS file to import, - to read standard input, or a live MoQ URL "
        "(moqt://host:port/path, https://host:port/path)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="how long to read a live source (default 5)"
    )
    parser.add_argument("--fingerprint", help="pin a MoQ server's certificate by its SHA-256 (hex)")


def _problem_dict(problem: Problem) -> dict[str, Any]:
    fields = {k: getattr(problem, k) for k in problem.__dataclass_fields__}
    return {"kind": problem.kind, "message": problem.message, **fields}


class _Progress:
    """A one-line progress meter on stderr, only when stderr is a terminal."""

    def __init__(self, stream: IO[str], total_bytes: int | None) -> None:
        self._stream = stream
        self._total = total_bytes
        self._enabled = stream.isatty()
        self._last = 0.0
        self._shown = False

    def update(self, done_bytes: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        done_mb = done_bytes / 1e6
        if self._total:
            percent = done_bytes * 100 // self._total
            line = f"probe: {done_mb:.1f} of {self._total / 1e6:.1f} MB ({percent}%)"
        else:
            line = f"probe: {done_mb:.1f} MB"
        self._stream.write(f"\r{line}\x1b[K")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def probe_stream(source: IO[bytes], total_bytes: int | None = None) -> dict[str, Any]:
    """Import everything `source` yields; return the report `--json` prints."""
    usage = Usage()
    broadcast = BroadcastProducer(pool=CachePool(None)).with_meter(usage)
    importer = TsImporter(broadcast)
    progress = _Progress(sys.stderr, total_bytes)
    started = time.perf_counter()
    done = 0
    try:
        while chunk := source.read(READ_BYTES):
            importer.feed(chunk)
            done += len(chunk)
            progress.update(done)
        importer.finish()
    finally:
        progress.clear()
    seconds = time.perf_counter() - started
    catalog = importer.catalog
    named = set(catalog.track_names()) if catalog is not None else set()
    tracks = {
        name: {"frames": c.frames, "groups": c.groups, "bytes": c.bytes, "pid": c.pid}
        for name, c in importer.tracks.items()
        if name in named
    }
    stats = importer.stats
    return {
        "catalog": catalog.to_dict() if catalog is not None else None,
        "tracks": tracks,
        "problems": [_problem_dict(p) for p in importer.problems],
        "problem_counts": dict(importer.problem_counts),
        "seconds": round(seconds, 6),
        "input_bytes": stats.bytes,
        "packets": stats.packets,
        "ingress": {"groups": usage.groups, "frames": usage.frames, "bytes": usage.bytes},
    }


def _format_track(name: str, config: dict[str, Any], kind: str) -> str:
    if kind == "video":
        size = f"{config.get('codedWidth', '?')}x{config.get('codedHeight', '?')}"
        return f"  {name:<10} video  {config['codec']:<18} {size}"
    extra = f", config {config['description']}" if "description" in config else ""
    return (
        f"  {name:<10} audio  {config['codec']:<18} {config['sampleRate']} Hz, "
        f"{config['numberOfChannels']} ch{extra}"
    )


def format_report(label: str, report: dict[str, Any]) -> str:
    """Render a `probe_stream` report for people."""
    lines = []
    seconds = report["seconds"]
    size_mb = report["input_bytes"] / 1e6
    rate = f", {size_mb / seconds:.0f} MB/s" if seconds > 0 else ""
    lines.append(f"{label}: {size_mb:.1f} MB, {report['packets']} packets in {seconds:.2f} s{rate}")
    catalog = report["catalog"]
    if not catalog or not (catalog["video"]["renditions"] or catalog["audio"]["renditions"]):
        lines.append("catalog: no decodable audio or video stream found")
    else:
        lines.append("catalog:")
        for kind in ("video", "audio"):
            for name, config in catalog[kind]["renditions"].items():
                lines.append(_format_track(name, config, kind))
        lines.append("tracks:")
        lines.append(f"  {'name':<10} {'frames':>8} {'groups':>8} {'bytes':>12}")
        for name, counts in report["tracks"].items():
            lines.append(
                f"  {name:<10} {counts['frames']:>8} {counts['groups']:>8} {counts['bytes']:>12}"
            )
    ingress = report["ingress"]
    lines.append(
        f"metered ingress (all tracks, catalog included): {ingress['groups']} groups, "
        f"{ingress['frames']} frames, {ingress['bytes']} bytes"
    )
    problems = report["problems"]
    total = sum(report["problem_counts"].values())
    if not total:
        lines.append("problems: none")
    else:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(report["problem_counts"].items()))
        lines.append(f"problems: {total} ({counts})")
        shown = problems[:20]
        lines.extend(f"  - {p['message']}" for p in shown)
        if total > len(shown):
            lines.append(f"  ... and {total - len(shown)} more")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run `moqsrt probe`; return the exit status."""
    path: str = args.file
    scheme = path.split("://", 1)[0].lower() if "://" in path else ""
    if scheme in ("moqt", "moql", "https", "srt"):
        return _run_live(args)
    try:
        if path == "-":
            report = probe_stream(sys.stdin.buffer)
            label = "stdin"
        else:
            with open(path, "rb") as source:
                report = probe_stream(source, os.fstat(source.fileno()).st_size)
            label = path
    except OSError as exc:
        sys.stderr.write(f"moqsrt probe: cannot read {path}: {exc.strerror or exc}\n")
        return 2
    text = json.dumps(report, indent=2) if args.json else format_report(label, report)
    sys.stdout.write(text + "\n")
    return 0


SRT_PULL_CAP_BYTES = 512 * 1024 * 1024
"""Most TS bytes an `srt://` probe holds (it stops early past this)."""


def parse_srt_url(url: str) -> tuple[str, int, dict[str, str]]:
    """`srt://host:port?streamid=...&passphrase=...&latency=...` -> (host, port, params).

    The query is split by hand: a stream id such as `#!::r=live/x,m=request` holds a `#` that
    URL parsers take for a fragment. Raises `ValueError` without a host and port."""
    rest = url.split("://", 1)[1]
    hostport, _, query = rest.partition("?")
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("an srt:// URL needs host:port")
    params: dict[str, str] = {}
    for item in query.split("&") if query else ():
        key, _, value = item.partition("=")
        params[key] = unquote(value)
    return host.strip("[]"), int(port), params


async def pull_srt(url: str, seconds: float) -> bytes:
    """Pull TS from an SRT listener as a caller for `seconds` (or until it ends)."""
    from gateway.srt.reactor import SrtReactor
    from gateway.srt.values import SrtOptions

    host, port, params = parse_srt_url(url)
    options = SrtOptions(
        stream_id=params.get("streamid"),
        passphrase=params.get("passphrase") or None,
        latency_ms=int(params.get("latency", "120")),
    )
    out = bytearray()
    async with SrtReactor() as reactor:
        conn = await reactor.connect(host, port, options)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    while len(out) < SRT_PULL_CAP_BYTES and (batch := await conn.recv_batch()):
                        for message in batch:
                            out += message
        finally:
            conn.close()
    return bytes(out)


def _run_live(args: argparse.Namespace) -> int:
    """Probe a live MoQ or SRT source for `--seconds`; 2 when it cannot be reached."""
    configure_logging("auto", "warning")  # logs to stderr: stdout is the report
    try:
        if args.file.lower().startswith("srt://"):
            host, port, _ = parse_srt_url(args.file)
            label = f"srt://{host}:{port}"
            data = asyncio.run(pull_srt(args.file, args.seconds))
            report = probe_stream(io.BytesIO(data), len(data))
            report["seconds"] = args.seconds
        else:
            from gateway.moq.client import parse_moq_url  # aioquic loads only for MoQ
            from gateway.moq.probe_live import probe_moq

            label = parse_moq_url(args.file).redacted
            report = asyncio.run(probe_moq(args.file, args.seconds, fingerprint=args.fingerprint))
    except (ValueError, OSError, TimeoutError) as exc:
        sys.stderr.write(f"moqsrt probe: cannot read the live source: {exc}\n")
        return 2
    text = json.dumps(report, indent=2) if args.json else format_report(label, report)
    sys.stdout.write(text + "\n")
    return 0
