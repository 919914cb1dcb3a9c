"""TsExporter: its output parsed back with an independent reader and decoded with PyAV."""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mux.aac import adts_fields_from_asc, adts_fields_from_params
from mux.catalog import AudioConfig, Catalog, Container, VideoConfig
from mux.container import encode_frame
from mux.errors import Malformed
from mux.export import CHUNK_BYTES, ExportProblemKind, TsChunk, TsExporter
from mux.h264 import parse_avcc
from mux.h265 import parse_hvcc
from mux.nal import length_prefixed_to_annexb
from mux.psi import crc32_mpeg2
from mux.ts_mux import PidWriter
from tests.unit.mux.test_export_support import (
    EncodedTrack,
    Packet,
    Push,
    catalog_of,
    check_continuity,
    crc32_mpeg2_ref,
    decode_ts,
    encode_audio,
    encode_video,
    interleave,
    nal_types,
    parse_packets,
    parse_pat,
    parse_pmt,
    pes_units,
    psi_sections,
    ts_of,
)

TICK_US = 1_000_000 / 90_000


@functools.cache
def h264_aac() -> tuple[EncodedTrack, EncodedTrack]:
    """3 s of 160x96 H.264 (30 fps, GOP 1 s, 3 B-frames) and AAC 48 kHz stereo."""
    return encode_video(frames=90), encode_audio(seconds=3.0)


def export(
    pushes: list[Push], catalog: Catalog, exporter: TsExporter | None = None
) -> tuple[TsExporter, list[TsChunk]]:
    exporter = exporter or TsExporter()
    exporter.set_catalog(catalog)
    chunks = []
    for p in pushes:
        chunks += exporter.push(p.track, p.frame, keyframe=p.keyframe)
    return exporter, chunks


@functools.cache
def exported() -> tuple[TsExporter, tuple[TsChunk, ...], tuple[Packet, ...]]:
    video, audio = h264_aac()
    exporter, chunks = export(interleave([video, audio]), catalog_of([video, audio]))
    return exporter, tuple(chunks), tuple(parse_packets(ts_of(chunks)))


def pids() -> dict[str, int]:
    return exported()[0].track_pids()


def test_chunks_are_whole_packets_of_at_most_1316_bytes_with_non_decreasing_times() -> None:
    _, chunks, _ = exported()
    assert chunks
    assert all(0 < len(c.data) <= CHUNK_BYTES and len(c.data) % 188 == 0 for c in chunks)
    times = [c.media_ts_us for c in chunks]
    assert times == sorted(times)
    assert max(len(c.data) for c in chunks) == CHUNK_BYTES


def test_every_packet_is_synced_and_continuity_counts_per_pid() -> None:
    _, _, packets = exported()
    check_continuity(packets)  # also parse_packets asserted sync bytes and AF shape
    assert {p.pid for p in packets} == {0, 0x1000, *pids().values()}


def test_pat_and_pmt_have_valid_crcs_and_describe_the_program() -> None:
    _, _, packets = exported()
    pats = psi_sections(packets, 0)
    assert pats
    assert all(parse_pat(s) == {1: 0x1000} for s in pats)
    pmts = psi_sections(packets, 0x1000)
    assert len(pmts) == len(pats)
    pcr_pid, streams = parse_pmt(pmts[0])
    assert pcr_pid == pids()["0.avc3"]
    assert [(s.stream_type, s.pid) for s in streams] == [
        (0x1B, pids()["0.avc3"]),
        (0x0F, pids()["1.aac"]),
    ]


def test_writer_crc_matches_the_reference_crc() -> None:
    for data in (b"", b"123456789", bytes(range(256)) * 3):
        assert crc32_mpeg2(data) == crc32_mpeg2_ref(data)


def test_stream_starts_with_pat_pmt_pcr_then_the_keyframe() -> None:
    _, _, packets = exported()
    vpid = pids()["0.avc3"]
    assert [p.pid for p in packets[:3]] == [0, 0x1000, vpid]
    assert packets[2].pcr_27m is not None
    assert packets[2].afc == 2
    first_pes = pes_units(packets, vpid)[0]
    assert first_pes.index == 3
    assert first_pes.random_access
    assert 5 in nal_types(first_pes.data)  # IDR
    assert nal_types(first_pes.data)[:3] == [9, 7, 8]  # AUD, SPS, PPS


