"""What goes in comes out: every stream of a contribution feed, and what its PMT says about it,
reaches an SRT viewer (issue 9).

ffmpeg publishes a fixture over SRT and ffmpeg pulls it (m=request), both moving the TS bytes
as they are (`-f u8` in and out: ffmpeg as a paced SRT transport). ffmpeg 5.1's mpegts muxer
cannot be the publisher or the viewer here: on a stream copy it renumbers PIDs and program and
writes SCTE-35 as a PES, so it would change what it is asked to carry. A second viewer does
pull with ffmpeg's mpegts demuxer and muxer, as an operator would, to show what survives that.

Everything is compared with the fixture as ffprobe reads it and as an independent TS reader
(tests/unit/mux/test_export_support.py, the fixture script's own PMT reader) parses it: program
number, PMT PID, PIDs, stream types, languages, descriptors, and the units (PES, sections,
frames) from the viewer's join point on. PyAV decodes the video.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from mux.container import decode_frame
from tests.integration.conftest import (
    ROOT,
    Procs,
    assert_arrived,
    decode_video,
    ffmpeg_pull_argv,
    run_gateway,
    srt_url,
)
from tests.integration.moq_helpers import run_moq
from tests.unit.mux.test_export_support import Packet, parse_packets
from tests.unit.mux.test_opaque import units

FIXTURES = ROOT / "fixtures"
PTS_WRAP = 1 << 33
#: A viewer gets the video from the current GOP's keyframe (the GOP so far in one burst) and
#: every other track from its latest group, one unit each (gateway/ts_source.py): units
#: presented within a GOP (1 s in the fixtures) of the join keyframe may come before the
#: first one the viewer gets; every later one must arrive.
JOIN_MARGIN_90K = 90_000 + 90_000 // 5


def ffmpeg_raw_publish_argv(port: int, stream_id: str, source: Path) -> list[str]:
    """ffmpeg sending `source`'s bytes unchanged, paced in real time over the file's duration,
    in 1316-byte SRT messages (`-f u8`: the file is read and written as opaque samples)."""
    rate = round(source.stat().st_size / _duration_s(source))
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-f", "u8", "-ar", str(rate), "-ac", "1", "-i", str(source),
        "-c", "copy", "-flush_packets", "0", "-f", "u8",
        srt_url(port, stream_id, linger=2, pkt_size=1316),
    ]  # fmt: skip


def ffmpeg_raw_pull_argv(port: int, stream_id: str, out: Path) -> list[str]:
    """ffmpeg writing the bytes of an m=request stream to `out` as they arrive."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "u8", "-ar", "48000", "-ac", "1",
        "-i", srt_url(port, stream_id, timeout=4_000_000),
        "-c", "copy", "-f", "u8", str(out),
    ]  # fmt: skip


def _duration_s(path: Path) -> float:
    return float(_ffprobe(path, "-show_entries", "format=duration")["format"]["duration"])


