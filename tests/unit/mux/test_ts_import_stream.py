"""Importer behaviour on hand-built streams: damage, program changes, catalog timing."""

from __future__ import annotations

import functools

import pytest

from model import BroadcastProducer, CachePool
from mux import (
    AudioResync,
    BadSection,
    ContinuityGap,
    StreamWithoutConfig,
    SyncLost,
    TransportError,
    TsImporter,
    UnsupportedStream,
    decode_frame,
)
from tests.media import EsPacket, es_packets
from tests.unit.mux.support import FIXTURES, run_import
from tests.unit.mux.tsbuild import PMT_PID, Es, Muxer, adts, pat, pes, pmt

VIDEO, AUDIO = 0x100, 0x101
H264_AAC = pmt([Es(0x1B, VIDEO), Es(0x0F, AUDIO)])


@functools.cache
def h264_units() -> list[EsPacket]:
    """30 fps Constrained Baseline access units, a keyframe every 15 (from a PyAV fixture)."""
    return es_packets(FIXTURES / "h264_only.ts", 0x100)


def aac_frames(count: int, size: int = 100) -> list[bytes]:
    return [adts(bytes([i % 256]) * size) for i in range(count)]


def video_pes(index: int) -> bytes:
    unit = h264_units()[index]
    return pes(0xE0, unit.data, pts=90_000 + 3000 * index, bounded=False)


def published_names(importer: TsImporter) -> list[str] | None:
    return None if importer.catalog is None else sorted(importer.catalog.track_names())


def test_audio_frames_before_a_gap_are_kept_the_rest_of_that_pes_dropped() -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO))
    frames = aac_frames(12, size=120)
    first = mux.packets(AUDIO, pes(0xC0, b"".join(frames[:6]), pts=0))  # 6 x 127 B: 5 packets
    second = mux.packets(AUDIO, pes(0xC0, b"".join(frames[6:]), pts=6 * 1920))
    del first[2]  # lose the third packet: frames 0 and 1 (bytes 0-253 of ES data) survive
    result = run_import([b"".join(packets + first + second)])
    (track,) = result.tracks
    payloads = [bytes(decode_frame(f)[1]) for f in result.frames(track)]
    assert payloads == [f[7:] for f in frames[:2] + frames[6:]]
    assert result.timestamps_us(track)[2] == 6 * 1920 * 100 // 9  # the next PES re-anchors
    (gap,) = [p for p in result.importer.problems if isinstance(p, ContinuityGap)]
    assert gap.pid == AUDIO
    assert gap.media == "audio"
    assert gap.message == (
        "PID 0x101: continuity gap, expected CC 2 got 3; kept the whole audio frames of a "
        "partial PES of 368 bytes"
    )


def test_a_video_gap_drops_only_the_damaged_picture() -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x1B, VIDEO)]))
    for i in range(15):
        units = mux.packets(VIDEO, video_pes(i))
        if i == 4:
            assert len(units) > 2
            del units[1]
        packets += units
    result = run_import([b"".join(packets)])
    (track,) = result.tracks
    times = [t * 9 // 100 for t in result.timestamps_us(track)]
    assert len(times) == 14
    assert 90_000 + 3000 * 4 not in times
    assert result.importer.problem_counts == {"continuity_gap": 1}
    assert "dropped a partial video PES of 184 bytes" in result.importer.problems[0].message


def test_a_damaged_packet_is_dropped_like_a_lost_one() -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x1B, VIDEO)]))
    for i in range(15):
        units = mux.packets(VIDEO, video_pes(i))
        if i == 7:
            units[1] = units[1][:1] + bytes([units[1][1] | 0x80]) + units[1][2:]
        packets += units
    result = run_import([b"".join(packets)])
    assert len(result.frames(next(iter(result.tracks)))) == 14
    (problem,) = result.importer.problems
    assert isinstance(problem, TransportError)
    assert problem.pid == VIDEO
    assert problem.packets == 1
    assert result.importer.stats.transport_errors == 1


def test_a_bounded_audio_pes_is_written_without_waiting_for_the_next_one() -> None:
    mux = Muxer()
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast)
    data = mux.psi(pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO))
    data += mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(3)), pts=900))
    importer.feed(b"".join(data))
    assert importer.tracks["0.aac"].frames == 3  # no later PUSI needed
    assert importer.catalog is not None
    assert importer.catalog.audio["0.aac"].codec == "mp4a.40.2"
    importer.finish()


def test_an_unbounded_video_pes_is_written_when_the_next_starts_or_at_finish() -> None:
    mux = Muxer()
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast)
    importer.feed(b"".join(mux.psi(pmt([Es(0x1B, VIDEO)])) + mux.packets(VIDEO, video_pes(0))))
    assert importer.tracks["0.avc3"].frames == 0
    importer.feed(b"".join(mux.packets(VIDEO, video_pes(1))))
    assert importer.tracks["0.avc3"].frames == 1
    importer.finish()
    assert importer.tracks["0.avc3"].frames == 2


