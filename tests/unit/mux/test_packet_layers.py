"""Packet sync, PSI sections and tables, PES headers and the PTS unwrapper."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mux.errors import MalformedPes, MalformedSection
from mux.pes import PTS_WRAP, PtsUnwrapper, parse_pes_header, pes_header_size, to_us
from mux.psi import (
    SectionAssembler,
    classify_stream,
    crc32_mpeg2,
    parse_pat,
    parse_pmt,
)
from mux.ts_packets import PacketColumns, SyncLoss, TsSync
from tests.media import ffprobe_streams
from tests.unit.mux.support import FIXTURES
from tests.unit.mux.tsbuild import Es, Muxer, pat, pes, pmt, pts_bytes

# -- sync -----------------------------------------------------------------------------------


def packets_of(sync: TsSync, parts: list[bytes]) -> list[bytes]:
    out = []
    for part in parts:
        for batch in sync.push(part):
            out += [row.tobytes() for row in batch]
    return out


def clean_stream(count: int = 40) -> bytes:
    mux = Muxer()
    data = mux.psi(pmt([Es(0x0F, 0x101)]))
    while len(data) < count:
        data += mux.packets(0x101, pes(0xC0, bytes(range(256)) * 3, pts=len(data)))
    return b"".join(data[:count])


def test_aligned_input_comes_out_as_one_batch_of_views() -> None:
    data = clean_stream()
    sync = TsSync()
    batches = list(sync.push(data))
    assert [b.shape for b in batches] == [(40, 188)]
    assert batches[0].tobytes() == data
    assert sync.buffered_bytes == 0
    assert sync.losses == []


def test_byte_by_byte_input_gives_the_same_packets() -> None:
    data = clean_stream(10)
    sync = TsSync()
    assert packets_of(sync, [data[i : i + 1] for i in range(len(data))]) == packets_of(
        TsSync(), [data]
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    cuts=st.lists(st.integers(1, 900), max_size=30),
    garbage=st.binary(max_size=300),
    trailing=st.binary(max_size=187),
)
def test_random_splits_give_the_same_packets_and_losses(
    cuts: list[int], garbage: bytes, trailing: bytes
) -> None:
    data = garbage + clean_stream(12) + trailing
    whole = TsSync()
    expected = packets_of(whole, [data])
    split = TsSync()
    parts, pos = [], 0
    for size in [*cuts, len(data)]:
        parts.append(data[pos : pos + size])
        pos += size
    assert packets_of(split, parts) == expected
    assert split.losses == whole.losses
    assert split.flush() == whole.flush()


def test_leading_garbage_with_false_sync_bytes_is_skipped_once() -> None:
    garbage = b"\x47\x01\x02" * 50 + b"\x00"
    sync = TsSync()
    out = packets_of(sync, [garbage + clean_stream(5)])
    assert len(out) == 5
    assert sync.losses == [SyncLoss(offset=0, skipped_bytes=len(garbage))]
    assert sync.skipped_bytes == len(garbage)


def test_a_deleted_byte_loses_sync_until_the_next_confirmed_packet() -> None:
    data = bytearray(clean_stream(6))
    del data[188 * 2 + 50]  # packet 2 is one byte short: packet 3 starts a byte early
    sync = TsSync()
    out = packets_of(sync, [bytes(data)])
    assert len(out) == 5  # packet 2 (damaged) is taken on stride, packet 3 is lost
    assert sync.losses == [SyncLoss(offset=188 * 3, skipped_bytes=187)]


def test_a_trailing_partial_packet_waits_and_is_counted_at_flush() -> None:
    sync = TsSync()
    assert len(packets_of(sync, [clean_stream(3)[:500]])) == 2
    assert sync.buffered_bytes == 124
    assert sync.flush() == 124
    assert sync.skipped_bytes == 124


def test_packet_columns_read_the_header_fields() -> None:
    mux = Muxer()
    raw = b"".join(mux.packets(0x1ABC, b"\x00" * 300))
    (batch,) = TsSync().push(raw)
    cols = PacketColumns.of(batch)
    assert cols.pid.tolist() == [0x1ABC, 0x1ABC]
    assert [(b >> 6) & 1 for b in cols.b1.tolist()] == [1, 0]  # payload_unit_start
    assert [b & 0x0F for b in cols.b3.tolist()] == [0, 1]  # continuity counters
    assert [(b >> 4) & 3 for b in cols.b3.tolist()] == [1, 3]  # last one carries stuffing


# -- PSI ------------------------------------------------------------------------------------


def test_crc32_mpeg2_known_vector() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7
    section = pat()
    assert crc32_mpeg2(section) == 0


def first_section(path: str, pid: int) -> bytes:
    data = (FIXTURES / path).read_bytes()
    asm = SectionAssembler()
    for i in range(0, len(data), 188):
        packet = data[i : i + 188]
        if ((packet[1] & 0x1F) << 8 | packet[2]) == pid:
            sections = asm.push(packet[4:], bool(packet[1] & 0x40))
            if sections:
                return sections[0]
    raise AssertionError("no section")


def test_fixture_pat_and_pmt_parse_to_what_ffprobe_sees() -> None:
    (entry,) = parse_pat(first_section("h264_aac.ts", 0))
    assert (entry.program_number, entry.pid) == (1, 0x1000)
    table = parse_pmt(first_section("h264_aac.ts", 0x1000))
    assert [(s.stream_type, s.pid) for s in table.streams] == [(0x1B, 0x100), (0x0F, 0x101)]
    assert set(ffprobe_streams(FIXTURES / "h264_aac.ts")) == {s.pid for s in table.streams}
    assert table.pcr_pid == 0x100


@pytest.mark.parametrize(
    ("fixture", "codec", "channels"),
    [
        ("h265_aac.ts", "h265", None),
        ("opus.ts", "opus", 2),
        ("ac3.ts", "ac3", None),
        ("eac3.ts", "eac3", None),
        ("h264_mp2.ts", "h264", None),
    ],
)
def test_fixture_streams_are_classified(fixture: str, codec: str, channels: int | None) -> None:
    table = parse_pmt(first_section(fixture, 0x1000))
    kind = classify_stream(table.streams[0], table.descriptors)
    assert kind.codec == codec
    assert kind.channels == channels


def test_a_section_split_over_packets_and_two_in_one_packet() -> None:
    big = pmt([Es(0x0F, 0x100 + i, b"\x0a\x04eng\x00" * 3) for i in range(20)])
    assert len(big) > 2 * 184
    mux = Muxer()
    packets = mux.packets(0x1000, big, psi=True)
    asm = SectionAssembler()
    out = [s for p in packets for s in asm.push(p[4:], bool(p[1] & 0x40))]
    assert out == [big]
    assert len(parse_pmt(big).streams) == 20
    two = b"\x00" + pat() + pat(pmt_pid=0x1100) + b"\xff" * 20
    assert SectionAssembler().push(two, True) == [pat(), pat(pmt_pid=0x1100)]


def test_a_section_cut_by_the_next_unit_start_is_dropped() -> None:
    asm = SectionAssembler()
    section = pmt([Es(0x1B, 0x100)])
    assert asm.push(b"\x00" + section[:10], True) == []
    assert asm.push(b"\x00" + section, True) == [section]
    with pytest.raises(MalformedSection):
        asm.push(b"\xb0" + section, True)  # pointer past the payload


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s[:-1] + bytes([s[-1] ^ 1]), "CRC mismatch"),
        (lambda s: b"\x03" + s[1:], "table_id 0x03, expected 0x02"),
        (lambda s: s[:5], "too short"),
        (lambda s: s[:1] + bytes([s[1] & 0x7F]) + s[2:], "section_syntax_indicator"),
    ],
)
def test_bad_sections_raise_malformed_section_saying_why(mutate: object, reason: str) -> None:
    section = mutate(pmt([Es(0x1B, 0x100)]))  # type: ignore[operator]
    with pytest.raises(MalformedSection, match=reason):
        parse_pmt(section)


def test_a_descriptor_loop_running_past_its_end_is_malformed() -> None:
    with pytest.raises(MalformedSection):
        parse_pmt(pmt([Es(0x1B, 0x100, b"\x05\x09abc")]))


@pytest.mark.parametrize(
    ("es", "codec"),
    [
        (Es(0x1B, 1), "h264"),
        (Es(0x24, 1), "h265"),
        (Es(0x06, 1, b"\x05\x04HEVC"), "h265"),
        (Es(0x0F, 1), "aac"),
        (Es(0x03, 1), "mpa"),
        (Es(0x04, 1), "mpa"),
        (Es(0x81, 1), "ac3"),
        (Es(0x06, 1, b"\x6a\x01\x00"), "ac3"),
        (Es(0x87, 1), "eac3"),
        (Es(0x06, 1, b"\x7a\x01\x00"), "eac3"),
        (Es(0x06, 1, b"\x05\x04Opus"), "opus"),
        (Es(0x02, 1), "opaque mpeg2video pes video"),
        (Es(0x11, 1), "opaque latm pes"),
        (Es(0x86, 1), "opaque scte35 section"),
        (Es(0x05, 1), "opaque sections section"),
        (Es(0x06, 1), "opaque data pes"),
        (Es(0x06, 1, b"\x05\x04KLVA"), "opaque klv pes"),
        (Es(0x15, 1, b"\x26\x00"), "opaque klv pes"),
        (Es(0x06, 1, b"\x59\x08eng\x10\x00\x01\x00\x01"), "opaque dvbsub pes"),
        (Es(0x06, 1, b"\x56\x05deu\x11\x88"), "opaque teletext pes"),
    ],
)
def test_stream_classification(es: Es, codec: str) -> None:
    kind = classify_stream(parse_pmt(pmt([es])).streams[0])
    if kind.opaque:
        units = "section" if kind.section else "pes"
        described = f"opaque {kind.label} {units}" + (" video" if kind.video else "")
        assert described == codec
    else:
        assert kind.codec == codec


# -- PES --------------------------------------------------------------------------------------


def test_pes_header_with_pts_and_dts() -> None:
    header = b"\x00\x00\x01\xe0\x00\x00\x80\xc0\x0a" + pts_bytes(3, 123456789) + pts_bytes(1, 99)
    parsed = parse_pes_header(header + b"\x00\x00\x00\x01\x09")
    assert (parsed.stream_id, parsed.pts_90k, parsed.dts_90k) == (0xE0, 123456789, 99)
    assert parsed.payload_offset == 19
    assert parsed.total_length is None
    assert pes_header_size(header) == 19


def test_pes_header_of_a_bounded_audio_pes() -> None:
    data = pes(0xC0, b"abc", pts=PTS_WRAP - 1)
    parsed = parse_pes_header(data)
    assert parsed.pts_90k == PTS_WRAP - 1
    assert parsed.total_length == len(data)
    assert data[parsed.payload_offset :] == b"abc"


def test_padding_stream_has_no_optional_header() -> None:
    parsed = parse_pes_header(b"\x00\x00\x01\xbe\x00\x04\xff\xff\xff\xff")
    assert (parsed.payload_offset, parsed.pts_90k) == (6, None)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x02\xe0\x00\x00\x80\x00\x00",  # no start code
        b"\x00\x00\x01\xe0\x00\x00\x40\x00\x00",  # marker bits 01
        b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05\x21\x00",  # header longer than the data
        b"\x00\x00\x01\xe0\x00\x00\x80\x80\x02\x21\x00",  # PTS flag but 2 header bytes
        b"\x00\x00\x01\xe0\x00\x02\x80\x80\x05" + pts_bytes(2, 0),  # longer than the PES
        b"\x00\x00\x01\xe0",
    ],
)
def test_bad_pes_headers_raise_malformed_pes(data: bytes) -> None:
    with pytest.raises(MalformedPes):
        parse_pes_header(data)


def test_pts_unwrap_keeps_one_monotonic_timeline_across_the_wrap() -> None:
    unwrap = PtsUnwrapper()
    values = [PTS_WRAP - 6000, PTS_WRAP - 3000, PTS_WRAP - 9000, 1000, PTS_WRAP - 2000, 4000]
    assert [unwrap.unwrap(v) for v in values] == [
        PTS_WRAP - 6000,
        PTS_WRAP - 3000,
        PTS_WRAP - 9000,  # a B-frame before the wrap stays before it
        PTS_WRAP + 1000,
        PTS_WRAP - 2000,
        PTS_WRAP + 4000,
    ]
    again = PtsUnwrapper()
    assert again.unwrap(500) == 500
    assert again.unwrap(PTS_WRAP - 100) == PTS_WRAP - 100  # never negative
    assert to_us(90_000) == 1_000_000
    assert to_us(1) == 11  # floor
