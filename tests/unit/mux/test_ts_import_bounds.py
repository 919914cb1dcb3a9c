"""What the importer holds stays bounded whatever a peer sends: a PES that never ends, a PMT
declaring hundreds of streams each filling a PES. Held memory is measured with tracemalloc
(independently of the importer's own `held_bytes`), and the good streams' frames are counted
from the model against what the test sent."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from model import DEFAULT_MAX_GROUP_BYTES, BroadcastProducer, CachePool
from mux import PesTooLarge, TooManyStreams, TsImporter
from tests.unit.mux.support import Imported, run_import
from tests.unit.mux.test_ts_import_stream import AUDIO, VIDEO, aac_frames, video_pes
from tests.unit.mux.tsbuild import Es, Muxer, pes, pmt

PACKET = 188
SRT_MESSAGE = 7 * PACKET
#: Allocations beside the held PES: the frames written into the model (some 600 bytes each,
#: for a hundred or so), problems, batches in flight.
SLACK_BYTES = 512 * 1024


def continuation(mux: Muxer, pid: int, fill: int) -> bytes:
    """One plain packet of `pid` continuing a PES: no PUSI, no adaptation field."""
    cc = mux.cc[pid] = (mux.cc[pid] + 1) & 0x0F
    return bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | cc)) + bytes([fill]) * 184


def regroup(packets: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Cut a stream of packets into chunks of `size` bytes, never holding more than one."""
    buf = bytearray()
    for packet in packets:
        buf += packet
        if len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class HeldMemory:
    """Tracks the importer's held bytes and the traced memory growth after each feed."""

    def __init__(self) -> None:
        self.baseline: int | None = None
        self.max_growth = 0
        self.max_held = 0

    def __call__(self, importer: TsImporter) -> None:
        current = tracemalloc.get_traced_memory()[0]
        if self.baseline is None:
            self.baseline = current
        self.max_growth = max(self.max_growth, current - self.baseline)
        self.max_held = max(self.max_held, importer.held_bytes)


def traced_import(parts: Iterator[bytes], **options: object) -> tuple[Imported, HeldMemory]:
    held = HeldMemory()
    tracemalloc.start()
    try:
        result = run_import(parts, on_feed=held, **options)
    finally:
        tracemalloc.stop()
    return result, held


