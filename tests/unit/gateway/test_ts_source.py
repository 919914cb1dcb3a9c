"""export_broadcast: a real model broadcast, written by a task, exported to TS and decoded."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence

import pytest
import structlog.testing

from gateway.ts_source import export_broadcast
from model import BroadcastConsumer, BroadcastProducer, GroupProducer, TrackProducer, Usage
from mux.catalog import CATALOG_TRACK, Catalog, VideoConfig
from mux.export import TsChunk, TsExporter
from tests.unit.mux.test_export_support import (
    EncodedTrack,
    Push,
    catalog_of,
    decode_ts,
    encode_audio,
    encode_video,
    interleave,
    parse_packets,
    pes_units,
    psi_sections,
    ts_of,
)

BOUND_S = 10


@functools.cache
def media() -> tuple[EncodedTrack, EncodedTrack]:
    """4 s of H.264 (30 fps, GOP 1 s, B-frames) and AAC, 48 kHz stereo."""
    return encode_video(frames=120), encode_audio(seconds=4.0)


class Writer:
    """Writes encoded tracks into a broadcast the way the importer does (group = GOP for video,
    one group per audio frame, catalog group first)."""

    def __init__(self, broadcast: BroadcastProducer, tracks: Sequence[EncodedTrack]) -> None:
        self.broadcast = broadcast
        self.catalog = broadcast.create_track(CATALOG_TRACK)
        self.tracks: dict[str, TrackProducer] = {
            t.name: broadcast.create_track(t.name) for t in tracks
        }
        self.groups: dict[str, GroupProducer] = {}
        self.write_catalog(catalog_of(tracks))

    def write_catalog(self, catalog: Catalog) -> None:
        self.catalog.write_frame(catalog.to_json())

    def write(self, push: Push) -> None:
        track = self.tracks[push.track]
        if push.track.endswith((".avc3", ".hev1")):
            if push.keyframe or push.track not in self.groups:
                old = self.groups.pop(push.track, None)
                if old is not None:
                    old.finish()
                self.groups[push.track] = track.append_group()
            self.groups[push.track].write_frame(push.frame)
        else:
            track.write_frame(push.frame)

    def finish(self) -> None:
        for group in self.groups.values():
            group.finish()
        self.broadcast.finish()


async def settle() -> None:
    """Let every ready task run until the loop is idle (no I/O is involved)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def collect(
    consumer: BroadcastConsumer, *, latency_ms: int = 500, exporter: TsExporter | None = None
) -> list[TsChunk]:
    chunks = []
    async with contextlib.aclosing(
        export_broadcast(consumer, latency_ms=latency_ms, exporter=exporter)
    ) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    return chunks


async def test_exports_a_broadcast_written_live_and_ends_when_it_finishes() -> None:
    video, audio = media()
    broadcast = BroadcastProducer()
    usage = Usage()
    writer = Writer(broadcast, [video, audio])
    exporter = TsExporter()
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(
            collect(broadcast.consume().with_meter(usage), exporter=exporter)
        )
        await settle()  # the exporter has subscribed to every track
        for i, push in enumerate(interleave([video, audio])):
            writer.write(push)
            if i % 10 == 0:
                await asyncio.sleep(0)
        writer.finish()
        chunks = await reader
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.video_frames == len(video.frames)
    # the AAC priming frame precedes the keyframe: held and written after it
    assert audio.frames[0].pts_us < video.frames[0].pts_us
    assert decoded.audio_frames == len(audio.frames)
    assert decoded.first_video_key is True
    assert exporter.stats.frames_dropped == 0
    # egress is metered per frame read: every media frame and the catalog group
    assert usage.frames == len(video.frames) + len(audio.frames) + 1


async def test_a_late_joiner_starts_at_the_current_gop_and_plays_from_its_first_byte() -> None:
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])
    pushes = interleave([video, audio])
    # two and a half GOPs before anyone watches
    join_us = video.frames[0].dts_us + 2_500_000
    before = [p for p in pushes if p.source.dts_us < join_us]
    for push in before:
        writer.write(push)
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(collect(broadcast.consume()))
        await settle()
        for push in pushes[len(before) :]:
            writer.write(push)
            await asyncio.sleep(0)
        writer.finish()
        chunks = await reader
    data = ts_of(chunks)
    packets = parse_packets(data)
    assert [p.pid for p in packets[:2]] == [0, 0x1000]
    decoded = decode_ts(data)
    assert decoded.errors == []
    assert decoded.first_video_key is True
    # the third GOP (frames 60..89) was the latest group when the exporter subscribed
    assert decoded.video_frames == len(video.frames) - 60
    first_video_pts = min(decoded.video_pts_us)
    assert abs(first_video_pts - video.frames[60].pts_us) <= 12