def test_streams_not_decoded_become_opaque_tracks_beside_the_decoded_ones() -> None:
    mux = Muxer()
    table = pmt([Es(0x02, 0x200), Es(0x1B, VIDEO), Es(0x86, 0x300)])
    packets = []
    for i in range(30):
        packets += mux.psi(table)
        # a sequence header and an I picture every 10th PES (a GOP), a P picture otherwise
        picture = b"\x00\x00\x01\x00\x00" + bytes([0x08 if i % 10 == 0 else 0x10]) + bytes(8)
        head = b"\x00\x00\x01\xb3" + bytes(8) if i % 10 == 0 else b""
        packets += mux.packets(0x200, pes(0xE1, head + picture + bytes(40), pts=i))
        packets += mux.packets(VIDEO, video_pes(i))
    result = run_import([b"".join(packets)])
    assert list(result.tracks) == ["0.mpeg2video", "1.avc3", "2.scte35"]
    assert len(result.frames("1.avc3")) == 30
    assert [len(g) for g in result.tracks["0.mpeg2video"]] == [10, 10, 10]
    assert result.tracks["2.scte35"] == []
    assert not [p for p in result.importer.problems if isinstance(p, UnsupportedStream)]
    assert result.catalogs[-1].track_names() == ["1.avc3"]


def test_catalog_waits_for_every_stream_of_the_first_pmt() -> None:
    mux = Muxer()
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast, catalog_wait_s=3.0)
    importer.feed(b"".join(mux.psi(H264_AAC)))
    for i in range(30):  # one second of video, no audio yet
        importer.feed(b"".join(mux.packets(VIDEO, video_pes(i))))
    assert published_names(importer) is None
    # written already; the catalog comes later (the last PES ends on a stuffed packet: it is
    # complete without the next PES start, see test_ts_import_early.py)
    assert importer.tracks["0.avc3"].frames == 30
    audio = pes(0xC0, b"".join(aac_frames(2)), pts=90_000 + 3000 * 29)
    importer.feed(b"".join(mux.packets(AUDIO, audio)))
    assert published_names(importer) == ["0.avc3", "1.aac"]
    assert importer.stats.catalog_versions == 1
    importer.finish()


def test_a_silent_stream_does_not_hold_the_catalog_back_forever() -> None:
    mux = Muxer()
    packets = mux.psi(H264_AAC)
    for i in range(90):  # three seconds of video and never any audio
        packets += mux.packets(VIDEO, video_pes(i))
    result = run_import(packets, catalog_wait_s=2.0)  # one packet per feed
    assert result.catalogs[0].track_names() == ["0.avc3"]
    (problem,) = [p for p in result.importer.problems if isinstance(p, StreamWithoutConfig)]
    assert problem.pid == AUDIO
    assert problem.message.startswith("PID 0x101: no decodable AAC audio (ADTS) after 2.0 s")
    assert len(result.frames("0.avc3")) == 90  # the last PES is written at finish


def test_a_new_pmt_version_adds_and_removes_tracks_and_republishes_the_catalog() -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x1B, VIDEO)]))
    for i in range(15):
        packets += mux.packets(VIDEO, video_pes(i))
    packets += mux.psi(H264_AAC)  # same content, version 0 again: changes nothing
    packets += mux.psi(pmt([Es(0x1B, VIDEO), Es(0x0F, AUDIO)], version=1))
    for i in range(15, 30):
        packets += mux.packets(VIDEO, video_pes(i))
        packets += mux.packets(AUDIO, pes(0xC0, aac_frames(1)[0], pts=90_000 + 3000 * i))
    packets += mux.psi(pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO, version=2))
    packets += mux.packets(AUDIO, pes(0xC0, aac_frames(1)[0], pts=90_000 + 3000 * 31))
    result = run_import([b"".join(packets)])
    assert [c.track_names() for c in result.catalogs] == [
        ["0.avc3"],
        ["0.avc3", "1.aac"],
        ["1.aac"],
    ]
    assert len(result.frames("0.avc3")) == 30
    assert len(result.frames("1.aac")) == 16


def test_a_pmt_with_a_bad_crc_is_rejected_until_a_good_one_comes() -> None:
    mux = Muxer()
    good = pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO)
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    packets = mux.psi(bad)
    packets += mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(2)), pts=0))
    packets += mux.psi(good)
    packets += mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(2)), pts=3840))
    result = run_import([b"".join(packets)])
    (problem,) = result.importer.problems
    assert isinstance(problem, BadSection)
    assert problem.message.startswith(f"PID 0x{PMT_PID:x}: PMT section rejected: CRC mismatch")
    # The PES before the first good PMT is replayed once the PMT arrives.
    assert len(result.frames("0.aac")) == 4


