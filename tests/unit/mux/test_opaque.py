"""Streams the importer does not decode travel as opaque tracks, and the PMT's words survive:
import -> model -> export keeps PIDs, program, stream types, descriptors and every unit;
damaged opaque units are reported and dropped without touching the other tracks."""

from __future__ import annotations

import asyncio
import io
import json

import av
import pytest

from model import BroadcastProducer, CachePool
from mux import TsImporter
from mux.catalog import CATALOG_TRACK, Catalog
from mux.container import decode_frame
from mux.errors import MalformedCatalog
from mux.export import TsExporter
from mux.opaque import SectionReader, TsProgramInfo, mpeg_video_keyframe
from mux.problems import BadPes, BadSection, ContinuityGap
from tests.unit.mux.support import FIXTURES, Imported, chunks, run_import
from tests.unit.mux.test_export_support import Packet, parse_packets, psi_sections, ts_of
from tests.unit.mux.test_fixture_script import load_script
from tests.unit.mux.tsbuild import Es, Muxer, pmt

FEED = FIXTURES / "feed.ts"
#: PID -> (units are sections, kind) of feed.ts's streams the importer does not decode.
OPAQUE = {0x1F4: (True, "scte35"), 0x300: (False, "dvbsub"), 0x301: (False, "teletext"),
          0x302: (False, "klv")}  # fmt: skip


def units(packets: list[Packet], pid: int, *, sections: bool) -> list[bytes]:
    """Whole PES packets (header included) or sections of `pid`, in order (a reader
    independent of `mux`; stuffing after the last section of a packet is skipped)."""
    out: list[bytes] = []
    buf = b""
    for p in packets:
        if p.pid != pid or not p.afc & 1:
            continue
        if p.pusi:
            if buf and not sections:
                out.append(buf)
            buf = p.payload[1 + p.payload[0] :] if sections else p.payload
        elif buf:
            buf += p.payload
        if sections:
            while len(buf) >= 3 and buf[0] != 0xFF:
                size = 3 + (((buf[1] & 0x0F) << 8) | buf[2])
                if len(buf) < size:
                    break
                out.append(buf[:size])
                buf = buf[size:]
            if buf[:1] == b"\xff":
                buf = b""
    if buf and not sections:
        out.append(buf)
    return out


def pmt_of(packets: list[Packet], pmt_pid: int) -> tuple[int, bytes, list[tuple[int, int, bytes]]]:
    """(program_number, program descriptors, [(stream_type, pid, descriptors)]), read by the
    fixture script's own PMT reader."""
    (section, *_) = psi_sections(packets, pmt_pid)
    length = 5 + len(section.body) + 4
    raw = bytes((2, 0xB0 | length >> 8, length & 0xFF)) + section.extension.to_bytes(2, "big")
    raw += b"\x00\x00\x00" + section.body + b"\x00\x00\x00\x00"
    number, _, descriptors, streams = load_script()._read_pmt(raw)
    return number, descriptors, streams


async def _read(broadcast: BroadcastProducer) -> tuple[Catalog, list[tuple[str, bytes, bool]]]:
    """The last catalog and every frame of every track it describes, merged by timestamp."""
    consumer = broadcast.consume()
    track = consumer.subscribe_track(CATALOG_TRACK)
    assert track.latest_sequence is not None
    group = await track.fetch_group(track.latest_sequence)
    catalog = Catalog.from_json((await group.read_all())[0])
    keyed = []
    for order, name in enumerate(catalog.extra["mpegts"]["tracks"]):
        sub = consumer.subscribe_track(name)
        key = index = 0
        for sequence in range(0 if sub.latest_sequence is None else sub.latest_sequence + 1):
            frames = await (await sub.fetch_group(sequence)).read_all()
            for i, frame in enumerate(frames):
                key = max(key, decode_frame(frame)[0])
                keyed.append((key, order, index, name, frame, i == 0))
                index += 1
    keyed.sort(key=lambda item: item[:3])
    return catalog, [(name, frame, first) for _, _, _, name, frame, first in keyed]


