"""MoQ fan-out: one 8 Mbit/s publisher read by N moq-rs subscribers, CPU per delivered GB.

One SRT publisher (`ffmpeg -re -c copy` of bench_gateway's generated 720p30 8 Mbit/s H.264 +
AAC input) feeds `moqsrt serve`; N viewers read the broadcast. Contenders (what is measured is
the relay process's user + system CPU, from the publisher's start to the end of delivery):
1. moqsrt-moq: the N viewers are moq-rs clients (tests/bench/_moq_view.py, one session each,
   every catalog track) on moqsrt's MoQ listener (raw QUIC, moq-lite-03).
2. moqsrt-srt: the same broadcast to N SRT viewers (`m=request`, bench_gateway's viewer
   process): moqsrt's SRT egress, for comparison.
3. moq-rs-relay: moqsrt publishes the broadcast once to a moq-rs Server (`--upstream`) and the N
   moq-rs viewers read from that server; the server's CPU is what is measured (moqsrt's is
   printed apart). This is what DESIGN.md's "fan-out goes to a MoQ relay" costs.

First the largest fan-out: moqsrt-moq alone with N = 1, 2, 3, ... viewers (MOQSRT_BENCH_MOQ_MAX_V,
default 8, caps N; MOQSRT_BENCH_MOQ_SEARCH_SECONDS, default 10, media seconds per try) until a
run skips a group; the largest N before it is printed. A run is clean when (1) the viewers saw
no skipped video group (tests/bench/_moq_view.py: holes in the group sequences a viewer read
whole, a reset group counting as a hole, and groups at a track's end that another viewer got and
this one did not), (2) moqsrt's own records (`session.closed`, field `skipped_groups`: groups
dropped under congestion or never started) skipped none, and (3) no viewer reported an error.
Audio is left out of (1): one AAC frame per group, ~47 groups/s arriving in bursts, and the
moq-rs client delivers only some of them (its consumer skips forward) even to one viewer, while
moqsrt's records say it sent every group, and the same holes show behind the moq-rs relay;
the table prints that all-track viewer count too ("skipped"). Then the three
contenders run at that N (at least 1) and, if it differs, at the fixed N (MOQSRT_BENCH_MOQ_V,
default 4), each for MOQSRT_BENCH_SECONDS (media seconds, default 20).

Delivered bytes are what the viewers counted: model payload bytes for MoQ (the hang frames),
TS bytes for SRT. Table columns "skipped" (every track) and "video" are the viewer-side counts
for the MoQ contenders (0 for SRT: its viewers count bytes only), "records" moqsrt's own
(moqsrt-moq only).
"""

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.moq.cert import generate_certificate
from tests.bench.bench_gateway import (
    HOST,
    PYTHON,
    ROOT,
    Proc,
    Procs,
    _ready,
    ffmpeg_publish,
    free_udp_port,
    input_file,
    srt_url,
    udp_bound,
    viewer_argv,
    wait_for,
)

VIEWERS = int(os.environ.get("MOQSRT_BENCH_MOQ_V", "4"))
SECONDS = float(os.environ.get("MOQSRT_BENCH_SECONDS", "20"))
MAX_VIEWERS = int(os.environ.get("MOQSRT_BENCH_MOQ_MAX_V", "8"))
SEARCH_SECONDS = float(os.environ.get("MOQSRT_BENCH_MOQ_SEARCH_SECONDS", "10"))
PATH = "bench/moq"
RELAY = ROOT / "tests" / "integration" / "moq_upstream_relay.py"


@dataclass
class Result:
    """One contender's run."""

    name: str
    viewers: int = 0
    delivered: int = 0
    per_viewer: list[int] = field(default_factory=list)
    relay_cpu_s: float = 0.0
    gateway_cpu_s: float = 0.0
    wall_s: float = 0.0
    skipped_groups: int = 0
    video_skipped: int = 0
    server_skipped: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def cpu_per_gb(self) -> float:
        """Relay CPU seconds per delivered 1e9 bytes."""
        return self.relay_cpu_s / (self.delivered / 1e9) if self.delivered else float("inf")


def _banner_fingerprint(proc: Proc) -> str | None:
    match = re.search(r"certificate sha256: ([0-9a-f]{64})", proc.out.read_text())
    return match.group(1) if match else None


