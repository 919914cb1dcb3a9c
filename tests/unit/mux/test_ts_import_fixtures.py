"""Importing every committed fixture yields exactly what PyAV (libavformat) finds in it.

Expected numbers come from `tests.media.expected_counts` (PyAV demux), never from the importer.
"""

from __future__ import annotations

import functools
import itertools

import pytest

from mux import decode_frame
from mux.nal import split_annexb
from tests.media import MediaCounts, expected_counts
from tests.unit.mux.support import FIXTURES, Imported, chunks, import_file, run_import

FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.ts"))
CODEC_PREFIX = {
    "h264": "avc3.",
    "hevc": "hev1.",
    "aac": "mp4a.40.",
    "mp2": "mp2",
    "ac3": "ac-3",
    "eac3": "ec-3",
    "opus": "opus",
}
SUFFIX = {
    "h264": ".avc3",
    "hevc": ".hev1",
    "aac": ".aac",
    "mp2": ".mp2",
    "ac3": ".ac3",
    "eac3": ".eac3",
    "opus": ".opus",
    "mpeg2video": ".mpeg2video",
}


@functools.cache
def expected(name: str) -> dict[str, MediaCounts]:
    return expected_counts(FIXTURES / name)


@functools.cache
def imported(name: str) -> Imported:
    return import_file(name)