def round_trip(data: bytes, **options: bool) -> tuple[bytes, TsExporter]:
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast)
    for part in chunks(data, 1316):
        importer.feed(part)
    importer.finish()
    catalog, frames = asyncio.run(_read(broadcast))
    exporter = TsExporter(**options)
    exporter.set_catalog(catalog)
    out = []
    for name, frame, keyframe in frames:
        out += exporter.push(name, frame, keyframe=keyframe)
    return ts_of(out), exporter


def test_a_feed_round_trips_with_its_program_pids_descriptors_and_every_unit() -> None:
    source = parse_packets(FEED.read_bytes())
    data, exporter = round_trip(FEED.read_bytes())
    assert exporter.problems == []
    out = parse_packets(data)
    assert psi_sections(out, 0)[0].body[:4] == bytes((0x01, 0x01, 0xE0, 0x20))  # 0x101 @ 0x20
    assert pmt_of(out, 0x20) == pmt_of(source, 0x20)
    number, descriptors, streams = pmt_of(out, 0x20)
    assert (number, descriptors) == (0x101, b"\x05\x04CUEI")
    assert [pid for _, pid, _ in streams] == [0x100, 0x101, 0x102, 0x1F4, 0x300, 0x301, 0x302]
    for pid, (sections, _) in OPAQUE.items():
        whole = units(source, pid, sections=sections)
        assert units(out, pid, sections=sections) == whole, hex(pid)  # verbatim, every one
        assert len(whole) == {0x1F4: 3, 0x300: 5, 0x301: 10, 0x302: 27}[pid]


def test_renumbering_is_an_option_and_keeps_the_descriptors() -> None:
    source = parse_packets(FEED.read_bytes())
    data, exporter = round_trip(FEED.read_bytes(), renumber=True)
    out = parse_packets(data)
    assert psi_sections(out, 0)[0].body[:4] == bytes((0x00, 0x01, 0xF0, 0x00))  # 1 @ 0x1000
    number, descriptors, streams = pmt_of(out, 0x1000)
    assert (number, descriptors) == (1, b"\x05\x04CUEI")
    assert [pid for _, pid, _ in streams] == list(range(0x100, 0x107))
    _, _, source_streams = pmt_of(source, 0x20)
    assert [(t, d) for t, _, d in streams] == [(t, d) for t, _, d in source_streams]
    assert exporter.track_pids()["3.scte35"] == 0x103
    assert units(out, 0x103, sections=True) == units(source, 0x1F4, sections=True)


def test_the_catalog_describes_every_stream_and_hang_sees_only_decodable_renditions() -> None:
    result = run_import(chunks(FEED.read_bytes(), 1 << 16))
    catalog = result.catalogs[-1]
    assert catalog.track_names() == ["0.avc3", "1.aac", "2.aac"]
    section = TsProgramInfo.from_dict(catalog.extra["mpegts"])
    assert (section.program_number, section.pmt_pid, section.descriptors) == (
        0x101, 0x20, b"\x05\x04CUEI",
    )  # fmt: skip
    kinds = {n: (t.pid, t.units, t.kind, t.language) for n, t in section.tracks.items()}
    assert kinds == {
        "0.avc3": (0x100, "frames", "h264", None),
        "1.aac": (0x101, "frames", "aac", "eng"),
        "2.aac": (0x102, "frames", "aac", "fra"),
        "3.scte35": (0x1F4, "section", "scte35", None),
        "4.dvbsub": (0x300, "pes", "dvbsub", "eng"),
        "5.teletext": (0x301, "pes", "teletext", "deu"),
        "6.klv": (0x302, "pes", "klv", None),
    }
    # The hang part of the JSON is what it was before (video and audio sections only).
    parsed = json.loads(catalog.to_json())
    assert set(parsed) == {"video", "audio", "mpegts"}
    # Every opaque track is metered like any track: one group per unit.
    for name in ("3.scte35", "4.dvbsub", "5.teletext", "6.klv"):
        assert [len(g) for g in result.tracks[name]] == [1] * len(result.tracks[name])
    frames = sum(len(g) for groups in result.tracks.values() for g in groups)
    assert result.usage.frames == frames + len(result.catalogs)


