"""The compiled TS packet path (`mux._fast`) and the pure-Python one give identical results.

Each test runs the same input through both implementations (`mux._impl.use`) and compares
everything observable: the frames of every track, catalogs, problems and counters of an
import; the bytes an export writes; the per-PID payload pieces, PES events and continuity
state of the packet classifier. One test per fixture, and hypothesis cases of damaged streams.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mux import _impl, decode_frame
from mux.catalog import Catalog
from mux.es_packets import classify_small, plain_run
from mux.export import TsExporter, cut_chunks, cut_payloads
from mux.pes_assembly import Collected, PesStream
from mux.problems import ImportStats
from mux.ts_mux import PidWriter
from tests.unit.mux.support import FIXTURES, Imported, chunks, run_import
from tests.unit.mux.test_ts_import_fuzz import damage, mutation, source

T = TypeVar("T")
ALL = sorted(p.name for p in FIXTURES.glob("*.ts"))
PURE_ONLY = os.environ.get("MOQSRT_PURE_PYTHON") == "1"
needs_fast = pytest.mark.skipif(
    not _impl.compiled_available() and PURE_ONLY, reason="MOQSRT_PURE_PYTHON=1: not built"
)
PARITY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@contextmanager
def implementation(*, compiled: bool) -> Iterator[None]:
    """Run the block with the compiled or the pure-Python packet path, then restore."""
    was = _impl.NAME == "compiled"
    _impl.use(compiled=compiled)
    try:
        yield
    finally:
        _impl.use(compiled=was)


def both(run: Callable[[], T]) -> tuple[T, T]:
    """`run()` under the pure-Python path, then under the compiled one."""
    with implementation(compiled=False):
        pure = run()
    with implementation(compiled=True):
        fast = run()
    return pure, fast


def summary(result: Imported) -> tuple[Any, ...]:
    """What an import produced, comparable with ==. A section's frame is compared without its
    timestamp (`Imported.comparable`): it is the latest media time read when the section
    was, which depends on which path took the batch (the compiled build classifies large
    batches packet by packet, the pure-Python one vectorized), as it does on the chunking."""
    importer = result.importer
    return (
        result.comparable(),
        result.catalogs,
        importer.problems,
        dict(importer.problem_counts),
        astuple(importer.stats),
        {name: astuple(counts) for name, counts in importer.tracks.items()},
        (result.usage.groups, result.usage.frames, result.usage.bytes),
    )


def test_the_compiled_path_is_built_and_in_use() -> None:
    """`make test` fails when the extension did not build, unless the pure path is asked for."""
    if PURE_ONLY:
        assert _impl.NAME == "pure-python"
    else:
        assert _impl.compiled_available(), "mux._fast is not built: pip install -e . builds it"
        assert _impl.NAME == "compiled"
        assert _impl.plain_run is not plain_run
        assert _impl.classify_small is not classify_small


def test_moqsrt_version_names_the_packet_path_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    for compiled in (False, True) if _impl.compiled_available() else (False,):
        with implementation(compiled=compiled), pytest.raises(SystemExit) as done:
            main(["--version"])
        assert done.value.code == 0
        expected = "compiled" if compiled else "pure-python"
        assert f"TS packet path: {expected}" in capsys.readouterr().out


@functools.cache
def imported_pure(name: str) -> Imported:
    with implementation(compiled=False):
        return live_import(name)


def live_import(name: str) -> Imported:
    """Import fixture `name` the way the gateway reads SRT: 1316-byte messages fed in batches
    of 1, 3 and 40 messages in turn (packet by packet and run paths), then one large feed of
    the rest (the vectorized path)."""
    data = (FIXTURES / name).read_bytes()
    parts: list[bytes] = []
    pos = 0
    for k in range(len(data) // 2 // 1316):
        size = 1316 * (1, 3, 40)[k % 3]
        parts.append(data[pos : pos + size])
        pos += size
        if pos >= len(data) // 2:
            break
    parts.append(data[pos:])
    return run_import(parts)


def exported(result: Imported) -> list[tuple[bytes, int]]:
    """Every frame of `result`, merged by time, exported to TS: each chunk's bytes and time,
    then the frames cut again by `cut_payloads` from an offset (as the gateway's egress does)."""
    catalog: Catalog = result.catalogs[-1]
    frames: list[tuple[int, int, str, bytes, bool]] = []
    for order, (name, groups) in enumerate(sorted(result.tracks.items())):
        for group in groups:
            for k, frame in enumerate(group):
                frames.append((decode_frame(frame)[0], order, name, frame, k == 0))
    frames.sort(key=lambda f: (f[0], f[1]))
    exporter = TsExporter()
    exporter.set_catalog(catalog)
    out: list[tuple[bytes, int]] = []
    for k, (_, _, name, frame, keyframe) in enumerate(frames):
        for ts_frame in exporter.push_frames(name, frame, keyframe=keyframe):
            out += [(chunk.data, chunk.media_ts_us) for chunk in cut_chunks([ts_frame])]
            out += [(payload, -1) for payload in cut_payloads(ts_frame.data, 188 * (k % 8))]
    return out


@needs_fast
@pytest.mark.parametrize("name", ALL)
def test_every_fixture_imports_and_exports_the_same_with_both_paths(name: str) -> None:
    pure = imported_pure(name)
    with implementation(compiled=True):
        fast = live_import(name)
    assert summary(fast) == summary(pure)
    assert sum(map(len, pure.tracks.values())), "the fixture imported nothing"
    ts_pure, ts_fast = both(lambda: exported(pure))
    assert len(ts_pure) > 10, "nothing was exported"
    assert ts_fast == ts_pure


@needs_fast
@PARITY
@given(
    name=st.sampled_from(["h264_aac.ts", "h265_aac.ts", "opus.ts", "corrupt.ts"]),
    mutations=st.lists(mutation, max_size=8),
    size=st.sampled_from([188, 1316, 3948, 1316 * 40]),
)
def test_damaged_streams_import_the_same_with_both_paths(
    name: str, mutations: list[tuple[str, int, object]], size: int
) -> None:
    data = damage(source(name), mutations, 0)
    pure, fast = both(lambda: summary(run_import(chunks(data, size))))
    assert fast == pure


def streams_of(pids: dict[int, bool]) -> dict[int, PesStream]:
    """Fresh streams (video or not, by PID), each in the middle of an open PES."""
    out = {}
    for pid, video in pids.items():
        stream = PesStream(pid, video, "video" if video else "audio", 1 << 20)
        stream.active = True
        out[pid] = stream
    return out


def stream_state(streams: dict[int, PesStream]) -> list[tuple[Any, ...]]:
    return [(s.pid, s.last_cc, s.pending_tei) for s in streams.values()]


def collected_state(collected: dict[PesStream, Collected]) -> list[tuple[Any, ...]]:
    return [
        (s.pid, [bytes(p) for p in c.pieces], c.starts, c.events, c.rows, c.stuffed)
        for s, c in collected.items()
    ]


@needs_fast
@PARITY
@given(
    name=st.sampled_from(["h264_aac.ts", "h265_aac.ts", "mid_gop.ts", "corrupt.ts"]),
    start=st.integers(0, 250),
    count=st.integers(1, 60),
    flips=st.lists(st.tuples(st.integers(0, 60 * 188 - 1), st.integers(1, 255)), max_size=6),
    prime=st.booleans(),
)
def test_the_packet_classifier_finds_the_same_pieces_and_events(
    name: str, start: int, count: int, flips: list[tuple[int, int]], prime: bool
) -> None:
    """`classify_small` and `plain_run` on aligned packets with damaged headers and payloads
    (bytes flipped anywhere but a sync byte): same pieces, events, rows, stuffing, counters."""
    data = bytearray(source(name)[start * 188 : (start + count) * 188])
    for where, value in flips:
        if where < len(data) and where % 188:
            data[where] ^= value
    raw = bytes(data)
    pids = {0x100: True, 0x101: False}

    def fresh() -> dict[int, PesStream]:
        streams = streams_of(pids)
        if prime:  # continuity known: runs and plain_run can apply
            for stream in streams.values():
                stream.last_cc = raw[3] - 1 & 0x0F if raw[2] == stream.pid & 0xFF else 0
        return streams

    def classify(impl: Any) -> tuple[Any, ...]:
        streams = fresh()
        run = impl.plain_run(raw, streams, 0x1000)
        ran = None if run is None else (run[0].pid, run[1], stream_state(streams))
        streams = fresh()
        stats = ImportStats()
        collected: dict[PesStream, Collected] = {}
        i = 0
        stops = []
        while i < count:
            i, handled, in_runs, _ = impl.classify_small(
                raw, i, streams, 0x1000, collected, stats, None
            )
            stops.append((i, handled, in_runs))
            i += 1
        return ran, stops, collected_state(collected), stream_state(streams), astuple(stats)

    pure, fast = both(lambda: classify(_impl))
    if pure[0] is not None:
        assert fast[0] == pure[0]  # the compiled plain_run may also take runs past 64 packets
    assert fast[1:] == pure[1:]


@needs_fast
@PARITY
@given(
    body=st.integers(0, 3000),
    prefix=st.integers(9, 182),
    cc=st.integers(0, 15),
    pid=st.sampled_from([0x20, 0x100, 0x1FFE]),
    random_access=st.booleans(),
    signed=st.booleans(),
)
def test_pes_packetizing_writes_the_same_bytes(
    body: int, prefix: int, cc: int, pid: int, random_access: bool, signed: bool
) -> None:
    """Same packets and counter; the body may be a view of another item format."""
    if random_access and prefix > 182 - 2:
        prefix = 180
    payload = bytes(range(256)) * (body // 256 + 1)

    def write() -> tuple[bytes, int, int]:
        writer = PidWriter(pid)
        writer.cc = cc
        out = bytearray(b"\x47before")
        count = writer.write_pes(
            out,
            bytes([7]) * prefix,
            memoryview(payload)[:body].cast("b") if signed else memoryview(payload)[:body],
            random_access=random_access,
        )
        return bytes(out), count, writer.cc

    pure, fast = both(write)
    assert fast == pure
    assert len(pure[0]) == 7 + 188 * pure[1]