def _server_skipped(gateway: Proc, viewers: int) -> int | None:
    """Sum of `skipped_groups` over moqsrt's MoQ egress `session.closed` records, once every
    viewer's record is logged (None if they are not within 10 s)."""
    records: list[dict[str, Any]] = []

    def logged() -> bool:
        records.clear()
        for line in gateway.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "session.closed" and "subscriptions" in event:
                    records.append(event)
        return len(records) >= viewers

    with contextlib.suppress(RuntimeError):
        wait_for(logged, 10, "the MoQ session records")
        return sum(int(e.get("skipped_groups", 0)) for e in records)
    return None


def _serve(procs: Procs, tmp: Path, *extra: str) -> tuple[Proc, int]:
    port = free_udp_port()
    argv = [
        PYTHON,
        "-m",
        "gateway.cli",
        "serve",
        "--srt",
        f"{HOST}:{port}",
        "--var-dir",
        str(tmp / "var"),
        "--http",
        "off",
        *extra,
    ]
    level = "info" if "--moq" in extra and extra[extra.index("--moq") + 1] != "off" else "warning"
    gateway = procs.start("moqsrt", [*argv, "--log-format", "json", "--log-level", level])
    wait_for(lambda: udp_bound(port), 20, "moqsrt serve to listen")
    return gateway, port


def run(kind: str, src: Path, tmp: Path, viewers: int, seconds: float) -> Result:
    """One contender, `viewers` viewers, `seconds` media seconds (see the module docstring)."""
    procs = Procs(tmp / f"{kind}-{viewers}-{time.monotonic_ns()}")
    procs.tmp.mkdir(parents=True, exist_ok=True)
    deadline = seconds + 40
    try:
        if kind == "moqsrt-srt":
            gateway, srt_port = _serve(procs, tmp, "--moq", "off")
            relay = gateway
            sids = [f"#!::r={PATH},m=request"] * viewers
            viewer = procs.start("viewers", viewer_argv(deadline, connect=srt_port, sids=sids))
        elif kind == "moqsrt-moq":
            moq_port = free_udp_port()
            gateway, srt_port = _serve(procs, tmp, "--moq", f"{HOST}:{moq_port}")
            relay = gateway
            wait_for(lambda: _banner_fingerprint(gateway) is not None, 20, "the MoQ banner")
            fingerprint = _banner_fingerprint(gateway)
            assert fingerprint is not None
            viewer = procs.start("viewers", _moq_viewers(moq_port, fingerprint, deadline, viewers))
        else:
            cert = generate_certificate()
            cert_path, key_path = cert.write(procs.tmp)
            relay_port = free_udp_port()
            relay = procs.start(
                "moq-rs",
                [PYTHON, str(RELAY), f"{HOST}:{relay_port}", str(cert_path), str(key_path)],
            )
            wait_for(lambda: relay.out.read_bytes().startswith(b"ready"), 20, "the moq-rs relay")
            upstream = [f"--upstream=moqt://{HOST}:{relay_port}"]
            upstream.append(f"--upstream-fingerprint={cert.fingerprint}")
            gateway, srt_port = _serve(procs, tmp, "--moq", "off", *upstream)
            viewer = procs.start(
                "viewers", _moq_viewers(relay_port, cert.fingerprint, deadline, viewers)
            )
        wait_for(lambda: _ready(viewer), 30, "the viewers")
        relay_cpu0, gateway_cpu0 = relay.cpu_s(), gateway.cpu_s()
        started = time.monotonic()
        url = srt_url(srt_port, streamid=f"#!::r={PATH},m=publish", linger=2)
        publisher = procs.start(
            "publisher", ffmpeg_publish(src, seconds, [url]), bound_s=seconds + 20
        )
        wait_for(publisher.reap, seconds + 25, "the publisher")
        with contextlib.suppress(RuntimeError):
            wait_for(viewer.reap, 10, "viewers to end")
        result = Result(kind, viewers, wall_s=time.monotonic() - started)
        result.relay_cpu_s = relay.cpu_s() - relay_cpu0
        result.gateway_cpu_s = gateway.cpu_s() - gateway_cpu0
        viewer.stop()
        lines = viewer.out.read_text().splitlines()
        empty = {"bytes": {}, "errors": ["the viewers reported nothing"]}
        report: dict[str, Any] = json.loads(lines[-1]) if len(lines) > 1 else empty
        result.per_viewer = sorted(report["bytes"].values())
        result.delivered = sum(result.per_viewer)
        result.errors = list(report.get("errors", []))
        result.skipped_groups = int(report.get("skipped_groups", 0))
        result.video_skipped = int(report.get("video_skipped_groups", 0))
        if kind == "moqsrt-moq":
            result.server_skipped = _server_skipped(gateway, viewers)
        if len(result.per_viewer) < viewers:
            result.errors.append(f"{viewers - len(result.per_viewer)} viewers reported nothing")
        if publisher.status not in (0, None):
            result.errors.append(f"publisher exit {publisher.status}: {publisher.tail(200)}")
        return result
    finally:
        procs.stop_all()


