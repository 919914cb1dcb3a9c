"""Early completion of unbounded video PES: a PES ends on its packet padded with stuffing.

ffmpeg (and PyAV, which uses its muxer) writes video PES with PES_packet_length 0 and pads the
last packet of each PES with adaptation-field stuffing, so the importer can write the access
unit when that packet arrives instead of when the next PES starts (~one frame later).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from model import BroadcastProducer, CachePool
from mux import TsImporter
from mux.es_packets import af_stuffed
from mux.problems import BadPes
from tests.unit.mux.support import FIXTURES, chunks, run_import
from tests.unit.mux.test_ts_import_stream import H264_AAC, VIDEO, h264_units
from tests.unit.mux.tsbuild import Es as PmtEs
from tests.unit.mux.tsbuild import Muxer, pes, pmt

PACKET = 188


@dataclass(frozen=True, slots=True)
class VideoPes:
    """Where one PES of a fixture's video PID ends, read straight from the packets."""

    last_packet: int
    stuffed_tail: bool


def video_pes_ends(data: bytes, pid: int) -> list[VideoPes]:
    """Each PES on `pid`: its last packet's index and whether that packet's adaptation field
    ends in 0xFF stuffing bytes (or is empty / flag-less, a pure pad)."""
    out: list[VideoPes] = []
    last = -1
    for i in range(len(data) // PACKET):
        p = data[i * PACKET : (i + 1) * PACKET]
        if ((p[1] & 0x1F) << 8 | p[2]) != pid or not p[3] & 0x10:
            continue
        if p[1] & 0x40 and last >= 0:
            out.append(VideoPes(last, tail_is_pad(data[last * PACKET : (last + 1) * PACKET])))
        last = i
    out.append(VideoPes(last, tail_is_pad(data[last * PACKET : (last + 1) * PACKET])))
    return out


def tail_is_pad(p: bytes) -> bool:
    """The packet's adaptation field is empty, has no flag set, or is flags (and a PCR)
    followed by 0xFF bytes."""
    if not p[3] & 0x20:
        return False
    af = p[5 : 5 + p[4]]
    if len(af) == 0 or af[0] == 0:
        return True
    fixed = {0x00: 1, 0x10: 7}.get(af[0] & 0x1F)  # no optional field / PCR only
    return fixed is not None and len(af) > fixed and set(af[fixed:]) == {0xFF}


@pytest.mark.parametrize(("name", "track"), [("h264_aac.ts", "0.avc3"), ("h265_aac.ts", "0.hev1")])
def test_a_fixture_frame_is_written_at_the_last_packet_of_its_pes(name: str, track: str) -> None:
    data = (FIXTURES / name).read_bytes()
    ends = video_pes_ends(data, 0x100)
    written_after: list[int] = []  # frames in the video track after each packet is fed
    importer = TsImporter(BroadcastProducer(pool=CachePool(None)))
    for i in range(len(data) // PACKET):
        importer.feed(data[i * PACKET : (i + 1) * PACKET])
        written_after.append(importer.tracks[track].frames if track in importer.tracks else 0)
    importer.finish()
    assert importer.tracks[track].frames == len(ends)  # every PES is one picture, all kept
    early = 0
    for k, end in enumerate(ends[:-1]):
        if k >= 2 and end.stuffed_tail:  # the first two PES teach the importer the pattern
            assert written_after[end.last_packet] == k + 1, f"PES {k} not written at its end"
            early += 1
        else:
            assert written_after[end.last_packet] == k, f"PES {k} written before its end"
    assert early > len(ends) * 0.9
    assert importer.problems == []


def stuffed_packets(mux: Muxer, pid: int, unit: bytes, *, pad_at: set[int]) -> list[bytes]:
    """Packetize `unit` like `Muxer.packets`, but also pad packets `pad_at` (indices) with
    20 stuffing bytes mid-PES; the last packet is padded as usual."""
    out = []
    k = 0
    data = unit
    while data:
        cc = mux.cc.get(pid, -1) + 1 & 0x0F
        mux.cc[pid] = cc
        header = bytes([0x47, (0x40 if k == 0 else 0) | (pid >> 8), pid & 0xFF])
        room = 184 - 22 if k in pad_at else 184
        chunk, data = data[:room], data[room:]
        if len(chunk) == 184:
            out.append(header + bytes([0x10 | cc]) + chunk)
        else:
            af_len = 184 - len(chunk) - 1
            af = bytes([af_len]) + (b"\x00" + b"\xff" * (af_len - 1) if af_len else b"")
            out.append(header + bytes([0x30 | cc]) + af + chunk)
        k += 1
    return out


def video_stream(*, pad_mid: dict[int, set[int]]) -> tuple[bytes, list[bytes]]:
    """20 H.264 access units in unbounded PES, PES i padded mid-PES at `pad_mid[i]`."""
    mux = Muxer()
    packets = mux.psi(H264_AAC)
    units = []
    for i in range(20):
        unit = pes(0xE0, h264_units()[i].data, pts=90_000 + 3000 * i, bounded=False)
        units.append(h264_units()[i].data)
        packets += stuffed_packets(mux, VIDEO, unit, pad_at=pad_mid.get(i, set()))
    return b"".join(packets), units


@pytest.mark.parametrize("size", [1, 188, 1316, 1 << 20])
def test_stuffing_mid_pes_from_the_start_turns_early_completion_off(size: int) -> None:
    data, units = video_stream(pad_mid={0: {1}, 15: {2, 3}})
    result = run_import(chunks(data, size))
    frames = result.frames("0.avc3")
    assert len(frames) == len(units)
    for frame, unit in zip(frames, units, strict=True):
        assert frame.endswith(unit)  # whole, not split
    assert result.importer.problems == []
    assert result.tracks == run_import([data]).tracks


@pytest.mark.parametrize("size", [1316, 1 << 20])
def test_stuffing_mid_pes_seen_within_one_feed_loses_nothing(size: int) -> None:
    """After the pattern is trusted, a PES stuffed mid-way: when the stuffed packet and the
    rest of its PES arrive in one feed, the importer sees the PES go on and keeps it whole."""
    data, units = video_stream(pad_mid={6: {1}})
    result = run_import(chunks(data, size))
    frames = result.frames("0.avc3")
    assert len(frames) == len(units)
    for frame, unit in zip(frames, units, strict=True):
        assert frame.endswith(unit)
    assert result.importer.problems == []


def test_stuffing_mid_pes_split_across_feeds_is_reported_and_turns_the_rule_off() -> None:
    """The one case early completion cannot undo: the pattern was trusted, a PES is stuffed
    mid-way and the feed ends right at that packet. Its frame is written cut short; the rest
    is dropped and reported, and later PES wait for the next PES start again."""
    data, units = video_stream(pad_mid={6: {1}})
    result = run_import(chunks(data, PACKET))
    problems = [p for p in result.importer.problems if isinstance(p, BadPes)]
    assert len(problems) == 1
    assert "went on after its stuffed last packet" in problems[0].message
    frames = result.frames("0.avc3")
    assert len(frames) == len(units)
    for i, (frame, unit) in enumerate(zip(frames, units, strict=True)):
        if i != 6:
            assert frame.endswith(unit)
    assert not frames[6].endswith(units[6])


def test_a_pcr_only_adaptation_field_is_not_stuffing() -> None:
    pcr = bytes([0x47, 0x41, 0x00, 0x30, 7, 0x50]) + bytes(6)
    assert not af_stuffed(pcr, 0, 7)
    assert af_stuffed(pcr[:4] + bytes([12, 0x50]) + bytes(6) + b"\xff" * 5, 0, 12)
    assert af_stuffed(bytes([0x47, 0x01, 0x00, 0x30, 0]), 0, 0)  # one stuffing byte
    assert af_stuffed(bytes([0x47, 0x01, 0x00, 0x30, 1, 0x00]), 0, 1)  # flags only, all clear
    assert not af_stuffed(bytes([0x47, 0x01, 0x00, 0x30, 1, 0x40]), 0, 1)  # random access
    # private data (3 bytes): 1 flags + 1 length + 3 = 5 bytes used
    private = bytes([0x47, 0x01, 0x00, 0x30, 5, 0x02, 3, 1, 2, 3])
    assert not af_stuffed(private, 0, 5)
    assert af_stuffed(private[:4] + bytes([7]) + private[5:] + b"\xff\xff", 0, 7)


def test_a_lone_pes_is_not_completed_before_the_pattern_is_learned() -> None:
    mux = Muxer()
    importer = TsImporter(BroadcastProducer(pool=CachePool(None)))
    importer.feed(b"".join(mux.psi(pmt([PmtEs(0x1B, VIDEO)]))))
    written = []
    for i in range(4):
        unit = pes(0xE0, h264_units()[i].data, pts=90_000 + 3000 * i, bounded=False)
        assert len(unit) % 184  # its last packet is padded
        importer.feed(b"".join(mux.packets(VIDEO, unit)))
        written.append(importer.tracks["0.avc3"].frames)
    # PES 0 and 1 are written when the next starts; from PES 2 on, at their own end
    assert written == [0, 1, 3, 4]