def test_a_malformed_mpegts_section_is_reported_and_the_export_renumbers() -> None:
    catalog = run_import(chunks(FEED.read_bytes(), 1 << 16)).catalogs[-1]
    catalog.extra["mpegts"]["pmtPid"] = "x"
    exporter = TsExporter()
    exporter.set_catalog(catalog)
    assert [p.kind for p in exporter.problems] == ["bad_config"]
    assert set(exporter.track_pids()) == {"0.avc3", "1.aac", "2.aac"}
    with pytest.raises(MalformedCatalog):
        TsProgramInfo.from_dict({"program": 1, "pmtPid": 0x20, "tracks": {"a": {"pid": 1}}})


def _damaged(edit: str) -> bytes:
    """feed.ts with one unit damaged: the second SCTE-35 section's CRC (`crc`), or the third
    KLV PES cut short (`short`: its PES_packet_length claims 40 more bytes than it has)."""
    packets = [
        bytearray(FEED.read_bytes()[i : i + 188]) for i in range(0, FEED.stat().st_size, 188)
    ]
    pid = 0x1F4 if edit == "crc" else 0x302
    starts = [p for p in packets if ((p[1] & 0x1F) << 8 | p[2]) == pid and p[1] & 0x40]
    packet = starts[1 if edit == "crc" else 2]
    at = 5 + packet[4] if packet[3] & 0x20 else 4
    if edit == "crc":
        body = at + 1 + packet[at]
        length = 3 + (((packet[body + 1] & 0x0F) << 8) | packet[body + 2])
        packet[body + length - 1] ^= 0xFF
    else:
        length = int.from_bytes(packet[at + 4 : at + 6], "big") + 40
        packet[at + 4 : at + 6] = length.to_bytes(2, "big")
    return b"".join(packets)


@pytest.mark.parametrize("edit", ["crc", "short"])
@pytest.mark.parametrize("size", [188, 1316, 1 << 16])
def test_a_damaged_opaque_unit_is_reported_and_dropped_and_nothing_else_changes(
    edit: str, size: int
) -> None:
    clean = run_import(chunks(FEED.read_bytes(), size))
    damaged = run_import(chunks(_damaged(edit), size))
    name = "3.scte35" if edit == "crc" else "6.klv"
    kept = [f for g in damaged.tracks[name] for f in g]
    whole = [f for g in clean.tracks[name] for f in g]
    assert len(kept) == len(whole) - 1
    dropped = 1 if edit == "crc" else 2
    assert [decode_frame(f)[1] for f in kept] == [
        decode_frame(f)[1] for f in whole[:dropped] + whole[dropped + 1 :]
    ]
    for other in clean.tracks:
        if other != name:
            assert _payloads(damaged, other) == _payloads(clean, other), other
    problems = damaged.importer.problems
    if edit == "crc":
        (section,) = [p for p in problems if isinstance(p, BadSection)]
        assert section.pid == 0x1F4
        assert "CRC mismatch" in section.message
    else:
        (short,) = [p for p in problems if isinstance(p, BadPes)]
        assert short.pid == 0x302
        assert "PES ends after" in short.message
    assert len(problems) == 1


def _payloads(result: Imported, name: str) -> list[bytes]:
    sections = result.section_tracks()
    return [
        bytes(decode_frame(f)[1]) if name in sections else f for g in result.tracks[name] for f in g
    ]


def test_lost_packets_of_a_section_stream_drop_the_cut_section_only() -> None:
    mux = Muxer()
    script = load_script()
    long = script.splice_insert(1, 90_000, out_of_network=True, duration_90k=None)
    private = bytes((0x80, 0x30 | 0x01, 0x90)) + bytes(range(256)) * 1 + bytes(144)  # 403 bytes
    table = pmt([Es(0x86, 0x1F4), Es(0x05, 0x1F5)])
    packets = mux.psi(table)
    packets += mux.packets(0x1F4, long, psi=True)
    cut = mux.packets(0x1F5, private, psi=True)
    packets += cut[:1] + cut[2:]  # the middle packet is lost
    packets += mux.packets(0x1F5, private, psi=True)
    result = run_import([b"".join(packets)])
    assert [bytes(decode_frame(f)[1]) for g in result.tracks["0.scte35"] for f in g] == [long]
    assert [bytes(decode_frame(f)[1]) for g in result.tracks["1.sections"] for f in g] == [private]
    (gap,) = result.importer.problems
    assert isinstance(gap, ContinuityGap)
    assert gap.pid == 0x1F5


