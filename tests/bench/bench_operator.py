"""What metering and recording cost: the SRT relay with the ledger, metrics and page on vs off.

The relay shape of bench_gateway (its helpers, imported: `ffmpeg -re -c copy` publishers, one
viewer process of Python SRT callers per gateway on one UDP port that only counts bytes), with
its own cached input (~8.5 Mbit/s 720p30, 60 s, so that a round is mostly steady state), run
through `moqsrt serve` in these configurations:

- `off`: `--ledger off --http off` (and `--moq off`, as in all);
- `on`, what issue 11 means by on: the usage ledger in SQLite in a temporary directory at its
  default interval (1 s), and the HTTP listener on loopback with, in this process, a Prometheus
  scraping `/metrics` every 15 s (its default; first 2 s after the publishers start) and a
  browser with the status page open: `/` once, then `/status.json` every 5 s and each listed
  broadcast's thumbnail at the interval the server gives the page (again at the next poll
  after a 404), the page's own cadence (`page.js`). Each client keeps its connection alive, as
  those clients do. Each route's answers are counted by status;
- `stress` (not run by default): the ledger, and every second `/metrics`, `/`,
  `/api/v1/broadcasts` and each listed broadcast's thumbnail (a far heavier surface than any
  real client);
- for a breakdown (e.g. MOQSRT_OPBENCH_CONFIGS=off,ledger,http): `ledger`, the ledger alone,
  `http`, the page and Prometheus alone, `http1`, the 1 s poll alone, `listen`, the HTTP
  listener with nobody asking;
- `twin`: a second `off`, to calibrate (MOQSRT_OPBENCH_CONFIGS=off,twin): what running side by
  side and the tee's order do by themselves.

Shapes: P publishers x V viewers per publisher, 1x1 and 4x4 by default. Per shape and round
every configuration runs at the same time, side by side: one gateway each, all fed by the same
publishers (one ffmpeg per stream, tee'd to every gateway, the order rotated each round) and
each read by its own viewer process, so that whatever else the shared machine does hits them
alike (run one after the other, a round's ratio moved by 10-40 %; side by side by ~5 %). The
verdict per shape is the median over rounds of the per-round ratio `on / off` of the
gateway's CPU seconds per delivered GB (1e9 bytes the viewers received). CPU is user + sys of
the `moqsrt serve` process (all threads: the ledger's and the thumbnails' included), from
/proc/PID/stat, from the publishers' start to the end of delivery (start-up and the final
flush at exit are outside, alike); it is also printed per thread (the kernel's thread names:
`loop` is the event loop, `srt-io-N` the SRT reactor, `SRT:*` libsrt's, `moqsrt-*` the
gateway's workers), the difference from `off` showing where an added cost lands. Goal
(issue 11): < 1.03.

Every run with the ledger also reconciles it with the viewers: once the gateway has exited
(SIGINT: every session ends, then a final flush), the SQLite file must pass
`PRAGMA integrity_check`, and per path the egress session records' billed TS bytes
(`ts_bytes`) must be at most what the viewers received, which must be at most billed + skipped
+ dropped (the billing rule: a bill never shows more than was delivered; what was not confirmed
is reported beside it). Printed per run, with the received/billed ratio, and for a path
outside that slack its figures and the viewers' libsrt receive drops: a receiver skips packets
too late to play and acknowledges past them, so the gateway's bill counts them delivered.

Environment knobs: MOQSRT_OPBENCH_SHAPES (default "1x1,4x4"), MOQSRT_OPBENCH_SECONDS (media
seconds per publisher, default 60, the whole input), MOQSRT_OPBENCH_REPEAT (rounds, default
4, an even number so that each configuration is tee'd to first as often; about 10 minutes in
all), MOQSRT_OPBENCH_CONFIGS (default "off,on"; "off" first, each other one is held against
it; also stress, ledger, http, http1).
"""