def test_garbage_with_false_sync_bytes_is_skipped_and_reported() -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO))
    packets += mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(3)), pts=0))
    garbage = b"\x00\x11\x47" * 70  # 0x47 every 3 bytes, never 188 apart
    later = mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(3)), pts=5760))
    result = run_import([b"".join(packets) + garbage + b"".join(later)])
    assert len(result.frames("0.aac")) == 6
    (loss,) = [p for p in result.importer.problems if isinstance(p, SyncLost)]
    assert loss.skipped_bytes == len(garbage)
    assert loss.offset == len(b"".join(packets))


def test_bytes_that_are_not_adts_frames_are_skipped_and_reported() -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO))
    frames = aac_frames(4)
    payload = frames[0] + b"\x00junk\x00" + b"".join(frames[1:])
    packets += mux.packets(AUDIO, pes(0xC0, payload, pts=0))
    result = run_import([b"".join(packets)])
    assert len(result.frames("0.aac")) == 4
    (problem,) = result.importer.problems
    assert isinstance(problem, AudioResync)
    assert problem.message == "PID 0x101: skipped 6 bytes that are not AAC frames"


def test_opus_channels_come_from_the_dvb_extension_descriptor() -> None:
    mux = Muxer()
    descriptors = b"\x05\x04Opus" + b"\x7f\x02\x80\x01"  # registration, channel_config_code 1
    packets = mux.psi(pmt([Es(0x06, AUDIO, descriptors)], pcr_pid=AUDIO))
    opus_packet = bytes([0x08 << 3]) + bytes(40)  # TOC: CELT config, one 10 ms... frame
    control = b"\x7f\xe0" + bytes([len(opus_packet)])
    packets += mux.packets(AUDIO, pes(0xBD, (control + opus_packet) * 3, pts=0))
    result = run_import([b"".join(packets)])
    config = result.catalogs[-1].audio["0.opus"]
    assert (config.codec, config.sample_rate, config.channels) == ("opus", 48000, 1)
    payloads = [bytes(decode_frame(f)[1]) for f in result.frames("0.opus")]
    assert payloads == [opus_packet] * 3


def test_feeding_after_the_broadcast_was_closed_elsewhere_is_harmless() -> None:
    mux = Muxer()
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast)
    importer.feed(b"".join(mux.psi(H264_AAC)))
    broadcast.abort(RuntimeError("viewer gone"))
    importer.feed(b"".join(mux.packets(VIDEO, video_pes(0)) + mux.packets(VIDEO, video_pes(1))))
    importer.finish()


def test_a_second_program_is_reported_and_ignored() -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO), pat(extra=[(2, 0x1100)]))
    packets += mux.packets(AUDIO, pes(0xC0, aac_frames(1)[0], pts=0))
    result = run_import([b"".join(packets)])
    assert [p.message for p in result.importer.problems] == [
        "PAT lists 2 programs [1, 2]; importing only program 1 (PMT PID 0x1000)"
    ]


@pytest.mark.parametrize("keep", [0, 1, 100, 187])
def test_a_truncated_last_packet_is_dropped_at_finish(keep: int) -> None:
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x0F, AUDIO)], pcr_pid=AUDIO))
    packets += mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(2)), pts=0))
    tail = mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(1)), pts=3840))[0][:keep]
    result = run_import([b"".join(packets) + tail])
    assert len(result.frames("0.aac")) == 2
    assert result.importer.stats.skipped_bytes == keep


def test_a_new_picture_size_republishes_the_catalog_as_a_new_group() -> None:
    small = h264_units()[:15]  # 320x240
    large = es_packets(FIXTURES / "h264_aac.ts", 0x100)[:60]  # 640x360, starts on a keyframe
    mux = Muxer()
    packets = mux.psi(pmt([Es(0x1B, VIDEO)]))
    for i, unit in enumerate([*small, *large]):
        packets += mux.packets(VIDEO, pes(0xE0, unit.data, pts=3000 * i, bounded=False))
    result = run_import([b"".join(packets)])
    sizes = [
        (c.video["0.avc3"].coded_width, c.video["0.avc3"].coded_height) for c in result.catalogs
    ]
    assert sizes == [(320, 240), (640, 360)]
    assert [len(g) for g in result.tracks["0.avc3"]] == [15, 60]


def test_a_dropped_importer_frees_its_broadcast_at_once() -> None:
    # No reference cycles: a gateway dropping a finished ingest gives its cached frames back
    # immediately, not at the next cyclic garbage collection.
    import gc
    import weakref

    mux = Muxer()
    data = b"".join(mux.psi(H264_AAC) + mux.packets(VIDEO, video_pes(0)))
    gc.disable()
    try:
        broadcast = BroadcastProducer(pool=CachePool(None))
        importer = TsImporter(broadcast)
        importer.feed(data)
        importer.finish()
        refs = weakref.ref(importer), weakref.ref(broadcast)
        del importer, broadcast
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()
