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

Delivered bytes are what the viewers counted: model payload bytes for MoQ (the hang frames),
TS bytes for SRT. Knobs: MOQSRT_BENCH_MOQ_V (viewers, default 4), MOQSRT_BENCH_SECONDS (media
seconds, default 20).
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
PATH = "bench/moq"
RELAY = ROOT / "tests" / "integration" / "moq_upstream_relay.py"


@dataclass
class Result:
    """One contender's run."""

    name: str
    delivered: int = 0
    per_viewer: list[int] = field(default_factory=list)
    relay_cpu_s: float = 0.0
    gateway_cpu_s: float = 0.0
    wall_s: float = 0.0
    dropped_groups: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def cpu_per_gb(self) -> float:
        """Relay CPU seconds per delivered 1e9 bytes."""
        return self.relay_cpu_s / (self.delivered / 1e9) if self.delivered else float("inf")


def _banner_fingerprint(proc: Proc) -> str | None:
    match = re.search(r"certificate sha256: ([0-9a-f]{64})", proc.out.read_text())
    return match.group(1) if match else None


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
    gateway = procs.start("moqsrt", [*argv, "--log-format", "json", "--log-level", "warning"])
    wait_for(lambda: udp_bound(port), 20, "moqsrt serve to listen")
    return gateway, port


def run(kind: str, src: Path, tmp: Path) -> Result:
    """One contender (see the module docstring)."""
    procs = Procs(tmp / kind)
    procs.tmp.mkdir(parents=True, exist_ok=True)
    deadline = SECONDS + 40
    try:
        if kind == "moqsrt-srt":
            gateway, srt_port = _serve(procs, tmp, "--moq", "off")
            relay = gateway
            sids = [f"#!::r={PATH},m=request"] * VIEWERS
            viewer = procs.start("viewers", viewer_argv(deadline, connect=srt_port, sids=sids))
        elif kind == "moqsrt-moq":
            moq_port = free_udp_port()
            gateway, srt_port = _serve(procs, tmp, "--moq", f"{HOST}:{moq_port}")
            relay = gateway
            wait_for(lambda: _banner_fingerprint(gateway) is not None, 20, "the MoQ banner")
            fingerprint = _banner_fingerprint(gateway)
            assert fingerprint is not None
            viewer = procs.start("viewers", _moq_viewers(moq_port, fingerprint, deadline))
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
            viewer = procs.start("viewers", _moq_viewers(relay_port, cert.fingerprint, deadline))
        wait_for(lambda: _ready(viewer), 30, "the viewers")
        relay_cpu0, gateway_cpu0 = relay.cpu_s(), gateway.cpu_s()
        started = time.monotonic()
        url = srt_url(srt_port, streamid=f"#!::r={PATH},m=publish", linger=2)
        publisher = procs.start(
            "publisher", ffmpeg_publish(src, SECONDS, [url]), bound_s=SECONDS + 20
        )
        wait_for(publisher.reap, SECONDS + 25, "the publisher")
        with contextlib.suppress(RuntimeError):
            wait_for(viewer.reap, 10, "viewers to end")
        result = Result(kind, wall_s=time.monotonic() - started)
        result.relay_cpu_s = relay.cpu_s() - relay_cpu0
        result.gateway_cpu_s = gateway.cpu_s() - gateway_cpu0
        viewer.stop()
        lines = viewer.out.read_text().splitlines()
        empty = {"bytes": {}, "errors": ["the viewers reported nothing"]}
        report: dict[str, Any] = json.loads(lines[-1]) if len(lines) > 1 else empty
        result.per_viewer = sorted(report["bytes"].values())
        result.delivered = sum(result.per_viewer)
        result.errors = list(report.get("errors", []))
        result.dropped_groups = int(report.get("dropped_groups", 0))
        if publisher.status not in (0, None):
            result.errors.append(f"publisher exit {publisher.status}: {publisher.tail(200)}")
        return result
    finally:
        procs.stop_all()


def _moq_viewers(port: int, fingerprint: str, deadline: float) -> list[str]:
    argv = [PYTHON, "-m", "tests.bench._moq_view", "--url", f"moqt://{HOST}:{port}"]
    argv += ["--path", PATH, "-n", str(VIEWERS), "--deadline", f"{deadline:g}"]
    return [*argv, "--fingerprint", fingerprint]


def main() -> None:
    """Run the three contenders once each and print CPU per delivered GB."""
    src = input_file()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_moq_") as tmp:
        kinds = os.environ.get("MOQSRT_BENCH_MOQ_KINDS", "moqsrt-moq,moqsrt-srt,moq-rs-relay")
        for kind in kinds.split(","):
            results.append(run(kind, src, Path(tmp)))
    print(f"one ~8 Mbit/s publisher, {SECONDS:g} s, {VIEWERS} viewers each")
    print(f"{'contender':<14} {'delivered MB':>12} {'relay CPU s':>11} {'CPU s/GB':>9} "
          f"{'moqsrt CPU s':>12} {'dropped':>7}  per-viewer MB (min..max)")  # fmt: skip
    for r in results:
        spread = (
            f"{r.per_viewer[0] / 1e6:.1f}..{r.per_viewer[-1] / 1e6:.1f}" if r.per_viewer else "-"
        )
        print(
            f"{r.name:<14} {r.delivered / 1e6:>12.1f} {r.relay_cpu_s:>11.2f} "
            f"{r.cpu_per_gb:>9.1f} {r.gateway_cpu_s:>12.2f} {r.dropped_groups:>7}  {spread}"
        )
        for err in r.errors[:5]:
            print(f"  ! {err}")
    by = {r.name: r.cpu_per_gb for r in results}
    if "moqsrt-moq" in by and "moqsrt-srt" in by:
        print(f"moqsrt MoQ / SRT egress (CPU s/GB): {by['moqsrt-moq'] / by['moqsrt-srt']:.2f}")
    if "moqsrt-moq" in by and "moq-rs-relay" in by:
        print(f"moqsrt MoQ egress / moq-rs relay: {by['moqsrt-moq'] / by['moq-rs-relay']:.2f}")
    sys.stdout.flush()