# No `from __future__ import annotations`: see bench_gateway (dataclasses and run.py).
import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tests.bench.bench_gateway import (
    CLK_TCK,
    HOST,
    PYTHON,
    ROOT,
    Proc,
    Procs,
    _ready,
    ffmpeg_publish,
    free_udp_port,
    srt_url,
    udp_bound,
    viewer_argv,
    wait_for,
)
from tests.bench.bench_import import make_test_stream


def _shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        p, _, v = item.strip().partition("x")
        out.append((int(p), int(v)))
    return out


SHAPES = _shapes(os.environ.get("MOQSRT_OPBENCH_SHAPES", "1x1,4x4"))
INPUT_S = 60
"""Seconds of the bench's own input (`operator_input`)"""
SECONDS = float(os.environ.get("MOQSRT_OPBENCH_SECONDS", str(INPUT_S)))
REPEAT = int(os.environ.get("MOQSRT_OPBENCH_REPEAT", "4"))
#: `moqsrt` from this checkout: the venv's console script imports the package it was installed
#: from (an editable install of another checkout, possibly), `python -m` from ROOT (the
#: children's working directory) imports this one.
GATEWAY = (PYTHON, "-m", "gateway.cli")
POLL_S = 1.0
"""`stress`: seconds between polls of everything"""
SCRAPE_S = 15.0
"""`on`: seconds between Prometheus scrapes (its default interval)"""
PAGE_POLL_S = 5.0
"""`on`: seconds between the status page's `/status.json` polls (page.js POLL_MS)"""
GOAL = 1.03
#: off, on, stress, and for a breakdown: ledger (the ledger alone), http (the page and
#: Prometheus alone), http1 (the 1 s poll alone), listen (HTTP on, nobody asking); twin (a
#: second `off`: what running side by side does by itself)
CONFIGS = tuple(os.environ.get("MOQSRT_OPBENCH_CONFIGS", "off,on").split(","))
_WITH_LEDGER = ("on", "stress", "ledger")
_WITH_HTTP = {"on": "page", "http": "page", "stress": "stress", "http1": "stress", "listen": ""}