def endless_video_pes(flood_bytes: int, audio_every: int) -> tuple[Iterator[bytes], list[int]]:
    """PSI, then a video PES (unbounded) that goes on for `flood_bytes` with an audio PES (one
    ADTS frame) every `audio_every` packets, then 15 real access units; the list gets the
    number of audio frames sent once the iterator is exhausted."""
    sent = [0]

    def packets() -> Iterator[bytes]:
        mux = Muxer()
        yield from mux.psi(pmt([Es(0x1B, VIDEO), Es(0x0F, AUDIO)]))
        start = pes(0xE0, b"\x00\x00\x00\x01\x09\xf0", pts=0, bounded=False)
        yield from mux.packets(VIDEO, start)
        frame = aac_frames(1)[0]
        for i in range(flood_bytes // 184):
            yield continuation(mux, VIDEO, i & 0xFF)
            if i % audio_every == 0:
                yield from mux.packets(AUDIO, pes(0xC0, frame, pts=1920 * sent[0]))
                sent[0] += 1
        for i in range(15):
            yield from mux.packets(VIDEO, video_pes(i))

    return packets(), sent


@pytest.mark.parametrize("chunk", [SRT_MESSAGE, 5000 * PACKET])
def test_an_endless_video_pes_is_cut_at_its_limit_and_the_audio_goes_on(chunk: int) -> None:
    limit = 256 * 1024
    packets, sent = endless_video_pes(16 * limit, audio_every=200)
    result, held = traced_import(regroup(packets, chunk), max_pes_bytes=limit, catalog_wait_s=1.0)
    importer = result.importer
    assert held.max_held <= limit + PACKET
    assert held.max_growth < limit + SLACK_BYTES  # 4 MiB went by
    (problem,) = [p for p in importer.problems if isinstance(p, PesTooLarge)]
    assert (problem.pid, problem.limit_bytes, problem.media) == (VIDEO, limit, "video")
    assert limit < problem.dropped_bytes <= limit + chunk
    assert problem.message.startswith(f"PID 0x100: a PES grew past the {limit} bytes")
    # The video had no parameter sets before the flood: the catalog went out without it.
    assert importer.problem_counts == {"pes_too_large": 1, "stream_without_config": 1}
    assert len(result.frames(result.track_of_pid(AUDIO))) == sent[0] > 100
    assert len(result.frames(result.track_of_pid(VIDEO))) == 15  # the next PES starts afresh
    assert importer.held_bytes == 0


def test_an_endless_audio_pes_keeps_its_frames_up_to_the_limit() -> None:
    limit = 64 * 1024
    frame = aac_frames(1, size=200)[0]  # 207 bytes

    def packets() -> Iterator[bytes]:
        mux = Muxer()
        yield from mux.psi(pmt([Es(0x1B, VIDEO), Es(0x0F, AUDIO)]))
        stream = pes(0xC0, frame * 4000, pts=0, bounded=False)
        yield from mux.packets(AUDIO, stream)
        for i in range(15):
            yield from mux.packets(VIDEO, video_pes(i))
        yield from mux.packets(AUDIO, pes(0xC0, frame, pts=4000 * 1920))

    result, held = traced_import(regroup(packets(), SRT_MESSAGE), max_pes_bytes=limit)
    assert held.max_held <= limit + PACKET
    (problem,) = [p for p in result.importer.problems if isinstance(p, PesTooLarge)]
    assert (problem.pid, problem.media, problem.dropped_bytes) == (AUDIO, "audio", 0)
    audio = result.frames(result.track_of_pid(AUDIO))
    # The whole frames of the PES up to the message that took it past `limit` (its header
    # is 14 bytes), then the next PES's.
    low, high = (limit - 14) // len(frame), (limit + SRT_MESSAGE - 14) // len(frame)
    assert low + 1 <= len(audio) <= high + 1
    assert len(result.frames(result.track_of_pid(VIDEO))) == 15


def test_a_pmt_with_hundreds_of_streams_holds_no_more_than_its_budget() -> None:
    budget = 1 << 20
    hostile = [0x200 + k for k in range(188)]
    flooded = hostile[:28]  # 18 inside the 20 streams followed, 10 beyond
    rounds = 800
    audio_sent = 0

    def packets() -> Iterator[bytes]:
        nonlocal audio_sent
        mux = Muxer()
        streams = [Es(0x1B, VIDEO), Es(0x0F, AUDIO)] + [Es(0x1B, pid) for pid in hostile]
        yield from mux.psi(pmt(streams))
        for pid in flooded:
            yield from mux.packets(pid, pes(0xE0, b"\x00\x00\x00\x01\x09\xf0", bounded=False))
        frame = aac_frames(1)[0]
        for r in range(rounds):
            for pid in flooded:
                yield continuation(mux, pid, r & 0xFF)
            if r % 10 == 0:
                yield from mux.packets(AUDIO, pes(0xC0, frame, pts=1920 * audio_sent))
                audio_sent += 1
            if r % 50 == 0 and r // 50 < 15:
                yield from mux.packets(VIDEO, video_pes(r // 50))

    result, held = traced_import(
        regroup(packets(), SRT_MESSAGE), max_streams=20, max_pending_bytes=budget
    )
    importer = result.importer
    assert held.max_held <= budget + PACKET
    assert held.max_growth < budget + SLACK_BYTES  # 18 x 800 packets = 2.6 MB held without
    too_many = [p for p in importer.problems if isinstance(p, TooManyStreams)]
    assert too_many == [TooManyStreams(declared=190, kept=20)]
    assert sorted(p.pid for p in importer.problems if isinstance(p, PesTooLarge)) == flooded[:18]
    assert sorted(c.pid for c in importer.tracks.values()) == [VIDEO, AUDIO, *hostile[:18]]
    assert len(result.frames(result.track_of_pid(AUDIO))) == audio_sent == rounds // 10
    assert len(result.frames(result.track_of_pid(VIDEO))) == 15


def test_a_stream_share_of_the_budget_is_weighted_and_capped() -> None:
    importer = TsImporter(
        BroadcastProducer(pool=CachePool(None)), max_pending_bytes=34 * 1000, max_pes_bytes=9000
    )
    mux = Muxer()
    importer.feed(b"".join(mux.psi(pmt([Es(0x1B, VIDEO), Es(0x0F, AUDIO), Es(0x0F, 0x102)]))))
    # 16 + 1 + 1 shares of 34000: video 30222 capped at 9000, audio 1888 each.
    start = mux.packets(AUDIO, pes(0xC0, b"".join(aac_frames(40)), pts=0, bounded=False))
    importer.feed(b"".join(start))
    (problem,) = importer.problems
    assert problem == PesTooLarge(pid=AUDIO, limit_bytes=1888, dropped_bytes=0, media="audio")
    importer.feed(b"".join(mux.packets(VIDEO, pes(0xE0, bytes(8000), pts=0, bounded=False))))
    assert importer.held_bytes == 8014  # under the video's 9000
    importer.finish()


def test_the_default_pes_limit_is_the_model_largest_group() -> None:
    importer = TsImporter(BroadcastProducer(pool=CachePool(None)))
    mux = Muxer()
    importer.feed(b"".join(mux.psi(pmt([Es(0x1B, VIDEO)]))))
    importer.feed(b"".join(mux.packets(VIDEO, pes(0xE0, b"\0\0\1\x09", bounded=False))))
    big = b"".join(continuation(mux, VIDEO, 0) for _ in range(4096))  # 768 KB per feed
    for _ in range(DEFAULT_MAX_GROUP_BYTES // (4096 * 184) + 2):
        importer.feed(big)
        assert importer.held_bytes <= DEFAULT_MAX_GROUP_BYTES
    (problem,) = importer.problems
    assert isinstance(problem, PesTooLarge)
    assert problem.limit_bytes == DEFAULT_MAX_GROUP_BYTES
    importer.finish()


@pytest.mark.parametrize("option", ["max_streams", "max_pes_bytes", "max_pending_bytes"])
def test_a_bound_below_one_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        TsImporter(BroadcastProducer(pool=CachePool(None)), **{option: 0})


def test_a_pes_left_open_does_not_keep_its_whole_batch_alive() -> None:
    # Each batch is 5000 packets of one stream: a PES, then the start of the next, left open.
    pids = [0x100 + k for k in range(4)]
    mux = Muxer()

    def batch(pid: int) -> bytes:
        first = mux.packets(pid, pes(0xE0, b"\0\0\1\x09\xf0", bounded=False))
        rest = [continuation(mux, pid, 1) for _ in range(4998)]
        last = mux.packets(pid, pes(0xE0, b"\0\0\1\x09\xf0", bounded=False))
        return b"".join(first + rest + last)

    def batches() -> Iterator[bytes]:
        yield b"".join(mux.psi(pmt([Es(0x1B, pid) for pid in pids])))
        for pid in pids:
            yield batch(pid)

    result, held = traced_import(batches())
    assert held.max_held <= 4 * 184
    # The batch being fed (940 KB) is alive; the 4 batches, if held, would be 3.8 MB.
    assert held.max_growth < 2 << 20
    assert result.importer.problems == []