def test_section_reader_takes_sections_split_and_packed_across_packets() -> None:
    script = load_script()
    writer = script._Packetizer()
    a = script.splice_insert(1, 1000, out_of_network=True, duration_90k=180_000)
    b = bytes((0x80, 0x30, 0xF0)) + bytes(240)  # a long private section, no syntax, no CRC
    packets = writer.section(0x1F4, a) + writer.section(0x1F4, b)
    packed = bytearray(packets[0])  # a second copy of `a` right behind the first one
    packed[4 + 1 + len(a) : 4 + 1 + 2 * len(a)] = a
    packed[3] = (packed[3] & 0xF0) | 15
    reader = SectionReader()
    found = []
    for packet in [bytes(packed), *packets[1:]]:
        sections, errors, gap = reader.packet(packet)
        assert errors == []
        found += sections
    assert found[:2] == [a, a]
    assert found[2:] == [b]
    bad = bytearray(a)
    bad[-1] ^= 1
    sections, errors, gap = SectionReader().packet(writer.section(0x1F4, bytes(bad))[0])
    assert (sections, gap) == ([], None)
    assert errors[0].startswith("CRC mismatch")


def test_mpeg_video_keyframes_are_a_sequence_header_and_an_i_picture() -> None:
    sequence = b"\x00\x00\x01\xb3" + bytes(8)
    i_picture = b"\x00\x00\x01\x00\x00\x08" + bytes(4)  # picture_coding_type 1
    p_picture = b"\x00\x00\x01\x00\x00\x10" + bytes(4)  # 2
    assert mpeg_video_keyframe(sequence + b"\x00\x00\x01\xb8" + bytes(4) + i_picture)
    assert not mpeg_video_keyframe(i_picture)
    assert not mpeg_video_keyframe(sequence + p_picture)
    assert not mpeg_video_keyframe(sequence)


def test_mpeg2_video_round_trips_in_gops_and_decodes() -> None:
    path = FIXTURES / "mpeg2_mp2.ts"
    result = run_import(chunks(path.read_bytes(), 1316))
    groups = result.tracks["0.mpeg2video"]
    # ffprobe -show_packets: 75 pictures, 8 of them keyframes (a closed GOP of 12, 3 s at 25 fps)
    assert len(groups) == 8
    assert sum(map(len, groups)) == 75
    data, exporter = round_trip(path.read_bytes())
    assert exporter.problems == []
    out = parse_packets(data)
    source = parse_packets(path.read_bytes())
    assert units(out, 0x100, sections=False) == units(source, 0x100, sections=False)
    keyframes = [p for p in out if p.pid == 0x100 and p.random_access]
    assert len(keyframes) == 8
    # decoding is the proof the PES and their DTS came back right
    with av.open(str(path)) as container:
        want = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
    decoded = 0
    with av.open(io.BytesIO(data), "r", format="mpegts") as output:
        for packet in output.demux(output.streams.video[0]):
            decoded += len(packet.decode())
    assert decoded == want == 75


def test_moq_rs_carries_the_mpegts_section_as_an_application_section() -> None:
    """moq-rs 0.5.1 (hang) keeps unknown root keys of a catalog as `Catalog.sections`: the
    section the importer writes survives its catalog serialization and parsing unchanged,
    beside renditions it reads as before. (Needs moq-rs, which the MoQ branch declares.)"""
    import moq

    catalog = run_import(chunks(FEED.read_bytes(), 1 << 16)).catalogs[-1]
    section = catalog.to_dict()["mpegts"]

    async def read_back() -> object:
        producer = moq.BroadcastProducer()
        producer.set_catalog_section("mpegts", section)
        async with asyncio.timeout(5):
            parsed = await producer.consume().catalog()
        return parsed.sections["mpegts"]

    value = asyncio.run(read_back())
    assert (json.loads(value) if isinstance(value, str) else value) == section
    assert TsProgramInfo.from_dict(section).tracks["3.scte35"].units == "section"