def operator_input() -> Path:
    """The cached input (~8.5 Mbit/s 720p30 H.264 + AAC, `INPUT_S` seconds), generated on
    first use (about 20 s)."""
    path = ROOT / "fixtures" / "big" / f"op_8m_{INPUT_S}s.ts"
    return make_test_stream(path, size="1280x720", seconds=INPUT_S, video_bps="8M", timeout_s=300)


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class Poller(threading.Thread):
    """Asks the gateway's HTTP surface as its clients do until `stop()`; counts each route's
    answers by status (0: no answer) in `counts[(route, status)]`.

    `mode` "page" (the `on` configuration): a Prometheus scraping `/metrics` every
    `SCRAPE_S` (first at `first_s`), and a browser with the status page open: `/` once, then
    `/status.json` every `PAGE_POLL_S`, each listed broadcast's thumbnail when not asked for
    `thumbnail_interval_s` of the last `/status.json` (none when 0 or when the broadcast has no
    thumbnail URL; asked again at the next poll after a 404), as `page.js` does. `mode` "stress"
    (the `stress` configuration): every `POLL_S`, `/metrics`, `/`, `/api/v1/broadcasts` and
    each listed broadcast's thumbnail. Like the clients it stands for, it keeps its
    connections open (HTTP/1.1 keep-alive): one for Prometheus, one for the browser. A
    connection that fails is opened again on its next request.
    """

    def __init__(self, port: int, mode: str, first_s: float = 2.0) -> None:
        super().__init__(name="poller", daemon=True)
        self.port = port
        self.mode = mode
        self.first_s = first_s
        self.counts: Counter[tuple[str, int]] = Counter()
        self.bytes = 0
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._thumb_at: dict[str, float] = {}
        self.thumbnail_s = 0.0
        """The thumbnail interval the gateway last told the page (0: off)"""
        self._halt = threading.Event()

    def stop(self) -> None:
        """Stop polling, wait for the request in progress, close the connections."""
        self._halt.set()
        self.join(10)
        for conn in self._conns.values():
            conn.close()

    def run(self) -> None:
        if self.mode == "stress":
            while not self._halt.is_set():
                started = time.monotonic()
                self._scrape()
                self._halt.wait(max(0.0, POLL_S - (time.monotonic() - started)))
            return
        start = time.monotonic()
        self._get("browser", "page", "/")
        due = {"metrics": start + self.first_s, "status": start + PAGE_POLL_S}
        while True:
            what, at = min(due.items(), key=lambda item: item[1])
            if self._halt.wait(max(0.0, at - time.monotonic())):
                return
            if what == "metrics":
                self._get("prometheus", "metrics", "/metrics")
                due[what] = at + SCRAPE_S
            else:
                self._page_poll()
                due[what] = time.monotonic() + PAGE_POLL_S  # page.js: setTimeout after each

    def _get(self, client: str, route: str, url: str) -> tuple[int, bytes]:
        status, body = 0, b""
        conn = self._conns.get(client)
        if conn is None:
            conn = self._conns[client] = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            conn.request("GET", url)
            answer = conn.getresponse()
            status, body = answer.status, answer.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            del self._conns[client]
        self.counts[(route, status)] += 1
        self.bytes += len(body)
        return status, body

    @staticmethod
    def _listed(body: bytes) -> list[dict[str, Any]]:
        try:
            listed: list[dict[str, Any]] = json.loads(body)["broadcasts"] if body else []
        except (ValueError, KeyError, TypeError):
            listed = []
        return listed

    def _page_poll(self) -> None:
        _, body = self._get("browser", "status", "/status.json")
        try:
            every = float(json.loads(body).get("thumbnail_interval_s") or 0) if body else 0.0
        except (ValueError, AttributeError, TypeError):
            every = 0.0
        self.thumbnail_s = every
        for item in self._listed(body):
            url = item.get("thumbnail")
            now = time.monotonic()
            if not every or not isinstance(url, str):
                continue
            if now - self._thumb_at.get(url, -1e9) < every:
                continue
            self._thumb_at[url] = now
            status, _ = self._get("browser", "thumbnail", url)
            if status != 200:
                self._thumb_at[url] = -1e9

    def _scrape(self) -> None:
        self._get("prometheus", "metrics", "/metrics")
        self._get("browser", "page", "/")
        _, body = self._get("browser", "broadcasts", "/api/v1/broadcasts")
        for item in self._listed(body):
            url = f"/api/v1/broadcasts/{urllib.parse.quote(str(item['path']))}/thumbnail.jpg"
            self._get("browser", "thumbnail", url)


@dataclass
class Reconciled:
    """The ledger against the viewers, per path: billed <= received <= billed + unconfirmed."""

    integrity: str = ""
    received: int = 0
    billed: int = 0
    offered: int = 0
    sessions: int = 0
    paths_ok: int = 0
    paths: int = 0
    outside: list[str] = field(default_factory=list)
    """the paths outside the slack: path, received, billed, billed + skipped + dropped"""

    @property
    def ok(self) -> bool:
        """True when the file is sound and every path is within the rule's slack."""
        return self.integrity == "ok" and self.paths > 0 and self.paths_ok == self.paths


@dataclass
class Run:
    """One gateway run of one shape and configuration."""

    shape: tuple[int, int]
    config: str
    round: int
    delivered: int = 0
    viewers: int = 0
    cpu_s: float = 0.0
    recv_drops: int = 0
    """packets the viewers' libsrt dropped as too late or lost (pktRcvDrop)"""
    sys_s: float = 0.0
    """the kernel's share of `cpu_s`"""
    wall_s: float = 0.0
    polls: Counter[tuple[str, int]] = field(default_factory=Counter)
    ledger: Reconciled | None = None
    errors: list[str] = field(default_factory=list)
    threads: dict[str, float] = field(default_factory=dict)
    thumbnail_s: float = 0.0
    """the thumbnail interval the gateway told the page (0: off or no page)"""
    """CPU seconds per thread name over the window (`thread_cpu`)"""

    @property
    def cpu_per_gb(self) -> float:
        """Gateway CPU seconds per delivered 1e9 bytes."""
        return self.cpu_s / (self.delivered / 1e9) if self.delivered else float("inf")