def test_pat_and_pmt_precede_every_keyframe_and_come_at_least_every_500_ms() -> None:
    _, _, packets = exported()
    video, _ = h264_aac()
    psi_at = [s.index for s in psi_sections(packets, 0)]
    pes = pes_units(packets, pids()["0.avc3"])
    keyframes = [v for v in pes if v.random_access]
    assert len(keyframes) == sum(f.keyframe for f in video.frames) == 3
    kinds = {p.index: p for p in packets}
    for key in keyframes:
        before = max(i for i in psi_at if i < key.index)
        between = [kinds[i] for i in range(before + 2, key.index)]
        assert all(p.afc == 2 and p.pcr_27m is not None for p in between), "only PCR between"
    # media time between PSI repetitions: DTS of the PES following each PSI
    times = []
    for at in psi_at:
        following = [v for v in pes if v.index > at]
        if following:
            v = following[0]
            times.append(v.dts_90k if v.dts_90k is not None else v.pts_90k)
    gaps = [b - a for a, b in itertools.pairwise(times) if a is not None and b is not None]
    frame_90k = 3000
    assert max(gaps) <= 500 * 90 + frame_90k


def test_pcr_runs_on_a_25_ms_grid_below_every_following_dts() -> None:
    _, _, packets = exported()
    vpid = pids()["0.avc3"]
    pcrs = [(p.index, p.pcr_27m) for p in packets if p.pcr_27m is not None]
    assert all(p.pid == vpid for p in packets if p.pcr_27m is not None)
    values = [v for _, v in pcrs]
    steps = {b - a for a, b in itertools.pairwise(values)}
    assert steps == {25 * 27_000}, "one PCR per 25 ms of media, no gaps in a steady stream"
    assert len(values) >= 3 * 40 - 2
    for pes in pes_units(packets, vpid) + pes_units(packets, pids()["1.aac"]):
        before = [v for i, v in pcrs if i < pes.index]
        decode_at = pes.dts_90k if pes.dts_90k is not None else pes.pts_90k
        assert decode_at is not None
        assert before
        assert before[-1] is not None
        assert before[-1] <= decode_at * 300


def test_pts_and_dts_carry_the_input_timestamps() -> None:
    _, _, packets = exported()
    video, audio = h264_aac()
    vpes = pes_units(packets, pids()["0.avc3"])
    assert len(vpes) == len(video.frames)
    last_dts = -1
    for pes, frame in zip(vpes, video.frames, strict=True):
        assert pes.stream_id == 0xE0
        assert pes.pts_90k is not None
        assert abs(pes.pts_90k * 1_000_000 / 90_000 - frame.pts_us) <= TICK_US
        dts = pes.dts_90k if pes.dts_90k is not None else pes.pts_90k
        assert last_dts < dts <= pes.pts_90k, "DTS strictly increases and never passes PTS"
        last_dts = dts
    apes = pes_units(packets, pids()["1.aac"])
    assert len(apes) == len(audio.frames)
    for pes, frame in zip(apes, audio.frames, strict=True):
        assert pes.stream_id == 0xC0
        assert pes.dts_90k is None
        assert pes.pts_90k is not None
        assert abs(pes.pts_90k * 1_000_000 / 90_000 - frame.pts_us) <= TICK_US


def test_aac_frames_get_an_adts_header_matching_the_config() -> None:
    _, _, packets = exported()
    _, audio = h264_aac()
    for pes, frame in zip(pes_units(packets, pids()["1.aac"]), audio.frames, strict=True):
        adts = pes.data[:7]
        assert adts[0] == 0xFF, "ADTS sync"
        assert adts[1] & 0xF6 == 0xF0, "ADTS sync, layer 0"
        assert adts[1] & 1, "protection_absent (no CRC)"
        assert (adts[2] >> 6) == 1, "AAC-LC"
        assert ((adts[2] >> 2) & 0xF) == 3, "48 kHz"
        assert ((adts[2] & 1) << 2 | adts[3] >> 6) == 2, "stereo"
        length = ((adts[3] & 3) << 11) | (adts[4] << 3) | (adts[5] >> 5)
        assert length == 7 + len(frame.data) == len(pes.data)
        assert pes.data[7:] == frame.data