def test_every_named_fixture_exists_and_is_small() -> None:
    wanted = {
        "h264_aac.ts", "h265_aac.ts", "aac_only.ts", "h264_only.ts", "h264_mp2.ts",
        "pts_wrap.ts", "mid_gop.ts", "corrupt.ts",
    }  # fmt: skip
    assert wanted <= set(FIXTURE_NAMES)
    for name in FIXTURE_NAMES:
        assert (FIXTURES / name).stat().st_size < 1_000_000, name


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_frame_and_group_counts_match_pyav(name: str) -> None:
    result = imported(name)
    want = expected(name)
    # PyAV's audio and video streams, plus the data streams carried opaquely
    # (tests/unit/mux/test_opaque.py counts those against ffprobe)
    data = {n for n in result.opaque_tracks() if not n.endswith(".mpeg2video")}
    assert len(result.tracks) == len(want) + len(data)
    for pid_key, counts in want.items():
        track = result.track_of_pid(counts.pid)
        assert track.endswith(SUFFIX[counts.codec]), (pid_key, track)
        groups = result.tracks[track]
        assert sum(len(g) for g in groups) == counts.frames, (name, track)
        assert len(groups) == counts.groups, (name, track)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_catalog_fields_match_pyav(name: str) -> None:
    result = imported(name)
    catalog = result.catalogs[-1]
    assert result.importer.catalog == catalog
    assert set(catalog.track_names()) == set(result.tracks) - result.opaque_tracks()
    described = catalog.extra["mpegts"]["tracks"]
    assert set(described) == set(result.tracks)
    for counts in expected(name).values():
        track = result.track_of_pid(counts.pid)
        assert described[track]["pid"] == counts.pid
        if counts.codec == "mpeg2video":  # carried opaquely: described, not a rendition
            assert described[track]["units"] == "pes"
            assert described[track]["video"] is True
            continue
        if counts.kind == "video":
            video = catalog.video[track]
            assert video.codec.startswith(CODEC_PREFIX[counts.codec])
            assert (video.coded_width, video.coded_height) == (counts.width, counts.height)
            assert video.description is None
        else:
            audio = catalog.audio[track]
            assert audio.codec.startswith(CODEC_PREFIX[counts.codec])
            assert audio.sample_rate == counts.sample_rate
            assert audio.channels == counts.channels
        assert (catalog.video.get(track) or catalog.audio[track]).container.kind == "legacy"


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_timestamps_are_the_pes_pts_in_microseconds(name: str) -> None:
    result = imported(name)
    for counts in expected(name).values():
        if counts.kind != "audio" or counts.first_pts_90k is None:
            continue
        first_us = result.timestamps_us(result.track_of_pid(counts.pid))[0]
        assert abs(first_us * 9 // 100 - counts.first_pts_90k % (1 << 33)) <= 1


def test_catalog_is_published_once_for_a_steady_stream() -> None:
    result = imported("h264_aac.ts")
    assert len(result.catalogs) == 1
    assert result.importer.stats.catalog_versions == 1


def test_h264_catalog_has_the_sps_profile_and_level() -> None:
    catalog = imported("h264_aac.ts").catalogs[-1]
    (video,) = catalog.video.values()
    assert video.codec == "avc3.64001e"  # High profile, level 3.0, as x264 chose
    (only,) = imported("h264_only.ts").catalogs[-1].video.values()
    assert only.codec.startswith("avc3.42")  # Constrained Baseline


def test_aac_description_is_the_audio_specific_config() -> None:
    (audio,) = imported("h264_aac.ts").catalogs[-1].audio.values()
    assert audio.description == bytes.fromhex("1190")  # AAC-LC, 48 kHz, stereo
    (mono,) = imported("aac_only.ts").catalogs[-1].audio.values()
    assert mono.description == bytes.fromhex("1208")  # AAC-LC, 44.1 kHz, mono


@pytest.mark.parametrize("name", ["h264_aac.ts", "h265_aac.ts", "mid_gop.ts", "pts_wrap.ts"])
def test_every_video_group_starts_with_a_self_contained_keyframe(name: str) -> None:
    result = imported(name)
    for track, groups in result.tracks.items():
        if not track.endswith((".avc3", ".hev1")):
            continue
        h265 = track.endswith(".hev1")
        for group in groups:
            _, payload = decode_frame(group[0])
            nals = split_annexb(bytes(payload))
            kinds = [(n[0] >> 1) & 0x3F if h265 else n[0] & 0x1F for n in nals]
            needed = {32, 33, 34} if h265 else {7, 8}
            assert needed <= set(kinds), (track, kinds)
            first_slice = next(k for k in kinds if (k < 32 if h265 else 1 <= k <= 5))
            assert (16 <= first_slice <= 23) if h265 else first_slice == 5


def test_timestamps_are_monotonic_across_the_33_bit_wrap() -> None:
    result = imported("pts_wrap.ts")
    audio = result.timestamps_us(result.track_of_pid(0x101))
    assert all(b > a for a, b in itertools.pairwise(audio))
    assert audio[0] < (1 << 33) * 100 // 9 < audio[-1]  # it really crossed 2**33 ticks
    video = result.tracks[result.track_of_pid(0x100)]
    keys = [decode_frame(g[0])[0] for g in video]
    assert all(b > a for a, b in itertools.pairwise(keys))


def test_metered_ingress_counts_every_group_frame_and_byte_written() -> None:
    result = imported("h264_aac.ts")
    frames = [f for groups in result.tracks.values() for g in groups for f in g]
    catalog_bytes = len(result.importer.catalog.to_json()) if result.importer.catalog else 0
    assert result.usage.frames == len(frames) + 1
    assert result.usage.groups == sum(len(g) for g in result.tracks.values()) + 1
    assert result.usage.bytes == sum(len(f) for f in frames) + catalog_bytes
    for name, counts in result.importer.tracks.items():
        assert counts.frames == sum(len(g) for g in result.tracks[name])
        assert counts.groups == len(result.tracks[name])
        assert counts.bytes == sum(len(f) for g in result.tracks[name] for f in g)


def test_clean_fixtures_report_no_problems() -> None:
    for name in ["h264_aac.ts", "h265_aac.ts", "aac_only.ts", "h264_mp2.ts", "opus.ts"]:
        assert imported(name).importer.problems == [], name


def test_corrupt_fixture_reports_what_is_wrong_in_the_stream() -> None:
    importer = imported("corrupt.ts").importer
    counts = importer.problem_counts
    assert counts["continuity_gap"] == 6
    assert counts["transport_error"] == 3
    assert counts["sync_lost"] == 6
    messages = [p.message for p in importer.problems]
    assert any(
        m.startswith("PID 0x100: continuity gap, expected CC")
        and "dropped a partial video PES" in m
        for m in messages
    )
    assert any("transport_error_indicator" in m for m in messages)
    assert any(m.startswith("lost packet sync at byte ") for m in messages)


def test_mid_gop_start_drops_the_pictures_before_the_first_keyframe() -> None:
    result = imported("mid_gop.ts")
    want = expected("mid_gop.ts")["0x100"]
    assert want.packets > want.frames  # the fixture does start mid-GOP
    assert result.importer.stats.frames_before_keyframe == want.packets - want.frames


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("size", [7, 188, 1316])
def test_chunking_does_not_change_the_tracks(name: str, size: int) -> None:
    whole = imported(name)
    split = import_file(name, size)
    assert split.comparable() == whole.comparable()
    assert split.catalogs[-1] == whole.catalogs[-1]
    assert split.importer.problem_counts == whole.importer.problem_counts


@pytest.mark.parametrize("name", ["corrupt.ts", "mid_gop.ts", "opus.ts"])
def test_byte_by_byte_feeding_gives_the_same_tracks(name: str) -> None:
    whole = imported(name)
    split = import_file(name, 1)
    assert split.comparable() == whole.comparable()
    assert split.importer.problems == whole.importer.problems


def test_feeding_everything_at_once_equals_65536_byte_chunks() -> None:
    data = (FIXTURES / "h264_aac.ts").read_bytes()
    at_once = run_import([data])
    assert at_once.tracks == imported("h264_aac.ts").tracks
    assert at_once.importer.problems == []  # no stream looks late when one batch holds all
    assert run_import(chunks(data, 65536)).tracks == imported("h264_aac.ts").tracks


def test_duplicated_packets_are_ignored() -> None:
    data = (FIXTURES / "h264_aac.ts").read_bytes()
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    doubled = b"".join(p + p if i % 5 == 0 else p for i, p in enumerate(packets))
    result = run_import(chunks(doubled, 4096))
    assert result.tracks == imported("h264_aac.ts").tracks
    assert result.importer.stats.duplicate_packets > 100
    assert result.importer.problems == []