def _path_of(viewer_name: str) -> str:
    # The viewer process names a connection "<stream id>#<n>"; the path is the r= value.
    sid = viewer_name.rsplit("#", 1)[0]
    for part in sid.removeprefix("#!::").split(","):
        if part.startswith("r="):
            return part[2:]
    return ""


def reconcile(ledger: Path, per_viewer: dict[str, int]) -> Reconciled:
    """Read the egress session records back from the ledger file and hold them against the
    bytes each path's viewers received."""
    from gateway.ledger_db import LedgerReader

    out = Reconciled()
    received: Counter[str] = Counter()
    for name, nbytes in per_viewer.items():
        received[_path_of(name)] += nbytes
    billed: Counter[str] = Counter()
    offered: Counter[str] = Counter()
    with LedgerReader(ledger) as reader:
        out.integrity = reader.integrity_check()
        for rec in reader.sessions(role="egress"):
            record = rec.detail
            ts = int(record.get("ts_bytes", 0))
            billed[rec.path] += ts
            offered[rec.path] += (
                ts + int(record.get("skipped_ts_bytes", 0)) + int(record.get("dropped_ts_bytes", 0))
            )
            out.sessions += 1
    for path in sorted(set(received) | set(billed)):
        out.paths += 1
        if billed[path] <= received[path] <= offered[path]:
            out.paths_ok += 1
        else:
            out.outside.append(
                f"{path}: received {received[path]:,}, billed {billed[path]:,}, "
                f"billed+skipped+dropped {offered[path]:,}"
            )
    out.received, out.billed, out.offered = received.total(), billed.total(), offered.total()
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of `pid`, summed by kernel name (`loop` for the main
    thread, where the event loop runs; libsrt and the gateway name theirs)."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
            except OSError:
                continue
            fields = rest.split()
            name = "loop" if tid == str(pid) else head.partition("(")[2]
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _sys_s(proc: Proc) -> float:
    """System CPU seconds of a running child so far (0 once it ended)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[12]) / CLK_TCK
    except OSError:
        return 0.0


@dataclass
class _Gateway:
    """One `moqsrt serve` of a paired run, with its own ports, files and viewer process."""

    config: str
    tmp: Path
    port: int
    http_port: int
    proc: Proc
    viewer: Proc | None = None
    poller: Poller | None = None
    cpu0: float = 0.0
    sys0: float = 0.0
    threads0: dict[str, float] = field(default_factory=dict)

    @property
    def ledger(self) -> Path:
        """The ledger file (for configurations with a ledger)."""
        return self.tmp / "ledger.sqlite3"

    @property
    def mode(self) -> str | None:
        """The poller's mode, None without HTTP."""
        return _WITH_HTTP.get(self.config)


def _start_gateway(procs: Procs, config: str, tmp: Path) -> _Gateway:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    http_port = free_tcp_port() if config in _WITH_HTTP else 0
    argv = [*GATEWAY, "serve", "--srt", f"{HOST}:{port}", "--log-format", "json", "--moq", "off"]
    argv += ["--var-dir", str(tmp / "var")]
    # The ledger at its default interval, or none.
    argv += ["--ledger", str(tmp / "ledger.sqlite3") if config in _WITH_LEDGER else "off"]
    argv += ["--http", f"{HOST}:{http_port}" if http_port else "off"]
    proc = procs.start(f"moqsrt-{config}", argv)
    return _Gateway(config=config, tmp=tmp, port=port, http_port=http_port, proc=proc)