def _moq_viewers(port: int, fingerprint: str, deadline: float, viewers: int) -> list[str]:
    argv = [PYTHON, "-m", "tests.bench._moq_view", "--url", f"moqt://{HOST}:{port}"]
    argv += ["--path", PATH, "-n", str(viewers), "--deadline", f"{deadline:g}"]
    return [*argv, "--fingerprint", fingerprint]


def clean(result: Result) -> bool:
    """True when every viewer got something and none skipped a group or reported an error."""
    return (
        result.delivered > 0
        and result.video_skipped == 0
        and result.server_skipped == 0
        and not result.errors
    )


def largest_fanout(src: Path, tmp: Path) -> tuple[int, list[Result]]:
    """moqsrt-moq with 1, 2, ... MAX_VIEWERS viewers until a run is not clean.

    Returns the largest clean N (0 when even one viewer skipped) and every run made.
    """
    tries: list[Result] = []
    best = 0
    for n in range(1, MAX_VIEWERS + 1):
        result = run("moqsrt-moq", src, tmp, n, SEARCH_SECONDS)
        tries.append(result)
        errors = f", errors: {result.errors[:2]}" if result.errors else ""
        print(f"  N={n}: skipped video groups {result.video_skipped} (viewers), "
              f"{result.server_skipped} (moqsrt's records); all tracks {result.skipped_groups}; "
              f"{result.delivered / 1e6:.1f} MB delivered{errors}", flush=True)  # fmt: skip
        if not clean(result):
            break
        best = n
    return best, tries


def _table(results: list[Result], seconds: float, viewers: int) -> None:
    print(f"one ~8 Mbit/s publisher, {seconds:g} s, {viewers} viewers each")
    print(f"{'contender':<14} {'delivered MB':>12} {'relay CPU s':>11} {'CPU s/GB':>9} "
          f"{'moqsrt CPU s':>12} {'skipped':>7} {'video':>5} {'records':>7}  "
          "per-viewer MB (min..max)")  # fmt: skip
    for r in results:
        spread = (
            f"{r.per_viewer[0] / 1e6:.1f}..{r.per_viewer[-1] / 1e6:.1f}" if r.per_viewer else "-"
        )
        print(
            f"{r.name:<14} {r.delivered / 1e6:>12.1f} {r.relay_cpu_s:>11.2f} "
            f"{r.cpu_per_gb:>9.1f} {r.gateway_cpu_s:>12.2f} {r.skipped_groups:>7} "
            f"{r.video_skipped:>5} {'-' if r.server_skipped is None else r.server_skipped:>7}  "
            f"{spread}"
        )
        for err in r.errors[:5]:
            print(f"  ! {err}")
    by = {r.name: r.cpu_per_gb for r in results}
    if "moqsrt-moq" in by and "moqsrt-srt" in by:
        print(f"moqsrt MoQ / SRT egress (CPU s/GB): {by['moqsrt-moq'] / by['moqsrt-srt']:.2f}")
    if "moqsrt-moq" in by and "moq-rs-relay" in by:
        print(f"moqsrt MoQ egress / moq-rs relay: {by['moqsrt-moq'] / by['moq-rs-relay']:.2f}")
    sys.stdout.flush()


def main() -> None:
    """Find the largest clean MoQ fan-out, then compare CPU s/GB at it and at VIEWERS."""
    src = input_file()
    kinds = os.environ.get("MOQSRT_BENCH_MOQ_KINDS", "moqsrt-moq,moqsrt-srt,moq-rs-relay")
    with tempfile.TemporaryDirectory(prefix="bench_moq_") as tmp:
        print(f"largest MoQ fan-out with no skipped groups ({SEARCH_SECONDS:g} s per try, "
              f"N <= {MAX_VIEWERS}; skipped: video groups the viewers missed, "
              "and moqsrt's records):", flush=True)  # fmt: skip
        best, _ = largest_fanout(src, Path(tmp))
        capped = " (the cap: raise MOQSRT_BENCH_MOQ_MAX_V)" if best == MAX_VIEWERS else ""
        print(f"largest N with no skipped groups (moqsrt MoQ egress): {best}{capped}", flush=True)
        for n in dict.fromkeys([max(best, 1), VIEWERS]):
            results = [run(kind, src, Path(tmp), n, SECONDS) for kind in kinds.split(",")]
            _table(results, SECONDS, n)
