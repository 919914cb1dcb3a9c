"""Round trip: fixture TS -> TsImporter -> model broadcast -> TsExporter -> PyAV decode.

The reference for every count and timestamp is the fixture itself as libavformat demuxes it
(corrupt PES discarded, video from its first keyframe, the importer's specification in
tests/media.py); the only rule of ours applied is the exporter's documented start: audio
older than the first keyframe's DTS (PTS - 150 ms reorder reserve) is not written.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from gateway.ts_source import export_broadcast
from model import BroadcastConsumer, BroadcastProducer, CachePool, Evicted
from mux import TsImporter
from mux.catalog import CATALOG_TRACK, Catalog
from mux.container import decode_frame
from mux.export import DEFAULT_REORDER_MS, TsChunk, TsExporter
from tests.unit.mux.test_export_support import (
    check_continuity,
    decode_ts,
    parse_packets,
    parse_pat,
    parse_pmt,
    pes_units,
    psi_sections,
    ts_of,
)

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"
PTS_WRAP = 1 << 33
#: Fixtures with several streams of a kind or streams carried opaquely round-trip in
#: tests/unit/mux/test_opaque.py.
FIDELITY = {"feed.ts", "mpeg2_mp2.ts"}
ALL = sorted(p.name for p in FIXTURES.glob("*.ts") if p.name not in FIDELITY)


@dataclass(frozen=True, slots=True)
class Reference:
    """One stream of a fixture as libavformat demuxes it: PTS (90 kHz, mod 2**33) per frame."""

    kind: str
    codec: str
    pts_90k: list[int]


def reference(path: Path) -> dict[str, Reference]:
    """Per stream kind ("video"/"audio"), the frames the importer must carry, from PyAV."""
    out: dict[str, Reference] = {}
    with av.open(str(path), options={"fflags": "+discardcorrupt"}) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        kinds = {s.index: s.type for s in streams}
        assert len(set(kinds.values())) == len(streams), "one stream per kind in a fixture"
        seen_key = {s.index: s.type == "audio" for s in streams}
        pts: dict[int, list[int]] = {s.index: [] for s in streams}
        for packet in container.demux(*streams):
            if packet.size == 0 or packet.pts is None:
                continue
            index = packet.stream.index
            seen_key[index] = seen_key[index] or bool(packet.is_keyframe)
            if seen_key[index]:
                pts[index].append(packet.pts % PTS_WRAP)
        for s in streams:
            out[s.type] = Reference(s.type, s.codec_context.name, pts[s.index])
    return out


async def read_broadcast(
    consumer: BroadcastConsumer,
) -> tuple[Catalog, list[tuple[str, bytes, bool]]]:
    """Every cached frame of a finished broadcast, tracks merged by timestamp (the driver's
    order: per track in sequence, by running-max timestamp across tracks)."""
    catalog_track = consumer.subscribe_track(CATALOG_TRACK)
    assert catalog_track.latest_sequence is not None
    group = await catalog_track.fetch_group(catalog_track.latest_sequence)
    catalog = Catalog.from_json((await group.read_all())[0])
    keyed = []
    for order, name in enumerate(catalog.track_names()):
        track = consumer.subscribe_track(name)
        latest = track.latest_sequence
        key = -1
        index = 0
        for sequence in range(0 if latest is None else latest + 1):
            try:
                frames = await (await track.fetch_group(sequence)).read_all()
            except Evicted:
                continue
            for i, frame in enumerate(frames):
                key = max(key, decode_frame(frame)[0])
                keyed.append((key, order, index, name, frame, i == 0))
                index += 1
    keyed.sort(key=lambda item: item[:3])
    return catalog, [(name, frame, first) for _, _, _, name, frame, first in keyed]


def imported(path: Path) -> BroadcastProducer:
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast)
    importer.feed(path.read_bytes())
    importer.finish()
    return broadcast


def kept_audio(ref: dict[str, Reference]) -> list[int]:
    """The reference audio PTS the exporter writes: all of them, or (with video) those not
    older than the first keyframe's DTS."""
    audio = ref["audio"].pts_90k
    if "video" not in ref:
        return audio
    start_dts = ref["video"].pts_90k[0] - DEFAULT_REORDER_MS * 90
    return [p for p in audio if (p - start_dts) % PTS_WRAP < PTS_WRAP // 2]


def close_mod(a: int | None, b: int) -> bool:
    assert a is not None
    diff = (a - b) % PTS_WRAP
    return min(diff, PTS_WRAP - diff) <= 1


@pytest.mark.parametrize("name", ALL)
async def test_import_then_export_decodes_the_same_frames_at_the_same_times(name: str) -> None:
    path = FIXTURES / name
    ref = reference(path)
    catalog, frames = await read_broadcast(imported(path).consume())
    exporter = TsExporter()
    exporter.set_catalog(catalog)
    chunks: list[TsChunk] = []
    for track, frame, keyframe in frames:
        chunks += exporter.push(track, frame, keyframe=keyframe)
    data = ts_of(chunks)

    assert exporter.problems == []
    packets = parse_packets(data)
    check_continuity(packets)
    pmt_pid = parse_pat(psi_sections(packets, 0)[0])[1]
    _, streams = parse_pmt(psi_sections(packets, pmt_pid)[0])
    pids = {("video" if s.stream_type in (0x1B, 0x24) else "audio"): s.pid for s in streams}
    assert set(pids) == set(ref)

    if "video" in ref:
        video = pes_units(packets, pids["video"])
        assert len(video) == len(ref["video"].pts_90k)
        assert all(
            close_mod(p.pts_90k, r) for p, r in zip(video, ref["video"].pts_90k, strict=True)
        )
    if "audio" in ref:
        audio = pes_units(packets, pids["audio"])
        expected = kept_audio(ref)
        assert len(audio) == len(expected)
        assert all(close_mod(p.pts_90k, r) for p, r in zip(audio, expected, strict=True))

    decoded = decode_ts(data)
    assert decoded.errors == []
    if "video" in ref:
        assert decoded.video_codec == ref["video"].codec
        assert decoded.video_frames == len(ref["video"].pts_90k)
        assert decoded.first_video_key is True
    if "audio" in ref:
        assert decoded.audio_codec == ref["audio"].codec
        assert decoded.audio_frames == len(kept_audio(ref))


async def test_a_live_import_exported_through_the_model_plays_from_the_first_byte() -> None:
    path = FIXTURES / "h264_aac.ts"
    ref = reference(path)
    broadcast = BroadcastProducer(pool=CachePool(None))
    importer = TsImporter(broadcast)
    data = path.read_bytes()
    chunks: list[TsChunk] = []

    async def consume() -> None:
        async with contextlib.aclosing(export_broadcast(broadcast.consume())) as stream:
            async for chunk in stream:
                chunks.append(chunk)

    async with asyncio.timeout(30):
        reader = asyncio.create_task(consume())
        for offset in range(0, len(data), 1316):
            importer.feed(data[offset : offset + 1316])
            await asyncio.sleep(0)
        importer.finish()
        await reader
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.first_video_key is True
    # the exporter subscribed while the first GOP was the latest group: every picture arrives
    assert decoded.video_frames == len(ref["video"].pts_90k)
    # audio tracks start at their latest group (one per frame) when subscribed
    assert len(kept_audio(ref)) - 5 <= decoded.audio_frames <= len(kept_audio(ref))
