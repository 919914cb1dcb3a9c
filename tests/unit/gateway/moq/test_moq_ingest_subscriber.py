"""The subscriber half in memory: a peer's announcements, catalog and groups in (whole, byte by
byte, split), model broadcasts and wire commands out; bad input stops a stream or the session,
never the process, and every broadcast it opened is finished and released exactly once."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

import pytest

from gateway.moq.ingest import ingest_into
from gateway.moq.session import CloseSession, MoqSession, StopSending, StreamData
from gateway.moq.subscriber import CATALOG_PRIORITY, Ingest, Subscriber
from gateway.moq.wire import (
    Announce,
    AnnounceRequest,
    BidiStreamType,
    GroupHeader,
    StreamCode,
    Subscribe,
    SubscribeOk,
    Version,
    encode_frame,
    encode_varint,
)
from model import BroadcastProducer, Origin, StatsHandle, Usage
from tests.unit.gateway.moq.fakes import CountingAllocator

CATALOG = json.dumps(
    {"video": {"renditions": {"v0": {"codec": "avc3.64001e", "container": {"kind": "legacy"}}}}}
).encode()
ANNOUNCE_STREAM = 1  # the server side's first bidi stream (CountingAllocator)
CATALOG_STREAM = 5
VIDEO_STREAM = 9


class Rig:
    """A server-side session whose subscriber ingests into `broadcasts` (one meter each)."""

    def __init__(
        self,
        version: Version = Version.LITE_03,
        max_frame_bytes: int = 1 << 20,
        max_buffered_bytes: int = 1 << 22,
    ) -> None:
        self.session = MoqSession(version, is_client=False, allocator=CountingAllocator())
        self.opened: dict[str, BroadcastProducer] = {}
        self.meters: dict[str, Usage] = {}
        self.released: list[str] = []
        self.flushes = 0
        self.sub = Subscriber(
            self.session,
            open_broadcast=self.open,
            flush=self.flush,
            max_frame_bytes=max_frame_bytes,
            max_buffered_bytes=max_buffered_bytes,
        )
        self._uni = 2  # client-opened uni streams: 2, 6, 10 ...

    def open(self, path: str) -> Ingest:
        meter = Usage()
        broadcast = BroadcastProducer().with_meter(meter)
        self.opened[path], self.meters[path] = broadcast, meter
        return Ingest(broadcast=broadcast, release=lambda: self.released.append(path))

    def flush(self) -> None:
        self.flushes += 1

    def out(self) -> list[object]:
        return list(self.session.data_to_send())

    def feed(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        for event in self.session.feed(stream_id, data, fin, 0.0):
            self.sub.handle(event)

    def group(self, subscribe_id: int, sequence: int, frames: list[bytes]) -> tuple[int, bytes]:
        stream_id, self._uni = self._uni, self._uni + 4
        header = GroupHeader(subscribe_id=subscribe_id, sequence=sequence)
        data = encode_varint(0) + header.encode(self.session.version)
        return stream_id, data + b"".join(encode_frame(f) for f in frames)

    def live(self, path: str = "demo/cam") -> None:
        """Announce `path` and answer the catalog subscription with SUBSCRIBE_OK."""
        self.sub.start()
        self.feed(ANNOUNCE_STREAM, Announce(active=True, suffix=path).encode(self.session.version))
        self.feed(CATALOG_STREAM, SubscribeOk(priority=CATALOG_PRIORITY).encode(Version.LITE_03))


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    """Rigs of one test; each subscriber is closed at the end (its broadcasts finished)."""
    made: list[Rig] = []

    def make(version: Version = Version.LITE_03, **kwargs: int) -> Rig:
        made.append(Rig(version, **kwargs))
        return made[-1]

    yield make
    for rig in made:
        rig.sub.close()


def subscribes(commands: list[object], version: Version = Version.LITE_03) -> list[Subscribe]:
    out = []
    for cmd in commands:
        if isinstance(cmd, StreamData) and cmd.data[:1] == bytes([BidiStreamType.SUBSCRIBE]):
            out.append(Subscribe.decode(cmd.data[2:], version))
    return out


def test_start_sends_one_announce_request_for_the_prefix(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.sub.start()
    rig.sub.start()
    commands = rig.out()
    assert commands == [
        StreamData(ANNOUNCE_STREAM, bytes([1]) + AnnounceRequest(prefix="").encode(Version.LITE_03))
    ]


@pytest.mark.parametrize("version", [Version.LITE_03, Version.LITE_04])
def test_an_announced_broadcast_is_opened_and_its_catalog_subscribed(
    version: Version, make_rig: Callable[..., Rig]
) -> None:
    rig = make_rig(version)
    rig.sub.start()
    rig.out()
    rig.feed(ANNOUNCE_STREAM, Announce(active=True, suffix="demo/cam").encode(version))
    assert list(rig.opened) == ["demo/cam"]
    (request,) = subscribes(rig.out(), version)
    assert (request.broadcast, request.track, request.priority) == (
        "demo/cam",
        "catalog.json",
        CATALOG_PRIORITY,
    )
    assert rig.opened["demo/cam"].track_names() == ["catalog.json"]


@pytest.mark.parametrize("mode", ["whole", "bytes", "random"])
def test_catalog_and_media_groups_land_in_the_model_metered_once(
    mode: str, make_rig: Callable[..., Rig]
) -> None:
    rig = make_rig()
    rig.live()
    rig.out()
    sid, data = rig.group(0, 0, [CATALOG])
    feed_chunks(rig, sid, data, mode)
    (video_request,) = subscribes(rig.out())
    assert (video_request.track, video_request.subscribe_id) == ("v0", 1)
    rig.feed(VIDEO_STREAM, SubscribeOk().encode(Version.LITE_03))
    frames = [b"\x00" + bytes(range(200)) * 10, b"", b"\x01" * 5000]
    sid, data = rig.group(1, 7, frames)
    feed_chunks(rig, sid, data, mode)
    consumer = rig.opened["demo/cam"].consume()
    track = consumer.subscribe_track("v0")
    assert track.latest_sequence == 7
    meter = rig.meters["demo/cam"]
    assert (meter.groups, meter.frames, meter.bytes) == (
        2,
        1 + len(frames),
        len(CATALOG) + sum(map(len, frames)),
    )


def feed_chunks(rig: Rig, stream_id: int, data: bytes, mode: str) -> None:
    if mode == "whole":
        rig.feed(stream_id, data, fin=True)
        return
    rng = random.Random(7)
    pos = 0
    while pos < len(data):
        step = 1 if mode == "bytes" else rng.randint(1, 1316)
        rig.feed(stream_id, data[pos : pos + step])
        pos += step
    rig.feed(stream_id, b"", fin=True)


def test_merge_patches_after_the_first_catalog_frame_add_renditions(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.live()
    rig.out()
    patch = json.dumps({"audio": {"renditions": {"a0": {"codec": "opus"}}}}).encode()
    sid, data = rig.group(0, 0, [CATALOG, patch])
    rig.feed(sid, data, fin=True)
    assert sorted(r.track for r in subscribes(rig.out())) == ["a0", "v0"]


def test_unannounce_finishes_the_broadcast_and_releases_it_once(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.live()
    rig.feed(ANNOUNCE_STREAM, Announce(active=False, suffix="demo/cam").encode(Version.LITE_03))
    assert rig.opened["demo/cam"].is_closed
    assert rig.released == ["demo/cam"]
    assert StreamData(CATALOG_STREAM, b"", True) in rig.out()  # unsubscribed with a FIN
    rig.sub.close()
    assert rig.released == ["demo/cam"]


def test_session_end_aborts_open_groups_and_releases_everything(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.live()
    sid, data = rig.group(0, 0, [CATALOG])
    rig.feed(sid, data[:-3])  # a group still arriving
    for event in rig.session.connection_lost(0, "gone"):
        rig.sub.handle(event)
    assert rig.opened["demo/cam"].is_closed
    assert rig.released == ["demo/cam"]


def test_an_oversized_frame_stops_its_group_stream_and_keeps_the_session(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_frame_bytes=100)
    rig.live()
    rig.out()
    sid, data = rig.group(0, 0, [b"x" * 101])
    rig.feed(sid, data[:10])
    assert rig.out() == [StopSending(sid, StreamCode.FRAME_TOO_LARGE)]
    assert rig.session.ended is None
    assert rig.meters["demo/cam"].frames == 0


def test_partial_frames_over_the_session_cap_stop_the_stream_that_overflows(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_frame_bytes=1000, max_buffered_bytes=1500)
    rig.live()
    rig.out()
    first, data_a = rig.group(0, 0, [b"a" * 900])
    second, data_b = rig.group(0, 1, [b"b" * 900])
    rig.feed(first, data_a[:800])
    assert rig.out() == []
    rig.feed(second, data_b[:800])
    assert rig.out() == [StopSending(second, StreamCode.FRAME_TOO_LARGE)]
    rig.feed(first, data_a[800:], fin=True)  # the first stream still completes
    assert rig.meters["demo/cam"].frames == 1
    assert rig.sub._buffered == 0


def test_a_group_for_an_unknown_subscription_is_stopped(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.live()
    rig.out()
    sid, data = rig.group(42, 0, [b"x"])
    rig.feed(sid, data)
    assert rig.out() == [StopSending(sid, StreamCode.CANCELLED)]
    assert rig.session.ended is None


def test_a_bad_uni_stream_type_closes_the_session_as_a_protocol_violation(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.live()
    rig.out()
    rig.feed(2, b"\x05\x00")
    assert rig.session.ended is not None
    assert rig.session.ended.code == 3
    assert any(isinstance(c, CloseSession) for c in rig.out())
    for event in [rig.session.ended]:
        rig.sub.handle(event)
    assert rig.released == ["demo/cam"]


def test_ingest_into_meters_as_ingress_and_refuses_a_live_path() -> None:
    origin = Origin()
    stats = StatsHandle("n")
    open_broadcast = ingest_into(origin, stats, tier="pro", root="demo")
    assert open_broadcast("other/cam") is None
    ingest = open_broadcast("demo/cam")
    assert ingest is not None
    assert origin.is_live("demo/cam")
    assert open_broadcast("demo/cam") is None  # REJECT: the first publisher keeps it
    track = ingest.broadcast.create_track("t")
    track.write_frame(b"abc")
    track.finish()
    ingest.broadcast.finish()
    ingest.release()
    (entry,) = stats.snapshot()
    assert (entry.path, entry.tier, entry.role) == ("demo/cam", "pro", "ingress")
    assert (entry.groups, entry.frames, entry.bytes) == (1, 1, 3)
    assert entry.announced == entry.announced_closed == 1