def run_group(configs: Sequence[str], shape: tuple[int, int], src: Path, tmp: Path) -> list[Run]:
    """One paired run of `shape` (publishers, viewers each): a `moqsrt serve` per configuration
    (`CONFIGS`), all at once, fed by the same publishers (one ffmpeg per stream, tee'd to every
    gateway) and each read by its own viewer process; every gateway's CPU is taken over the
    same window. Running them side by side is what makes the ratio measurable on a shared
    machine: whatever else runs there slows them alike, where one after the other a round's
    ratio moved by 10-40 %."""
    pubs, views = shape
    procs = Procs(tmp)
    procs.tmp.mkdir(parents=True, exist_ok=True)
    gateways: list[_Gateway] = []
    results = {config: Run(shape=shape, config=config, round=0) for config in configs}
    try:
        for config in configs:
            gateways.append(_start_gateway(procs, config, tmp / config))
        for gw in gateways:
            wait_for(partial(udp_bound, gw.port), 15, f"moqsrt {gw.config} to listen")
            if gw.http_port:
                wait_for(partial(_tcp_open, gw.http_port), 15, "moqsrt's HTTP listener")
        sids = [f"#!::r=bench/s{p},m=request" for p in range(pubs) for _ in range(views)]
        for gw in gateways:
            argv = viewer_argv(SECONDS + 40, connect=gw.port, sids=sids)
            gw.viewer = procs.start(f"viewers-{gw.config}", argv)
        for gw in gateways:
            assert gw.viewer is not None
            wait_for(partial(_ready, gw.viewer), 15, "the viewer process")
        for gw in gateways:
            gw.cpu0, gw.sys0 = gw.proc.cpu_s(), _sys_s(gw.proc)
            gw.threads0 = thread_cpu(gw.proc.pid)
        started = time.monotonic()
        publishers: list[Proc] = []
        for p in range(pubs):
            sid = f"#!::r=bench/s{p},m=publish"
            urls = [srt_url(gw.port, streamid=sid, linger=2) for gw in gateways]
            argv = ffmpeg_publish(src, SECONDS, urls)
            publishers.append(procs.start(f"pub-s{p}", argv, bound_s=SECONDS + 20))
        for gw in gateways:  # after the last fork: Popen's preexec_fn and threads do not mix
            if gw.mode:
                gw.poller = Poller(gw.http_port, gw.mode)
                gw.poller.start()
        wait_for(lambda: all(pub.reap() for pub in publishers), SECONDS + 25, "publishers")
        with contextlib.suppress(RuntimeError):  # bounded, as in bench_gateway
            wait_for(lambda: all(gw.viewer.reap() for gw in gateways if gw.viewer), 8, "viewers")
        for gw in gateways:
            result = results[gw.config]
            result.cpu_s = gw.proc.cpu_s() - gw.cpu0
            result.sys_s = _sys_s(gw.proc) - gw.sys0
            result.wall_s = time.monotonic() - started
            result.threads = {
                name: cpu - gw.threads0.get(name, 0.0)
                for name, cpu in thread_cpu(gw.proc.pid).items()
            }
        for gw in gateways:
            result = results[gw.config]
            if gw.poller is not None:
                gw.poller.stop()
                result.polls = gw.poller.counts
                result.thumbnail_s = gw.poller.thumbnail_s
            assert gw.viewer is not None
            gw.viewer.stop()
            lines = gw.viewer.out.read_text().splitlines()
            report = json.loads(lines[-1]) if len(lines) > 1 else {"bytes": {}, "errors": []}
            per_viewer: dict[str, int] = report["bytes"]
            result.viewers = len(per_viewer)
            result.delivered = sum(per_viewer.values())
            result.errors += list(report.get("errors", []))[:3]
            result.recv_drops = int(report.get("dropped", 0))
            if result.viewers < pubs * views:
                result.errors.append(f"only {result.viewers} viewers connected")
            for pub in publishers:
                if pub.status not in (0, None):
                    result.errors.append(f"{pub.name} exit {pub.status}: {pub.tail(200)}")
            gw.proc.stop(grace_s=15.0)  # SIGINT: sessions end, then the ledger's final flush
            if gw.proc.status != 0:
                result.errors.append(f"moqsrt exit {gw.proc.status}: {gw.proc.tail(300)}")
            if gw.config in _WITH_LEDGER:
                result.ledger = reconcile(gw.ledger, per_viewer)
        return [results[config] for config in configs]
    finally:
        for gw in gateways:
            if gw.poller is not None and gw.poller.is_alive():
                gw.poller.stop()
        procs.stop_all()


