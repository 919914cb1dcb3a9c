"""Property tests: damaged input never raises out of the importer, every frame it writes belongs
to a track of a published catalog, and chunking never changes the result."""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mux import decode_frame
from tests.unit.mux.support import FIXTURES, Imported, chunks, run_import

SOURCES = ["h264_aac.ts", "h265_aac.ts", "h264_mp2.ts", "opus.ts", "ac3.ts", "eac3.ts"]
PREFIX_PACKETS = 300

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@functools.cache
def source(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()[: PREFIX_PACKETS * 188]


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=400)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 400)),
)


def damage(data: bytes, mutations: list[tuple[str, int, object]], truncate: int) -> bytes:
    out = bytearray(data)
    for kind, where, arg in mutations:
        pos = where % (len(out) + 1)
        if kind == "flip" and pos < len(out):
            assert isinstance(arg, int)
            out[pos] ^= arg
        elif kind == "insert":
            assert isinstance(arg, bytes)
            out[pos:pos] = arg
        elif kind == "delete":
            assert isinstance(arg, int)
            del out[pos : pos + arg]
    return bytes(out[: max(0, len(out) - truncate)])


def check_consistent(result: Imported) -> None:
    """Every frame is a legacy frame of a track some published catalog names."""
    named = {name for catalog in result.catalogs for name in catalog.track_names()}
    for name, groups in result.tracks.items():
        frames = [f for g in groups for f in g]
        if frames:
            assert name in named, name
        for frame in frames:
            decode_frame(frame)
        if name.endswith((".avc3", ".hev1")):
            assert all(groups), "a video group has no frame"
    assert result.importer.catalog is not None  # finish always publishes one


@FUZZ
@given(
    name=st.sampled_from(SOURCES),
    mutations=st.lists(mutation, max_size=8),
    truncate=st.integers(0, 2000),
)
def test_damaged_streams_never_raise_and_frames_belong_to_the_catalog(
    name: str, mutations: list[tuple[str, int, object]], truncate: int
) -> None:
    data = damage(source(name), mutations, truncate)
    check_consistent(run_import([data]))


@FUZZ
@given(
    name=st.sampled_from(SOURCES),
    mutations=st.lists(mutation, max_size=5),
    cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=40),
)
def test_damaged_streams_import_the_same_however_they_are_chunked(
    name: str, mutations: list[tuple[str, int, object]], cuts: list[int]
) -> None:
    data = damage(source(name), mutations, 0)
    whole = run_import([data])
    parts = []
    pos = 0
    for size in cuts:
        parts.append(data[pos : pos + size])
        pos += size
    parts.append(data[pos:])
    split = run_import(parts)
    assert split.tracks == whole.tracks
    assert split.catalogs == whole.catalogs
    assert split.importer.problems == whole.importer.problems


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.binary(max_size=5000), st.integers(1, 400))
def test_random_bytes_never_raise(data: bytes, size: int) -> None:
    result = run_import(chunks(b"\x47" + data, size))
    check_consistent(result)
