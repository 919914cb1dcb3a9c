"""Live-sized feeds (a few 1316-byte SRT messages per `feed`, as the gateway reads them) import
exactly what one whole-file feed does, clean or damaged in the middle of a run of continuation
packets (where the importer reads a run at a time and must fall back packet by packet)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mux.ts_packets import TsSync
from tests.unit.mux.support import FIXTURES, Imported, chunks, run_import
from tests.unit.mux.test_ts_import_fixtures import FIXTURE_NAMES

SRT_MESSAGE = 1316
VIDEO, AUDIO = 0x100, 0x101
#: 60 messages (420 packets) go the per-packet way only once a stream is seen to be runs.
MESSAGES_PER_FEED = [1, 3, 17, 60]


def assert_same_import(split: Imported, whole: Imported) -> None:
    """Every frame's bytes and group boundaries, the catalogs and the problems are equal."""
    assert split.comparable() == whole.comparable()
    assert split.catalogs == whole.catalogs
    assert [p.kind for p in split.importer.problems] == [p.kind for p in whole.importer.problems]
    assert split.importer.problem_counts == whole.importer.problem_counts


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("messages", MESSAGES_PER_FEED)
def test_srt_sized_feeds_import_what_one_whole_feed_does(name: str, messages: int) -> None:
    data = (FIXTURES / name).read_bytes()
    whole = run_import([data])
    split = run_import(chunks(data, SRT_MESSAGE * messages))
    assert whole.tracks
    assert_same_import(split, whole)


def packets_of(data: bytes) -> list[bytearray]:
    return [bytearray(data[i : i + 188]) for i in range(0, len(data) - 187, 188)]


def is_continuation(packet: bytearray, pid: int) -> bool:
    """A packet of `pid` without TEI or PUSI."""
    return packet[1] == pid >> 8 and packet[2] == pid & 0xFF


def is_plain(packet: bytearray, pid: int) -> bool:
    """A continuation packet of `pid` with a payload and no adaptation field."""
    return is_continuation(packet, pid) and packet[3] & 0xF0 == 0x10


def mid_run(packets: list[bytearray], pid: int) -> list[int]:
    """Indices of plain packets of `pid` with three more on either side."""
    return [
        i
        for i in range(3, len(packets) - 3)
        if all(is_plain(packets[j], pid) for j in range(i - 3, i + 4))
    ]


def damaged_stream() -> bytes:
    """h264_aac.ts with damage inside runs of continuation packets: a lost packet (CC gap), a
    packet with transport_error_indicator, a duplicate, a PCR adaptation field, a CC jump, a
    null packet, two gaps within one message, and a lost audio packet."""
    packets = packets_of((FIXTURES / "h264_aac.ts").read_bytes())
    video = mid_run(packets, VIDEO)
    audio = [i for i, p in enumerate(packets) if is_continuation(p, AUDIO)]
    assert len(video) > 900
    assert audio
    at = [video[k] for k in range(100, 900, 100)]
    drop = {at[0], at[6], at[6] + 3, audio[len(audio) // 2]}
    packets[at[1]][1] |= 0x80  # transport_error_indicator
    duplicate = at[2]
    pcr = packets[at[3]]  # an adaptation field with only a PCR: not stuffing
    pcr[3] |= 0x20
    pcr[4:] = bytes([7, 0x10, 0, 0, 0, 0, 0, 0]) + pcr[4:180]
    packets[at[4]][3] = 0x10 | (packets[at[4]][3] + 5) & 0x0F  # CC jump, nothing lost
    null = at[5]
    out = []
    for i, packet in enumerate(packets):
        if i in drop:
            continue
        if i == null:
            out.append(b"\x47\x1f\xff\x10" + b"\xff" * 184)
        out.append(bytes(packet))
        if i == duplicate:
            out.append(bytes(packet))
    return b"".join(out)


@pytest.mark.parametrize("messages", MESSAGES_PER_FEED)
def test_damage_inside_runs_imports_the_same_in_srt_sized_feeds(messages: int) -> None:
    data = damaged_stream()
    whole = run_import([data])
    counts = whole.importer.problem_counts
    assert counts["continuity_gap"] >= 5
    assert counts["transport_error"] == 1
    assert whole.importer.stats.duplicate_packets == 1
    split = run_import(chunks(data, SRT_MESSAGE * messages))
    assert_same_import(split, whole)
    assert split.importer.problems == whole.importer.problems
    # Not `ignored_packets`: before the first PMT the numpy path (`TsImporter._batch_rows`)
    # and the per-packet one (`TsImporter._batch_small`) count stashed packets differently.
    assert replace(split.importer.stats, ignored_packets=0) == replace(
        whole.importer.stats, ignored_packets=0
    )


def test_take_aligned_consumes_whole_packets_in_sync_and_nothing_else() -> None:
    data = (FIXTURES / "h264_aac.ts").read_bytes()[: 20 * 188]
    sync = TsSync()
    assert sync.take_aligned(data[:1316]) is None  # sync not found yet
    assert [b.tobytes() for b in sync.push(data[:1316])] == [data[:1316]]
    message = data[1316:2632]
    assert sync.take_aligned(message) is message  # bytes come back as they are, uncopied
    assert sync.offset == 2632
    taken = sync.take_aligned(bytearray(data[2632:2820]))
    assert type(taken) is bytes
    assert taken == data[2632:2820]
    for refused in (b"", data[2820:2900], b"\x48" + data[2821:3008]):
        assert sync.take_aligned(refused) is None
        assert (sync.offset, sync.buffered_bytes, sync.losses) == (2820, 0, [])
    list(sync.push(data[2820:2900]))  # a partial packet is now buffered
    assert sync.take_aligned(data[3008:3196]) is None
    assert sync.buffered_bytes == 80


def test_a_stream_of_runs_is_read_packet_by_packet_up_to_the_larger_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mux.ts_import as ts_import

    ways: list[str] = []
    rows, small = ts_import.TsImporter._batch_rows, ts_import.TsImporter._batch_small

    def spy_rows(self: ts_import.TsImporter, packets: object) -> None:
        ways.append("numpy")
        rows(self, packets)  # type: ignore[arg-type]

    def spy_small(self: ts_import.TsImporter, raw: bytes, packets: object) -> None:
        ways.append("packets")
        small(self, raw, packets)  # type: ignore[arg-type]

    monkeypatch.setattr(ts_import.TsImporter, "_batch_rows", spy_rows)
    monkeypatch.setattr(ts_import.TsImporter, "_batch_small", spy_small)
    data = (FIXTURES / "h264_aac.ts").read_bytes()
    feed = SRT_MESSAGE * 60  # 420 packets: above the plain bound, within the larger one
    assert ts_import._SMALL_BATCH < 420 <= ts_import._RUNNY_BATCH
    split = run_import(chunks(data, feed))
    whole_feeds = len(data) // feed
    # mostly video continuation packets: after the first batch shows it, every batch goes
    # the per-packet way, and imports what one whole feed does
    assert ways.count("packets") >= whole_feeds
    assert ways.count("numpy") == 0
    assert_same_import(split, run_import([data]))