# ---- report ---------------------------------------------------------------------------------


def _polls(counts: Counter[tuple[str, int]]) -> str:
    if not counts:
        return "-"
    return " ".join(f"{route}:{status}x{n}" for (route, status), n in sorted(counts.items()))


def _ledger(rec: Reconciled | None) -> str:
    if rec is None:
        return "-"
    verdict = "ok" if rec.ok else "MISMATCH"
    ratio = rec.received / rec.billed if rec.billed else float("nan")
    return (
        f"{verdict} (integrity {rec.integrity}; {rec.sessions} egress sessions; paths within "
        f"slack {rec.paths_ok}/{rec.paths}; received {rec.received:,} B, billed TS "
        f"{rec.billed:,}, billed+skipped+dropped {rec.offered:,}; received/billed {ratio:.4f})"
    )


def print_report(runs: list[Run]) -> None:
    """The per-run table, the per-shape ratios and the ledger checks."""
    told = sorted({r.thumbnail_s for r in runs if r.config == "on"})
    thumb = ", ".join(f"every {t:g} s" if t else "none" for t in told) or "-"
    print(
        f"{SECONDS:g} s of ~8.5 Mbit/s per publisher; off = --ledger off --http off; on = "
        f"ledger (SQLite, default interval) + /metrics every {SCRAPE_S:g} s + a status page "
        f"open (/status.json every {PAGE_POLL_S:g} s, thumbnails as often as the gateway "
        f"tells the page: {thumb})"
        + (
            f"; stress = ledger + everything polled every {POLL_S:g} s"
            if "stress" in CONFIGS
            else ""
        )
    )
    print(
        f"{'shape':>5} {'config':>6} {'round':>5} {'viewers':>7} {'delivered MB':>12} "
        f"{'gateway CPU s':>13} {'of it sys':>9} {'CPU s/GB':>8} {'wall s':>6}  "
        "polls (route:status x n)"
    )
    for r in runs:
        label = f"{r.shape[0]}x{r.shape[1]}"
        print(
            f"{label:>5} {r.config:>6} {r.round:>5} {r.viewers:>7} {r.delivered / 1e6:>12.1f} "
            f"{r.cpu_s:>13.2f} {r.sys_s:>9.2f} {r.cpu_per_gb:>8.2f} {r.wall_s:>6.1f}  "
            + _polls(r.polls)
        )
        if r.ledger is not None:
            print(f"      ledger vs viewers: {_ledger(r.ledger)}")
            for line in r.ledger.outside[:4]:
                print(f"        outside the slack: {line}; viewers' libsrt drops {r.recv_drops}")
        for err in r.errors[:3]:
            print(f"    ! {err}")
    print()
    for shape in SHAPES:
        by = {(r.config, r.round): r for r in runs if r.shape == shape and r.delivered}
        name = f"{shape[0]}x{shape[1]}"
        for config in CONFIGS[1:]:
            pairs = [(by[("off", n)], by[(config, n)]) for n in range(1, REPEAT + 1)
                     if ("off", n) in by and (config, n) in by]  # fmt: skip
            if not pairs:
                print(f"{name} {config}: no complete round")
                continue
            ratios = [b.cpu_per_gb / a.cpu_per_gb for a, b in pairs]
            median = statistics.median(ratios)
            off = statistics.median(a.cpu_per_gb for a, _ in pairs)
            on = statistics.median(b.cpu_per_gb for _, b in pairs)
            # The same in absolute terms: CPU ms per second of delivery, which does not scale
            # with the bytes (a flush and a scrape a second), hence the shapes differ.
            added = statistics.median((b.cpu_s - a.cpu_s) / b.wall_s * 1000 for a, b in pairs)
            added_sys = statistics.median((b.sys_s - a.sys_s) / b.wall_s * 1000 for a, b in pairs)
            listed = ", ".join(f"{x:.3f}" for x in ratios)
            # The gateway tee'd to first costs a few % more (see `twin`); over rounds that
            # rotate the order evenly the geometric mean cancels that, printed beside.
            geomean = statistics.geometric_mean(ratios)
            goal = ""
            if config == "on":
                goal = f"; goal < {GOAL}: {'met' if median < GOAL else 'NOT met'}"
            print(
                f"{name} {config}/off: CPU s per delivered GB, median off {off:.2f}, {config} "
                f"{on:.2f}; ratio, median of rounds {median:.3f} (rounds: {listed}; geometric "
                f"mean {geomean:.3f}){goal}; "
                f"added CPU: median {added:.1f} ms per second of delivery ({added_sys:.1f} in "
                "the kernel)"
            )
    print()
    print_threads(runs)
    checked = [r.ledger for r in runs if r.ledger is not None]
    good = sum(1 for x in checked if x.ok)
    if checked:
        print(
            f"ledger vs viewers (billed TS <= received <= billed + skipped + dropped, per path): "
            f"{good}/{len(checked)} runs ok"
        )