def _ffprobe(path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass(frozen=True, slots=True)
class Probed:
    """A TS file as ffprobe reads it: program, streams by PID, packet PTS per PID."""

    program_number: int
    pmt_pid: int
    streams: dict[int, dict[str, Any]]
    pts: dict[int, list[int]]


def probe(path: Path) -> Probed:
    report = _ffprobe(
        path,
        "-show_programs",
        "-show_entries",
        "stream=index,id,codec_type,codec_name,codec_tag_string:stream_tags=language"
        ":packet=stream_index,pts",
    )
    (program,) = [p for p in report["programs"] if p["nb_streams"]]
    streams = {int(s["id"], 16): s for s in report["streams"]}
    by_index = {s["index"]: pid for pid, s in streams.items()}
    pts: dict[int, list[int]] = {pid: [] for pid in streams}
    for packet in report["packets"]:
        if "pts" in packet:
            pts[by_index[packet["stream_index"]]].append(packet["pts"])
    return Probed(program["program_num"], program["pmt_pid"], streams, pts)


@dataclass(frozen=True, slots=True)
class Pmt:
    """A PMT as the fixture script's reader parses it (independent of `mux`)."""

    program_number: int
    descriptors: bytes
    streams: dict[int, tuple[int, bytes]]  # PID -> (stream_type, ES_info descriptors)


def read_pmt(packets: list[Packet], pmt_pid: int) -> Pmt:
    script = _fixture_script()
    first = next(p for p in packets if p.pid == pmt_pid and p.pusi)
    payload = first.payload[1 + first.payload[0] :]
    section = payload[: 3 + (((payload[1] & 0x0F) << 8) | payload[2])]
    number, _, descriptors, streams = script._read_pmt(section)
    return Pmt(number, descriptors, {pid: (st, info) for st, pid, info in streams})


def _fixture_script() -> Any:
    from tests.unit.mux.test_fixture_script import load_script

    return load_script()


def pes_pts(pes: bytes) -> int:
    """The PTS of a PES that has one."""
    assert pes[7] & 0x80
    b = pes[9:14]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def splice_times(section: bytes) -> tuple[int, int]:
    """(splice_event_id, pts_time + pts_adjustment) of an SCTE-35 splice_insert section."""
    assert section[0] == 0xFC
    assert section[13] == 0x05
    adjustment = ((section[4] & 1) << 32) | int.from_bytes(section[5:9], "big")
    event_id = int.from_bytes(section[14:18], "big")
    flags = section[19]
    assert flags & 0x40  # program splice
    assert not flags & 0x10  # not immediate
    assert section[20] & 0x80  # time_specified
    pts = ((section[20] & 1) << 32) | int.from_bytes(section[21:25], "big")
    return event_id, (pts + adjustment) % PTS_WRAP


def assert_suffix(got: list[Any], source: list[Any], what: str) -> None:
    """`got` is the tail of `source`: the same units in the same order, from some point to the
    end of the stream."""
    assert got, f"{what}: nothing arrived"
    assert len(got) <= len(source), what
    assert got == source[len(source) - len(got) :], f"{what}: not the source's tail"


async def relay(fixture: Path, procs: Procs, tmp: Path, *, join_after_s: float) -> dict[str, Any]:
    raw = tmp / "raw.ts"
    remuxed = tmp / "remuxed.ts"
    publish, request = "#!::r=live/feed,m=publish", "#!::r=live/feed,m=request"
    async with run_gateway() as gw:
        publisher = procs.start("publish", ffmpeg_raw_publish_argv(gw.port, publish, fixture))
        await gw.wait_live("live/feed", 10)
        await asyncio.sleep(join_after_s)
        viewer = procs.start("pull-raw", ffmpeg_raw_pull_argv(gw.port, request, raw))
        remuxer = procs.start("pull-remux", ffmpeg_pull_argv(gw.port, request, remuxed))
        assert await publisher.wait(40) == 0, publisher.stderr()
        assert await viewer.wait(20) == 0, viewer.stderr()
        assert await remuxer.wait(20) == 0, remuxer.stderr()
        records = await gw.wait_records(3, 10)
    egress = [r for r in records if r.role == "egress"]
    ingress = next(r for r in records if r.role == "ingress")
    return {"raw": raw, "remuxed": remuxed, "egress": egress, "ingress": ingress}


async def test_a_contribution_feed_reaches_the_viewer_with_every_stream_intact(
    procs: Procs, tmp_path: Path
) -> None:
    fixture = FIXTURES / "feed.ts"
    check_feed(fixture, await relay(fixture, procs, tmp_path, join_after_s=1.3))


def check_feed(fixture: Path, got: dict[str, Any]) -> None:
    raw: Path = got["raw"]
    data = raw.read_bytes()
    assert got["ingress"].ts_bytes == fixture.stat().st_size  # ffmpeg sent the file as it is
    # The raw viewer's record: billed no more than it received, nor less but for what it
    # reports skipped or dropped (tests/integration/conftest.py, assert_arrived).
    (raw_record,) = [
        r
        for r in got["egress"]
        if r.ts_bytes <= len(data) <= r.ts_bytes + r.skipped_ts_bytes + r.dropped_ts_bytes
    ][:1]
    assert_arrived(len(data), raw_record)

    # Program, PIDs, stream types, languages: ffprobe's reading of the source and the output.
    source, out = probe(fixture), probe(raw)
    assert (out.program_number, out.pmt_pid) == (source.program_number, source.pmt_pid)
    assert (out.program_number, out.pmt_pid) == (0x101, 0x20)
    assert set(out.streams) == set(source.streams) == {
        0x100, 0x101, 0x102, 0x1F4, 0x300, 0x301, 0x302,
    }  # fmt: skip
    for pid, stream in source.streams.items():
        assert out.streams[pid] == stream, hex(pid)
    languages = {pid: s.get("tags", {}).get("language") for pid, s in out.streams.items()}
    assert languages == {
        0x100: None, 0x101: "eng", 0x102: "fra", 0x1F4: None, 0x300: "eng", 0x301: "deu",
        0x302: None,
    }  # fmt: skip
    kinds = {pid: s["codec_name"] for pid, s in out.streams.items()}
    assert (kinds[0x1F4], kinds[0x302]) == ("scte_35", "klv")
    assert (kinds[0x300], kinds[0x301]) == ("dvb_subtitle", "dvb_teletext")

    # The PMT's words, byte for byte: program descriptors (CUEI), each stream's descriptors.
    source_packets, out_packets = parse_packets(fixture.read_bytes()), parse_packets(data)
    source_pmt, out_pmt = read_pmt(source_packets, 0x20), read_pmt(out_packets, 0x20)
    assert out_pmt.program_number == source_pmt.program_number
    assert out_pmt.descriptors == source_pmt.descriptors == b"\x05\x04CUEI"
    assert out_pmt.streams == source_pmt.streams

    # Units from the join point on: the opaque ones byte for byte, decoded ones by PTS.
    video_pts = out.pts[0x100]
    join_pts = video_pts[0]
    assert join_pts > source.pts[0x100][0]  # the viewer joined mid-stream
    for pid, sections in ((0x1F4, True), (0x300, False), (0x301, False), (0x302, False)):
        tail = units(out_packets, pid, sections=sections)
        whole = units(source_packets, pid, sections=sections)
        assert_suffix(tail, whole, hex(pid))
        if not sections:  # every unit presented a GOP after the join arrived
            later = [u for u in whole if pes_pts(u) > join_pts + JOIN_MARGIN_90K]
            assert len(tail) >= len(later), hex(pid)
    for pid in (0x100, 0x101, 0x102):
        first = out.pts[pid][0]
        assert out.pts[pid] == [p for p in source.pts[pid] if p >= first], hex(pid)
        assert first <= join_pts + JOIN_MARGIN_90K, hex(pid)
    # The splice markers: same events at the same PTS as the fixture script wrote them.
    t0 = source.pts[0x100][0]
    splices = [splice_times(s) for s in units(out_packets, 0x1F4, sections=True)]
    assert splices, "no SCTE-35 section arrived"
    written = {(1, t0 + 2 * 90_000), (2, t0 + 4 * 90_000)}
    assert set(splices) <= written
    assert (2, t0 + 4 * 90_000) in splices  # announced after the join: must be there

    decoded = decode_video(raw)
    assert decoded.first_is_keyframe
    assert decoded.errors == 0
    assert decoded.frames == len(video_pts)

    # An ffmpeg remux pull (mpegts demuxer and muxer): the languages and kinds survive it.
    remuxed = probe(got["remuxed"])
    described = sorted(
        (s["codec_name"], s.get("tags", {}).get("language")) for s in remuxed.streams.values()
    )
    for kind in (("aac", "eng"), ("aac", "fra"), ("dvb_subtitle", "eng"), ("dvb_teletext", "deu")):
        assert kind in described
    assert ("klv", None) in described


async def test_mpeg2_video_with_audio_reaches_the_viewer_in_whole_gops(
    procs: Procs, tmp_path: Path
) -> None:
    fixture = FIXTURES / "mpeg2_mp2.ts"
    check_mpeg2(fixture, await relay(fixture, procs, tmp_path, join_after_s=1.0))


def check_mpeg2(fixture: Path, got: dict[str, Any]) -> None:
    raw: Path = got["raw"]
    data = raw.read_bytes()
    source, out = probe(fixture), probe(raw)
    assert (out.program_number, out.pmt_pid) == (source.program_number, source.pmt_pid)
    assert out.streams == source.streams
    assert out.streams[0x100]["codec_name"] == "mpeg2video"
    assert out.streams[0x101]["tags"]["language"] == "eng"
    source_packets, out_packets = parse_packets(fixture.read_bytes()), parse_packets(data)
    assert (
        read_pmt(out_packets, out.pmt_pid).streams
        == read_pmt(source_packets, source.pmt_pid).streams
    )
    # The video PES arrive verbatim from a GOP start (sequence header) to the end.
    tail = units(out_packets, 0x100, sections=False)
    assert_suffix(tail, units(source_packets, 0x100, sections=False), "mpeg2 video")
    assert b"\x00\x00\x01\xb3" in tail[0]
    assert out.pts[0x100][0] > source.pts[0x100][0]  # joined mid-stream
    first = out.pts[0x101][0]
    assert out.pts[0x101] == [p for p in source.pts[0x101] if p >= first]

    with av.open(str(raw)) as container:
        stream = container.streams.video[0]
        frames = errors = 0
        for packet in container.demux(stream):
            try:
                frames += len(packet.decode())
            except av.error.FFmpegError:
                errors += 1
    assert errors == 0
    assert frames == len(tail)


@pytest.fixture(autouse=True)
def _fixtures_exist() -> None:
    for name in ("feed.ts", "mpeg2_mp2.ts"):
        assert (FIXTURES / name).exists(), f"run `make fixtures` ({name} is missing)"


async def test_a_moq_rs_viewer_reads_the_catalog_and_an_opaque_track(procs: Procs) -> None:
    """moq-rs parses the catalog with its `mpegts` section (an application section beside the
    renditions it decodes) and reads an opaque track: each frame is the varint timestamp and
    one KLV PES exactly as the publisher sent it."""
    fixture = FIXTURES / "feed.ts"
    path = "live/feed"
    async with run_gateway() as gw, run_moq(gw.origin, gw.stats) as mq:
        publisher = procs.start(
            "publish", ffmpeg_raw_publish_argv(gw.port, f"#!::r={path},m=publish", fixture)
        )
        await gw.wait_live(path, 10)
        async with asyncio.timeout(40), mq.client("quic") as client:
            announced = client.announced()
            async for update in announced:
                if update.active and update.prefix == path:
                    break
            announced.cancel()
            broadcast = await client.request_broadcast(path)
            catalog = await broadcast.catalog()
            klv = await broadcast.subscribe_track("6.klv")
            frames: list[bytes] = []
            while (group := await klv.recv_group()) is not None:
                frames += [frame.payload async for frame in group]
        assert await publisher.wait(30) == 0, publisher.stderr()
    assert len(catalog.video) == 1
    assert len(catalog.audio) == 2
    section = catalog.sections["mpegts"]
    section = json.loads(section) if isinstance(section, str) else section
    assert section["program"] == 0x101
    assert section["tracks"]["6.klv"] == {
        "pid": 0x302, "streamType": 6, "descriptors": "05044b4c5641", "units": "pes",
        "kind": "klv",
    }  # fmt: skip
    source = units(parse_packets(fixture.read_bytes()), 0x302, sections=False)
    got = [bytes(decode_frame(frame)[1]) for frame in frames]
    assert_suffix(got, source, "KLV over MoQ")
    assert [decode_frame(f)[0] for f in frames] == [pes_pts(u) * 100 // 9 for u in got]
