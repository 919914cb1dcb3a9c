"""Thumbnails: the latest keyframe of a fixture imported into a live broadcast decodes (PyAV,
independently) to a 320-pixel-wide picture that is not blank, metered under tier `internal`
only, cached, bounded, and gone with its broadcast."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from gateway.config import GatewayConfig
from gateway.http.thumbnails import (
    DEFAULT_REFRESH_S,
    THUMBNAIL_TIER,
    ThumbnailError,
    Thumbnails,
    decoder_name,
    keyframe_jpeg,
)
from model import BroadcastProducer, Origin, StatsHandle
from mux import TsImporter
from mux.catalog import CATALOG_TRACK, Catalog
from mux.container import decode_frame

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


_IMPORTERS: list[TsImporter] = []  # the track producers live as long as their importer


def live(origin: Origin, path: str, fixture: str) -> BroadcastProducer:
    """Publish `fixture` (imported whole, not finished: still live) at `path`."""
    broadcast = BroadcastProducer()
    origin.publish(path, broadcast)
    importer = TsImporter(broadcast)
    importer.feed((FIXTURES / fixture).read_bytes())
    _IMPORTERS.append(importer)
    return broadcast


def picture(jpeg: bytes) -> np.ndarray:
    """The luma plane of a JPEG, decoded by PyAV."""
    with av.open(io.BytesIO(jpeg), mode="r") as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="gray")


def latest_keyframe(broadcast: BroadcastProducer) -> tuple[str, bytes]:
    """(codec string, frame) of the first frame of the video track's latest group."""
    consumer = broadcast.consume()
    group = consumer.subscribe_track(CATALOG_TRACK).poll_group()
    assert group is not None
    catalog = Catalog.from_json(group.read_ready()[-1])
    ((name, config),) = catalog.video.items()
    video = consumer.subscribe_track(name).poll_group()
    assert video is not None
    return config.codec, video.read_ready()[0]


@pytest.fixture
def broadcasts() -> Iterator[list[BroadcastProducer]]:
    made: list[BroadcastProducer] = []
    yield made
    for importer in _IMPORTERS:
        importer.finish()
    _IMPORTERS.clear()  # finishing an importer finishes its broadcast


@pytest.mark.parametrize(("fixture", "decoder"), [("h264_aac.ts", "h264"), ("h265_aac.ts", "hevc")])
def test_the_latest_keyframe_becomes_a_320_wide_picture_that_is_not_blank(
    fixture: str, decoder: str, broadcasts: list[BroadcastProducer]
) -> None:
    broadcast = live(Origin(), "live/a", fixture)
    broadcasts.append(broadcast)
    codec, frame = latest_keyframe(broadcast)
    assert decoder_name(codec) == decoder
    jpeg, width, height = keyframe_jpeg(codec, bytes(decode_frame(frame)[1]))
    luma = picture(jpeg)
    assert luma.shape == (height, width) == (180, 320)  # the fixtures are 640x360
    assert float(luma.std()) > 10  # a test pattern, not a flat picture


def test_undecodable_keyframes_and_other_codecs_are_a_thumbnail_error() -> None:
    with pytest.raises(ThumbnailError, match="no thumbnail decoder"):
        keyframe_jpeg("vp09.00.10.08", b"\x00" * 100)
    with pytest.raises(ThumbnailError):
        keyframe_jpeg("avc3.64001f", b"\x00\x00\x00\x01\x09\xf0" + b"\xff" * 200)


async def test_thumbnails_are_metered_internal_cached_and_bounded(
    broadcasts: list[BroadcastProducer],
) -> None:
    origin, stats = Origin(), StatsHandle("n")
    now = [0.0]
    thumbs = Thumbnails(origin, stats, refresh_s=3.0, max_entries=1, clock=lambda: now[0])
    try:
        assert await thumbs.jpeg("live/none") is None
        first = live(origin, "live/a", "h264_aac.ts")
        broadcasts.append(first)
        jpeg = await thumbs.jpeg("live/a")
        assert jpeg is not None
        assert picture(jpeg).shape == (180, 320)
        _, keyframe = latest_keyframe(first)
        (entry,) = stats.snapshot()
        # One group and its keyframe read, in the internal tier, as one session and viewer.
        assert (entry.path, entry.tier, entry.role) == ("live/a", THUMBNAIL_TIER, "egress")
        assert (entry.groups, entry.frames, entry.bytes) == (1, 1, len(keyframe))
        assert (entry.sessions, entry.viewers) == (1, 1)

        assert await thumbs.jpeg("live/a") == jpeg  # cached: no second decode, no reading
        now[0] += 10
        assert await thumbs.jpeg("live/a") == jpeg  # refreshed, but the keyframe is the same
        assert thumbs.decoded == 1
        assert stats.snapshot()[0].frames == 1

        second = live(origin, "live/b", "h265_aac.ts")
        broadcasts.append(second)
        assert await thumbs.jpeg("live/b") is not None
        assert len(thumbs) == 1  # live/a was dropped, and its meter closed
        by_path = {e.path: e for e in stats.snapshot()}
        assert by_path["live/a"].sessions_closed == 1
        assert by_path["live/b"].sessions_closed == 0

        second.finish()
        assert await thumbs.jpeg("live/b") is None  # ended: not live any more
        assert {e.path: e for e in stats.snapshot()}["live/b"].sessions_closed == 1
        assert len(thumbs) == 0
    finally:
        await thumbs.aclose()
    assert await thumbs.jpeg("live/a") is None