def print_threads(runs: list[Run]) -> None:
    """Per shape, each thread's CPU in ms per second of delivery, median over rounds, per
    configuration and as the difference from `off` (where an added cost lands)."""
    for shape in SHAPES:
        name = f"{shape[0]}x{shape[1]}"
        per: dict[str, dict[str, list[float]]] = {}
        for r in runs:
            if r.shape != shape or not r.delivered or not r.wall_s:
                continue
            for thread, cpu in r.threads.items():
                per.setdefault(thread, {}).setdefault(r.config, []).append(cpu / r.wall_s * 1e3)
        print(f"{name} per thread, ms of CPU per second of delivery (median of rounds):")
        busiest = {t: max(map(statistics.median, per[t].values())) for t in per}
        for thread in sorted((t for t in per if busiest[t] >= 0.05), key=lambda t: -busiest[t]):
            cells = []
            base = statistics.median(per[thread].get("off", [0.0]))
            for config in CONFIGS:
                values = per[thread].get(config)
                if not values:
                    continue
                med = statistics.median(values)
                added = f" ({med - base:+.1f})" if config != "off" else ""
                cells.append(f"{config} {med:.1f}{added}")
            print(f"  {thread:>16}: " + ", ".join(cells))


def main() -> None:
    """Run the shapes in alternating off/on rounds and print the tables."""
    for tool in ("ffmpeg", "timeout"):
        if shutil.which(tool) is None:
            print(f"skipped: {tool} not found (Debian packages ffmpeg, coreutils)")
            return
    sys.path.insert(0, str(ROOT))
    src = operator_input()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench_operator.") as tmpdir:
        tmp = Path(tmpdir)
        for round_ in range(1, REPEAT + 1):
            # Rotate which gateway starts (and is tee'd to) first, round by round.
            shift = (round_ - 1) % len(CONFIGS)
            order = CONFIGS[shift:] + CONFIGS[:shift]
            for shape in SHAPES:
                name = f"{shape[0]}x{shape[1]}"
                print(f"{name} {'+'.join(order)}, round {round_} of {REPEAT} ...", flush=True)
                where = tmp / f"r{round_}-{name}"
                try:
                    group = run_group(order, shape, src, where)
                except Exception as exc:  # noqa: BLE001  (report it and go on)
                    group = [
                        Run(shape=shape, config=c, round=0, errors=[repr(exc)[:300]]) for c in order
                    ]
                for result in group:
                    result.round = round_
                runs += group
    print()
    print_report(runs)


if __name__ == "__main__":
    main()
