"""Usage ledger flush CPU (issue 11's cost goal), on a real file under the working directory's
`var/` (not tmpfs): one ingress and one egress entry per live path, every counter changing
every flush.

- `inner`: CPU of one flush on the ledger thread, flushes back to back (warm caches), with the
  stats snapshot's share (model code) beside it.
- `periodic`: the flush as it runs in production, on the ledger thread's own timer with the
  event loop idle: CPU per interval of the ledger thread and of the loop thread. The peer is a
  bare thread waking on the same timer (`SimpleQueue.get(timeout)`), the floor of any timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from gateway.ledger import Ledger
from model import StatsGuard, StatsHandle

INTERVAL_S = 0.02
PERIODIC_S = 3.0


def _stats(paths: int) -> tuple[StatsHandle, list[StatsGuard]]:
    stats = StatsHandle("bench")
    guards: list[StatsGuard] = []
    for i in range(paths):
        broadcast = stats.broadcast(f"live/p{i}", tier="pro")
        guards += [broadcast.ingress(), broadcast.egress(f"v{i}")]
    return stats, guards


def _bump(guards: list[StatsGuard]) -> None:
    for guard in guards:
        meter = guard.meter
        meter.groups += 1
        meter.frames += 30
        meter.bytes += 150_000


async def _inner(db: Path, paths: int, n: int = 1000) -> tuple[float, float]:
    stats, guards = _stats(paths)
    ledger = await Ledger.open(db, stats)

    def work() -> tuple[float, float]:
        flush = ledger._flush_in_thread
        for _ in range(100):
            _bump(guards)
            flush()
        spent = snap = 0.0
        for _ in range(n):
            _bump(guards)
            started = time.thread_time()
            flush()
            spent += time.thread_time() - started
            started = time.thread_time()
            stats.snapshot()
            snap += time.thread_time() - started
        return spent / n * 1e3, snap / n * 1e3

    try:
        return await ledger._submit(work)
    finally:
        for guard in guards:
            guard.close()
        await ledger.aclose()


async def _periodic(db: Path, paths: int) -> tuple[float, float]:
    stats, guards = _stats(paths)
    ledger = await Ledger.open(db, stats, interval_s=INTERVAL_S)
    stop = threading.Event()

    def bumper() -> None:  # off the measured threads
        while not stop.wait(INTERVAL_S / 3):
            _bump(guards)

    thread = threading.Thread(target=bumper)
    thread.start()
    ledger.start()
    try:
        await asyncio.sleep(INTERVAL_S * 5)
        flushes = ledger.flushes
        ledger_cpu = await ledger._submit(time.thread_time)
        loop_cpu = time.thread_time()
        await asyncio.sleep(PERIODIC_S)
        loop_cpu = time.thread_time() - loop_cpu
        ledger_cpu = await ledger._submit(time.thread_time) - ledger_cpu
        flushes = ledger.flushes - flushes
    finally:
        stop.set()
        thread.join()
        for guard in guards:
            guard.close()
        await ledger.aclose()
    return ledger_cpu / flushes * 1e3, loop_cpu / flushes * 1e3


def _bare_wake() -> float:
    spent: list[float] = []

    def run() -> None:
        calls: queue.SimpleQueue[None] = queue.SimpleQueue()
        started = time.thread_time()
        for _ in range(100):
            with contextlib.suppress(queue.Empty):
                calls.get(timeout=INTERVAL_S)
        spent.append((time.thread_time() - started) / 100 * 1e3)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return spent[0]


async def _main(root: Path) -> None:
    try:
        for paths in (1, 4):
            runs = [await _inner(root / f"inner-{paths}-{i}.sqlite3", paths) for i in range(3)]
            flush = statistics.median(r[0] for r in runs)
            snap = statistics.median(r[1] for r in runs)
            print(f"inner    {paths} path(s): {flush:.3f} ms CPU/flush, snapshot {snap:.3f} ms")
        floor = statistics.median(_bare_wake() for _ in range(3))
        for paths in (1, 4):
            runs = [
                await _periodic(root / f"periodic-{paths}-{i}.sqlite3", paths) for i in range(3)
            ]
            thread_ms = statistics.median(r[0] for r in runs)
            loop_ms = statistics.median(r[1] for r in runs)
            print(
                f"periodic {paths} path(s): ledger thread {thread_ms:.3f} ms CPU/flush"
                f" (bare timer wake {floor:.3f}), event loop {loop_ms:.4f} ms CPU/flush"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    """Print the ledger's flush CPU (see the module docstring)."""
    Path("var").mkdir(exist_ok=True)
    asyncio.run(_main(Path(tempfile.mkdtemp(prefix="bench-ledger-", dir="var"))))


if __name__ == "__main__":
    main()