def test_output_decodes_every_frame_with_pyav_without_errors() -> None:
    _, chunks, _ = exported()
    video, audio = h264_aac()
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.video_codec == "h264"
    assert decoded.audio_codec == "aac"
    assert decoded.video_frames == len(video.frames)
    assert decoded.audio_frames == len(audio.frames)
    assert decoded.first_video_key is True
    expected = sorted(f.pts_us for f in video.frames)
    assert all(abs(a - b) <= TICK_US for a, b in zip(decoded.video_pts_us, expected, strict=True))


def test_audio_before_the_first_keyframe_is_held_and_kept_from_its_dts_on() -> None:
    video, audio = h264_aac()
    delay_us = 300_000
    shifted = replace(
        video,
        frames=[
            replace(f, pts_us=f.pts_us + delay_us, dts_us=f.dts_us + delay_us) for f in video.frames
        ],
    )
    exporter, chunks = export(interleave([shifted, audio]), catalog_of([shifted, audio]))
    packets = parse_packets(ts_of(chunks))
    apes = pes_units(packets, exporter.track_pids()["1.aac"])
    vpes = pes_units(packets, exporter.track_pids()["0.avc3"])
    assert vpes[0].index < apes[0].index, "the keyframe comes first"
    start_dts, start_pts = vpes[0].dts_90k, vpes[0].pts_90k
    assert start_dts is not None
    assert start_pts is not None
    assert start_dts == start_pts - 150 * 90  # the default reorder reserve
    kept = [f for f in audio.frames if f.pts_us * 90_000 // 1_000_000 >= start_dts - 1]
    assert len(apes) == len(kept) < len(audio.frames)
    assert apes[0].pts_90k is not None
    assert abs(apes[0].pts_90k * TICK_US - kept[0].pts_us) <= TICK_US
    assert apes[0].pts_90k < start_pts, "held audio older than the keyframe's PTS"
    assert exporter.stats.frames_dropped == len(audio.frames) - len(kept)
    check_continuity(packets)
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.audio_frames == len(kept)


def test_a_late_joiner_starts_at_a_keyframe_and_decodes_from_its_first_byte() -> None:
    video, audio = h264_aac()
    pushes = interleave([video, audio])
    # join in the middle of the first GOP: the first pushes it sees are deltas and audio
    middle = next(
        i
        for i, p in enumerate(pushes)
        if p.track == "0.avc3" and p.source.dts_us > video.frames[10].dts_us
    )
    exporter, chunks = export(pushes[middle:], catalog_of([video, audio]))
    data = ts_of(chunks)
    packets = parse_packets(data)
    assert [p.pid for p in packets[:2]] == [0, 0x1000]
    vpes = pes_units(packets, exporter.track_pids()["0.avc3"])
    assert vpes[0].random_access
    decoded = decode_ts(data)
    assert decoded.errors == []
    assert decoded.first_video_key is True
    remaining = [f for f in video.frames if f.dts_us >= video.frames[30].dts_us]
    assert decoded.video_frames == len(remaining) == 60


def test_audio_only_broadcast_starts_at_once() -> None:
    _, audio = h264_aac()
    exporter, chunks = export(interleave([audio]), catalog_of([audio]))
    packets = parse_packets(ts_of(chunks))
    apid = exporter.track_pids()["1.aac"]
    assert [p.pid for p in packets[:3]] == [0, 0x1000, apid]
    assert packets[2].pcr_27m is not None
    pcr_pid, _ = parse_pmt(psi_sections(packets, 0x1000)[0])
    assert pcr_pid == apid
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.audio_frames == len(audio.frames)


def test_a_catalog_change_bumps_the_pmt_version_and_repeats_it_before_the_next_frame() -> None:
    video, audio = h264_aac()
    catalog = catalog_of([video, audio])
    pushes = interleave([video, audio])
    exporter = TsExporter()
    exporter.set_catalog(catalog)
    chunks = []
    for p in pushes[:20]:
        chunks += exporter.push(p.track, p.frame, keyframe=p.keyframe)
    exporter.set_catalog(Catalog.from_json(catalog.to_json()))  # same content: no change
    assert exporter.pmt_version == 0
    audio2 = replace(audio.audio, bitrate=128_000, sample_rate=44100) if audio.audio else None
    assert audio2 is not None
    changed = Catalog(video=dict(catalog.video), audio={"1.aac": audio2})
    exporter.set_catalog(changed)
    assert exporter.pmt_version == 1
    mark = len(chunks)
    chunks += exporter.push(pushes[20].track, pushes[20].frame, keyframe=pushes[20].keyframe)
    after = parse_packets(ts_of(chunks[mark:]))
    assert [p.pid for p in after[:2]] == [0, 0x1000]
    versions = [s.version for s in psi_sections(parse_packets(ts_of(chunks)), 0x1000)]
    assert versions[0] == 0
    assert versions[-1] == 1
    check_continuity(parse_packets(ts_of(chunks)))


def test_unsupported_codecs_are_skipped_with_a_problem_and_the_rest_still_exports() -> None:
    video, audio = h264_aac()
    catalog = catalog_of([video, audio])
    catalog.video["9.av01"] = VideoConfig(codec="av01.0.08M.08")
    catalog.audio["8.flac"] = AudioConfig(codec="flac", sample_rate=48000, channels=2)
    catalog.audio["7.cmaf"] = AudioConfig(
        codec="mp4a.40.2", sample_rate=48000, channels=2, container=Container(kind="cmaf")
    )
    exporter, chunks = export(interleave([video, audio]), catalog)
    kinds = {(p.kind, p.track) for p in exporter.problems}
    assert kinds == {
        (ExportProblemKind.UNSUPPORTED_CODEC, "9.av01"),
        (ExportProblemKind.UNSUPPORTED_CODEC, "8.flac"),
        (ExportProblemKind.UNSUPPORTED_CONTAINER, "7.cmaf"),
    }
    assert set(exporter.track_pids()) == {"0.avc3", "1.aac"}
    assert exporter.push("9.av01", encode_frame(10_000_000, b"x"), keyframe=True) == []
    decoded = decode_ts(ts_of(chunks))
    assert decoded.video_frames == len(video.frames)
    assert decoded.errors == []


def test_only_unsupported_video_makes_an_audio_only_stream() -> None:
    _, audio = h264_aac()
    catalog = catalog_of([audio])
    catalog.video["0.vp09"] = VideoConfig(codec="vp09.00.10.08")
    _, chunks = export(interleave([audio]), catalog)
    assert decode_ts(ts_of(chunks)).audio_frames == len(audio.frames)


def to_length_prefixed(annexb: bytes) -> tuple[bytes, list[bytes]]:
    """Split Annex-B into NALs; return (4-byte length-prefixed form, parameter sets)."""
    nals = []
    i = annexb.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = annexb.find(b"\x00\x00\x01", start)
        end = len(annexb) if j < 0 else j - (1 if annexb[j - 1] == 0 else 0)
        nals.append(annexb[start:end])
        i = j
    params = [n for n in nals if n[0] & 0x1F in (7, 8)]
    rest = [n for n in nals if n[0] & 0x1F not in (7, 8, 9)]
    return b"".join(len(n).to_bytes(4, "big") + n for n in rest), params


def test_avc1_with_description_becomes_annexb_with_parameter_sets_on_keyframes() -> None:
    video, audio = h264_aac()
    converted = []
    sps = pps = b""
    for f in video.frames:
        data, params = to_length_prefixed(f.data)
        for p in params:
            if p[0] & 0x1F == 7:
                sps = p
            else:
                pps = p
        converted.append(replace(f, data=data))
    avcc = (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )
    assert parse_avcc(avcc) == (4, b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps)
    avc1 = EncodedTrack(
        "0.avc1", converted, video=VideoConfig(codec="avc1.64000c", description=avcc)
    )
    exporter, chunks = export(interleave([avc1, audio]), catalog_of([avc1, audio]))
    packets = parse_packets(ts_of(chunks))
    vpes = pes_units(packets, exporter.track_pids()["0.avc1"])
    assert nal_types(vpes[0].data)[:3] == [9, 7, 8]
    assert 7 not in nal_types(vpes[1].data)
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.video_frames == len(video.frames)


def test_length_prefixed_to_annexb_rejects_a_truncated_nal() -> None:
    assert length_prefixed_to_annexb(b"\x00\x02ab\x00\x01c", 2) == b"\0\0\0\1ab\0\0\0\1c"
    with pytest.raises(ValueError, match="runs past"):
        length_prefixed_to_annexb(b"\x00\x05ab", 2)


@pytest.mark.parametrize(
    ("asc", "fields"),
    [
        ("1190", (1, 3, 2)),  # AAC-LC 48 kHz stereo
        ("1210", (1, 4, 2)),  # AAC-LC 44.1 kHz stereo
        ("1188", (1, 3, 1)),  # AAC-LC 48 kHz mono
        ("2b1188", (1, 6, 2)),  # HE-AAC (explicit SBR): 24 kHz AAC-LC core, stereo
        ("0f80562210", (0, 4, 2)),  # AAC Main, 44100 Hz given by the 24-bit escape
    ],
)
def test_adts_fields_come_from_the_audio_specific_config(
    asc: str, fields: tuple[int, int, int]
) -> None:
    assert adts_fields_from_asc(bytes.fromhex(asc)) == fields


def test_adts_fields_refuse_what_adts_cannot_carry() -> None:
    with pytest.raises(ValueError, match="object type 23"):
        adts_fields_from_asc(bytes.fromhex("b990"))  # ER AAC-LD
    with pytest.raises(ValueError, match="sample rate"):
        adts_fields_from_params(2, 47000, 2)
    assert adts_fields_from_params(5, 48000, 2) == (1, 6, 2)


def test_malformed_frames_and_unknown_tracks_are_dropped_not_raised() -> None:
    video, audio = h264_aac()
    exporter = TsExporter()
    exporter.set_catalog(catalog_of([video, audio]))
    assert exporter.push("0.avc3", b"\xc0", keyframe=True) == []  # truncated varint
    assert exporter.push("nope", encode_frame(1, b"x"), keyframe=True) == []
    assert [p.kind for p in exporter.problems] == [ExportProblemKind.MALFORMED_FRAME]
    assert exporter.stats.frames_dropped == 2
    assert not exporter.started


def test_frames_before_any_catalog_are_dropped() -> None:
    exporter = TsExporter()
    assert exporter.push("0.avc3", encode_frame(0, b"\0\0\0\1\x65"), keyframe=True) == []
    assert exporter.stats.frames_dropped == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["0.avc3", "1.aac", "2.opus", "x"]),
            st.binary(max_size=600),
            st.booleans(),
        ),
        max_size=25,
    )
)
def test_any_frame_sequence_yields_well_formed_packets(
    frames: list[tuple[str, bytes, bool]],
) -> None:
    catalog = Catalog(
        video={"0.avc3": VideoConfig(codec="avc3.640028")},
        audio={
            "1.aac": AudioConfig(codec="mp4a.40.2", sample_rate=48000, channels=2),
            "2.opus": AudioConfig(codec="opus", sample_rate=48000, channels=2),
        },
    )
    exporter = TsExporter()
    exporter.set_catalog(catalog)
    chunks = []
    for track, data, key in frames:
        chunks += exporter.push(track, data, keyframe=key)
    packets = parse_packets(ts_of(chunks))
    check_continuity(packets)
    assert all(len(c.data) <= CHUNK_BYTES for c in chunks)