def test_a_source_pid_that_collides_is_moved_and_undescribed_tracks_avoid_source_pids() -> None:
    catalog = run_import(chunks(FEED.read_bytes(), 1 << 16)).catalogs[-1]
    section = catalog.extra["mpegts"]
    section["pmtPid"] = 0x101  # the first AAC's PID
    del section["tracks"]["0.avc3"]  # a rendition the section does not describe
    exporter = TsExporter()
    exporter.set_catalog(catalog)
    pids = exporter.track_pids()
    claimed = {0x101, 0x102, 0x1F4, 0x300, 0x301, 0x302}  # the PMT's, and described tracks'
    assert {n: p for n, p in pids.items() if p in claimed} == {
        "2.aac": 0x102, "3.scte35": 0x1F4, "4.dvbsub": 0x300, "5.teletext": 0x301,
        "6.klv": 0x302,
    }  # fmt: skip
    assert len(set(pids.values())) == len(pids) == 7
    out = parse_packets(ts_of(exporter.push("0.avc3", catalog_frame(), keyframe=True)))
    assert psi_sections(out, 0)[0].body[2:4] == bytes((0xE1, 0x01))  # PMT PID 0x101


def catalog_frame() -> bytes:
    """The first frame of feed.ts's video track (a keyframe)."""
    result = run_import(chunks(FEED.read_bytes(), 1 << 16))
    return result.tracks["0.avc3"][0][0]


#: corrupt.ts has garbage between packets, which the reference reader does not skip.
@pytest.mark.parametrize(
    "name", sorted(p.name for p in FIXTURES.glob("*.ts") if p.name != "corrupt.ts")
)
def test_every_fixture_comes_back_with_its_pat_and_pmt(name: str) -> None:
    """Program number, PMT PID and the PMT's content but for the PCR PID (stream types, PIDs,
    ES descriptors such as ISO 639, AC-3/E-AC-3 and Opus ones, program descriptors) and its
    order are the source's, whatever the codec."""
    data = (FIXTURES / name).read_bytes()
    source = parse_packets(data[data.index(b"\x47") :][: len(data) // 188 * 188 - 188])
    (program, pmt_pid), *_ = (
        (n, pid) for n, pid in _pat_entries(psi_sections(source, 0)[0].body) if n
    )
    out = parse_packets(round_trip(data)[0])
    assert list(_pat_entries(psi_sections(out, 0)[0].body)) == [(program, pmt_pid)]
    assert pmt_of(out, pmt_pid) == pmt_of(source, pmt_pid)


def _pat_entries(body: bytes) -> list[tuple[int, int]]:
    return [
        (
            int.from_bytes(body[i : i + 2], "big"),
            int.from_bytes(body[i + 2 : i + 4], "big") & 0x1FFF,
        )
        for i in range(0, len(body), 4)
    ]


def test_a_partial_section_is_counted_in_held_bytes_and_bounded() -> None:
    mux = Muxer()
    importer = TsImporter(BroadcastProducer(pool=CachePool(None)))
    importer.feed(b"".join(mux.psi(pmt([Es(0x05, 0x1F5)]))))
    base = importer.held_bytes
    private = bytes((0x80, 0x30 | 0x0F, 0xFD)) + bytes(4093)  # the longest private section
    packets = mux.packets(0x1F5, private, psi=True)
    importer.feed(b"".join(packets[:10]))
    assert importer.held_bytes - base == 10 * 184 - 1  # less the pointer_field
    importer.feed(b"".join(packets[10:]))
    assert importer.held_bytes == base
    assert importer.tracks["0.sections"].frames == 1