async def test_raises_the_abort_error_when_the_broadcast_aborts() -> None:
    class Boom(Exception):
        pass

    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])
    chunks: list[TsChunk] = []

    async def consume() -> None:
        async for chunk in export_broadcast(broadcast.consume()):
            chunks.append(chunk)

    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(consume())
        await settle()
        for push in interleave([video, audio])[:100]:
            writer.write(push)
        await settle()
        broadcast.abort(Boom("publisher went away"))
        with pytest.raises(Boom, match="publisher went away"):
            await reader
    assert chunks, "what was exported before the abort was yielded"


async def test_the_producer_is_never_held_back_by_an_idle_reader() -> None:
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])
    pushes = interleave([video, audio])
    async with asyncio.timeout(BOUND_S):
        stream = export_broadcast(broadcast.consume())

        async def first_chunk() -> TsChunk:
            return await anext(stream)

        first = asyncio.create_task(first_chunk())
        await settle()
        writer.write(pushes[0])
        chunk = await first
        assert chunk.data[:1] == b"\x47"
        # nobody iterates the generator now; the writer never waits for it
        for _ in range(3):
            for push in pushes[1:]:
                writer.write(push)
            await settle()
        writer.finish()
        rest = [c async for c in stream]
        await stream.aclose()
    assert decode_ts(ts_of([chunk, *rest])).errors == []


async def test_video_is_not_held_for_a_silent_audio_track() -> None:
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])  # the audio track never gets a frame
    got: list[TsChunk] = []
    arrived = asyncio.Event()
    latency_ms = 300

    async def consume() -> None:
        async for chunk in export_broadcast(broadcast.consume(), latency_ms=latency_ms):
            got.append(chunk)
            arrived.set()

    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(consume())
        await settle()
        video_pushes = [p for p in interleave([video]) if p.track == video.name]
        writer.write(video_pushes[0])
        await asyncio.sleep(latency_ms / 1000 * 2)
        assert got, "the first keyframe went out within twice the latency"
        # once the audio track counts as silent, video flows without waiting
        loop = asyncio.get_running_loop()
        for push in video_pushes[1:30]:
            arrived.clear()
            writer.write(push)
            started = loop.time()
            await arrived.wait()
            assert loop.time() - started < latency_ms / 1000 / 2
        writer.finish()
        await reader


async def test_a_new_catalog_adds_a_track_and_bumps_the_pmt_version() -> None:
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video])
    audio_track = broadcast.create_track(audio.name)
    pushes = interleave([video, audio])
    switch_us = video.frames[0].dts_us + 1_000_000
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(collect(broadcast.consume()))
        await settle()
        catalog_sent = False
        for push in pushes:
            if push.track == audio.name:
                if push.source.dts_us < switch_us:
                    continue
                if not catalog_sent:
                    writer.write_catalog(catalog_of([video, audio]))
                    catalog_sent = True
                    await settle()
                audio_track.write_frame(push.frame)
            else:
                writer.write(push)
            await asyncio.sleep(0)
        writer.finish()
        chunks = await reader
    packets = parse_packets(ts_of(chunks))
    versions = {s.version for s in psi_sections(packets, 0x1000)}
    assert versions == {0, 1}
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.video_frames == len(video.frames)
    expected_audio = [f for f in audio.frames if f.dts_us >= switch_us]
    assert decoded.audio_frames == len(expected_audio)


async def test_a_stalled_group_is_abandoned_for_a_newer_one() -> None:
    video, _ = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video])
    track = writer.tracks[video.name]
    pushes = interleave([video])
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(collect(broadcast.consume(), latency_ms=100))
        await settle()
        stalled = track.append_group()  # a relay's group whose stream stops after 10 frames
        for push in pushes[:10]:
            stalled.write_frame(push.frame)
        fresh = track.append_group()
        for push in pushes[30:60]:
            fresh.write_frame(push.frame)
        fresh.finish()
        await asyncio.sleep(0.3)
        stalled.finish()
        broadcast.finish()
        chunks = await reader
    vpes = pes_units(parse_packets(ts_of(chunks)), 0x100)
    assert len(vpes) == 10 + 30
    decoded = decode_ts(ts_of(chunks))
    assert decoded.video_frames == 40
    assert decoded.errors == []


async def test_the_reader_runs_no_task_of_its_own_and_cancelling_it_leaves_nothing() -> None:
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])
    before = asyncio.all_tasks()
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(collect(broadcast.consume()))
        await settle()
        for push in interleave([video, audio])[:50]:
            writer.write(push)
        await settle()
        # Reading the catalog and two tracks, waiting on all of them: still only the caller.
        assert asyncio.all_tasks() == before | {reader}
        assert not reader.done()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
    await settle()
    assert asyncio.all_tasks() == before
    writer.finish()


async def test_ends_at_once_for_a_broadcast_without_catalog_that_finishes() -> None:
    broadcast = BroadcastProducer()
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(collect(broadcast.consume()))
        await asyncio.sleep(0.12)
        broadcast.finish()
        assert await reader == []