@pytest.mark.parametrize("random_access", [False, True])
@pytest.mark.parametrize(
    "body_len", [0, 1, 150, 157, 158, 159, 160, 184, 366, 367, 368, 2000, 184 * 9, 400_000]
)
def test_pes_packetizer_round_trips_any_size_with_continuous_counters(
    body_len: int, random_access: bool
) -> None:
    prefix = bytes(range(1, 25))
    body = bytes((i * 7 + 3) & 0xFF for i in range(body_len))
    writer = PidWriter(0x123)
    out = bytearray()
    # twice, so the second run starts from a counter other than 0
    count = writer.write_pes(out, prefix, body, random_access=random_access)
    count += writer.write_pes(out, prefix, memoryview(body), random_access=random_access)
    packets = parse_packets(bytes(out))
    assert len(packets) == count
    assert {p.pid for p in packets} == {0x123}
    check_continuity(packets)
    assert packets[0].cc == 0
    starts = [p for p in packets if p.pusi]
    assert len(starts) == 2
    assert all(p.random_access == random_access for p in starts)
    assert not any(p.random_access for p in packets if not p.pusi)
    payload = b"".join(p.payload for p in packets)
    assert payload == (prefix + body) * 2
    minimum = -(-(len(prefix) + body_len) // 184)
    assert count in (2 * minimum, 2 * minimum + 2)


def test_every_keyframe_chunk_starts_with_pat_so_a_sender_can_resume_there() -> None:
    _, chunks, _ = exported()
    resumable = 0
    for chunk in chunks:
        packets = parse_packets(chunk.data)
        if any(p.random_access for p in packets):
            assert packets[0].pid == 0, "a chunk with a keyframe start begins with the PAT"
            assert packets[1].pid == 0x1000
            resumable += 1
    assert resumable == 3


def test_the_catalog_jitter_sets_the_dts_reserve() -> None:
    video, audio = h264_aac()
    catalog = catalog_of([video, audio])
    catalog.video["0.avc3"] = replace(catalog.video["0.avc3"], jitter_ms=100)
    exporter, chunks = export(interleave([video, audio]), catalog)
    assert exporter.problems == []
    vpes = pes_units(parse_packets(ts_of(chunks)), exporter.track_pids()["0.avc3"])
    first = vpes[0]
    assert first.pts_90k is not None
    assert first.dts_90k == first.pts_90k - 100 * 90 - 900  # jitter plus a 10 ms margin


def test_reordering_deeper_than_the_reserve_is_reported_and_dts_stays_below_pts() -> None:
    video, audio = h264_aac()  # 3 B-frames (pyramid): reordered by up to 100 ms
    exporter, chunks = export(
        interleave([video, audio]), catalog_of([video, audio]), TsExporter(reorder_ms=20)
    )
    assert [p.kind for p in exporter.problems] == [ExportProblemKind.REORDER_TOO_DEEP]
    for pes in pes_units(parse_packets(ts_of(chunks)), exporter.track_pids()["0.avc3"]):
        assert pes.pts_90k is not None
        assert pes.dts_90k is None or pes.dts_90k <= pes.pts_90k
    assert decode_ts(ts_of(chunks)).video_frames == len(video.frames)


def test_video_without_reordering_and_no_reserve_gets_dts_equal_to_pts() -> None:
    video = encode_video(frames=30, bframes=0)
    exporter, chunks = export(interleave([video]), catalog_of([video]), TsExporter(reorder_ms=0))
    assert exporter.problems == []
    vpes = pes_units(parse_packets(ts_of(chunks)), exporter.track_pids()["0.avc3"])
    assert [p.dts_90k for p in vpes] == [None] * len(vpes), "DTS = PTS is written as PTS only"
    assert decode_ts(ts_of(chunks)).video_frames == 30


def test_avcc_and_hvcc_parameter_sets_become_annexb_and_truncation_is_malformed() -> None:
    sps, pps = b"\x67\x64\x00\x1f\xac", b"\x68\xee\x3c\x80"
    avcc = bytes([1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, len(sps)]) + sps
    avcc += bytes([1, 0, len(pps)]) + pps
    assert parse_avcc(avcc) == (4, b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps)
    vps, hsps = b"\x40\x01\x0c", b"\x42\x01\x01\x01"
    hvcc = bytes(21) + bytes([0x0F, 2])
    hvcc = bytes([1]) + hvcc[1:]
    hvcc += bytes([0x20, 0, 1, 0, len(vps)]) + vps + bytes([0x21, 0, 1, 0, len(hsps)]) + hsps
    assert parse_hvcc(hvcc) == (4, b"\x00\x00\x00\x01" + vps + b"\x00\x00\x00\x01" + hsps)
    with pytest.raises(Malformed, match="avcC: parameter set truncated"):
        parse_avcc(avcc[:-1])
    with pytest.raises(Malformed, match="hvcC: parameter set truncated"):
        parse_hvcc(hvcc[:-1])