@pytest.mark.parametrize("refresh_s", [15.0, None])
async def test_a_new_keyframe_is_decoded_only_once_the_refresh_interval_passed(
    broadcasts: list[BroadcastProducer], refresh_s: float | None
) -> None:
    origin = Origin()
    now = [0.0]
    if refresh_s is None:  # the default
        thumbs = Thumbnails(origin, clock=lambda: now[0])
    else:
        thumbs = Thumbnails(origin, refresh_s=refresh_s, clock=lambda: now[0])
    interval = refresh_s or DEFAULT_REFRESH_S
    data = (FIXTURES / "h264_aac.ts").read_bytes()
    cut = 300_000 // 188 * 188  # ffprobe: keyframes at bytes 564, 137992, 291776, 455336, ...
    broadcast = BroadcastProducer()
    origin.publish("live/a", broadcast)
    importer = TsImporter(broadcast)
    _IMPORTERS.append(importer)
    try:
        importer.feed(data[:cut])
        first = await thumbs.jpeg("live/a")
        assert first is not None
        before = latest_keyframe(broadcast)[1]
        importer.feed(data[cut:])  # later keyframes: a newer latest group
        assert latest_keyframe(broadcast)[1] != before
        for _ in range(5):
            now[0] += interval * 0.199  # 99.5 % of the interval in all: within it
            assert await thumbs.jpeg("live/a") == first
        assert thumbs.decoded == 1
        now[0] = interval  # the interval after the first decode
        second = await thumbs.jpeg("live/a")
        assert thumbs.decoded == 2
        assert second is not None
        assert picture(second).shape == (180, 320)
    finally:
        await thumbs.aclose()


def test_thumbnails_default_to_one_decode_per_60_s_at_most_as_the_setting_does() -> None:
    assert DEFAULT_REFRESH_S == 60.0
    assert GatewayConfig().http_thumbnail_interval_s == DEFAULT_REFRESH_S
    assert Thumbnails(Origin()).refresh_s == 60.0
    assert Thumbnails(Origin(), refresh_s=5.0).refresh_s == 5.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="refresh_s"):
            Thumbnails(Origin(), refresh_s=bad)
    # The page asks as often as the server says (no interval of its own).
    script = (Path(__file__).resolve().parents[3] / "gateway/http/static/page.js").read_text()
    assert "THUMBNAIL_MS" not in script
    assert "status.thumbnail_interval_s" in script


async def test_a_keyframe_not_yet_written_is_tried_again_at_the_next_ask(
    broadcasts: list[BroadcastProducer],
) -> None:
    source = live(Origin(), "src", "h264_aac.ts")
    broadcasts.append(source)
    consumer = source.consume()
    catalog_group = consumer.subscribe_track(CATALOG_TRACK).poll_group()
    assert catalog_group is not None
    catalog_json = catalog_group.read_ready()[-1]
    (name,) = Catalog.from_json(catalog_json).video
    _, keyframe = latest_keyframe(source)

    origin = Origin()
    broadcast = BroadcastProducer()
    origin.publish("live/late", broadcast)
    cat = broadcast.create_track(CATALOG_TRACK)
    cat_group = cat.append_group()
    cat_group.write_frame(catalog_json)
    cat_group.finish()
    video = broadcast.create_track(name)
    group = video.append_group()  # opened, its keyframe not written yet
    now = [0.0]
    thumbs = Thumbnails(origin, refresh_s=15.0, clock=lambda: now[0])
    try:
        assert await thumbs.jpeg("live/late") is None  # waited KEYFRAME_WAIT_S for it
        group.write_frame(keyframe)
        now[0] += 2.0  # well within the refresh interval: there is no picture yet to keep
        jpeg = await thumbs.jpeg("live/late")
        assert jpeg is not None
        assert picture(jpeg).shape == (180, 320)
        assert thumbs.decoded == 1
    finally:
        await thumbs.aclose()
        broadcast.finish()