async def test_closing_the_stream_early_cancels_its_tasks() -> None:
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])
    before = asyncio.all_tasks()
    async with asyncio.timeout(BOUND_S):
        stream = export_broadcast(broadcast.consume())
        async with contextlib.aclosing(stream):
            pushes = iter(interleave([video, audio]))
            writer.write(next(pushes))
            async for chunk in stream:
                assert chunk.data[:1] == b"\x47"
                break
        await settle()
    assert asyncio.all_tasks() == before
    writer.finish()


async def test_unsupported_tracks_are_logged_and_the_rest_exported() -> None:
    _, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [audio])
    catalog = catalog_of([audio])
    catalog.video["0.av01"] = VideoConfig(codec="av01.0.08M.08")
    writer.write_catalog(catalog)
    av1 = broadcast.create_track("0.av01")
    async with asyncio.timeout(BOUND_S):
        with structlog.testing.capture_logs() as logs:
            reader = asyncio.create_task(collect(broadcast.consume()))
            await settle()
            for push in interleave([audio]):
                writer.write(push)
                av1.write_frame(push.frame)  # frames nobody exports
            await asyncio.sleep(0)
            writer.finish()
            chunks = await reader
    problems = [e for e in logs if e["event"] == "export.problem"]
    assert [(e["kind"], e["track"]) for e in problems] == [("unsupported_codec", "0.av01")]
    assert "av01" in problems[0]["message"]
    decoded = decode_ts(ts_of(chunks))
    assert decoded.errors == []
    assert decoded.video_frames == 0
    assert decoded.audio_frames == len(audio.frames)


async def test_video_goes_out_at_once_while_audio_lags_behind_in_bursts() -> None:
    """ffmpeg writes audio in bursts after the video it belongs to: video is not held for it."""
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])
    got: list[TsChunk] = []
    arrived = asyncio.Event()
    latency_ms = 500  # the old merge held each video frame up to this long for audio

    async def consume() -> None:
        async for chunk in export_broadcast(broadcast.consume(), latency_ms=latency_ms):
            got.append(chunk)
            arrived.set()

    pushes = interleave([video, audio])
    video_pushes = [p for p in pushes if p.track == video.name]
    audio_pushes = [p for p in pushes if p.track == audio.name]
    waits: list[float] = []
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(consume())
        await settle()
        loop = asyncio.get_running_loop()
        for i, push in enumerate(video_pushes):
            if i % 5 == 4:  # a burst of the audio up to ~150 ms behind this video frame
                cut = push.source.dts_us - 150_000
                while audio_pushes and audio_pushes[0].source.dts_us < cut:
                    writer.write(audio_pushes.pop(0))
            arrived.clear()
            writer.write(push)
            started = loop.time()
            await arrived.wait()
            waits.append(loop.time() - started)
        for push in audio_pushes:
            writer.write(push)
        writer.finish()
        await reader
    assert max(waits) < latency_ms / 1000 / 5
    decoded = decode_ts(ts_of(got))
    assert decoded.errors == []
    assert decoded.video_frames == len(video.frames)
    assert decoded.first_video_key is True
    assert decoded.audio_frames > len(audio.frames) * 0.9  # all but audio before the keyframe


async def test_frames_read_together_go_out_by_timestamp() -> None:
    """Whatever piled up while the generator was away is merged by timestamp across tracks."""
    video, audio = media()
    broadcast = BroadcastProducer()
    writer = Writer(broadcast, [video, audio])
    pushes = interleave([video, audio])
    async with asyncio.timeout(BOUND_S):
        reader = asyncio.create_task(collect(broadcast.consume()))
        await settle()
        # one track after the other, in one go: the merge restores the interleave
        for track in (video.name, audio.name):
            for push in pushes:
                if push.track == track and push.source.dts_us < video.frames[0].dts_us + 2e6:
                    writer.write(push)
        writer.finish()
        chunks = await reader
    packets = parse_packets(ts_of(chunks))
    starts = [(p.index, p.pid) for p in packets if p.pusi and p.pid in (0x100, 0x101)]
    assert {pid for _, pid in starts} == {0x100, 0x101}
    by_pid = {pid: iter(pes_units(packets, pid)) for pid in (0x100, 0x101)}
    keys: list[int] = []
    last = {0x100: -1, 0x101: -1}
    for _, pid in starts:
        pes = next(by_pid[pid])
        assert pes.pts_90k is not None
        last[pid] = max(last[pid], pes.pts_90k)
        keys.append(last[pid])
    # the exporter writes the audio it held for the start keyframe right after that keyframe
    second_video = [pid for _, pid in starts].index(0x100, 1)
    assert len(keys) - second_video > 100
    assert keys[second_video:] == sorted(keys[second_video:])
