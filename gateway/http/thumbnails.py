"""Thumbnails of live broadcasts for the status page: the latest keyframe, as a small JPEG.

`Thumbnails(origin, stats)` reads a broadcast's first video track (by the catalog) under tier
`internal` (`THUMBNAIL_TIER`: metered apart, never a customer's viewer), takes the first frame of
the track's latest group (a keyframe: video groups open on one), and decodes, scales to `width`
pixels wide and encodes it as JPEG with PyAV on its own worker thread, never on the event loop.
Nothing is decoded unless a client asks: an answer is cached per broadcast for `refresh_s` (and
reused after that while the latest group has not changed), so a broadcast costs at most one decode
per `refresh_s` (7-13 ms of CPU for a 720p keyframe, almost all of it the H.264 decode; by default
60 s, the `http_thumbnail_interval_s` setting) however often it is asked; at most `max_entries`
broadcasts are kept, the least recently asked dropped first, and one decode runs at a time, so
memory and CPU stay bounded whatever clients ask.

Metering: one egress guard per cached broadcast (viewer id `thumbnails`), opened at its first
thumbnail and closed when the broadcast ends, its entry is dropped, or `aclose()`: the internal
tier sees one session per broadcast, one group per keyframe taken and that keyframe's frame.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal

import av
import structlog

from gateway.http.sources import INTERNAL_TIER, read_catalog
from gateway.threadname import name_this_thread
from model import (
    BroadcastConsumer,
    ModelError,
    Origin,
    StatsGuard,
    StatsHandle,
    normalize_path,
)
from mux.catalog import VideoConfig
from mux.container import decode_frame
from mux.errors import Malformed

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_REFRESH_S",
    "DEFAULT_WIDTH",
    "THUMBNAIL_TIER",
    "ThumbnailError",
    "Thumbnails",
    "decoder_name",
    "keyframe_jpeg",
]

THUMBNAIL_TIER: Final = INTERNAL_TIER
"""The tier thumbnails are metered under (the gateway's own consumers)."""
THUMBNAIL_VIEWER: Final = "thumbnails"
"""The viewer id of the thumbnail reader (one distinct viewer per path in the internal tier)."""
DEFAULT_WIDTH: Final = 320
"""Thumbnail width in pixels (the height keeps the picture's display aspect ratio)."""
DEFAULT_REFRESH_S: Final = 60.0
"""A broadcast's thumbnail is made again at most this often (seconds; the default of the
`http_thumbnail_interval_s` setting): a status page's picture needs no more, and each decode
costs the gateway 7-13 ms of CPU at 720p (15-20 ms in a busy gateway), ~0.3 ms/s per broadcast
at 60 s: issue 11's budget for the whole operator surface at one viewer per stream is ~2 ms/s."""
DEFAULT_MAX_ENTRIES: Final = 64
"""Broadcasts whose thumbnail is cached at most."""
KEYFRAME_WAIT_S: Final = 1.0
"""How long to wait for the first frame of a group that was just opened."""
MAX_KEYFRAME_BYTES: Final = 16 << 20
"""A bigger keyframe is not decoded (the model's largest group is 16 MiB anyway)."""
MAX_PIXELS: Final = 8192 * 8192
"""A decoded picture with more pixels than this is not thumbnailed."""

_log = structlog.get_logger("moqsrt.http.thumbnails")

_Decoder = Literal["h264", "hevc"]
_DECODERS: Final[dict[str, _Decoder]] = {
    "avc1": "h264",
    "avc3": "h264",
    "hev1": "hevc",
    "hvc1": "hevc",
}


class ThumbnailError(Exception):
    """A keyframe that could not be made into a thumbnail (unsupported codec, undecodable)."""


def decoder_name(codec: str) -> _Decoder | None:
    """The FFmpeg decoder for a WebCodecs codec string (`avc3.64001f` -> `h264`,
    `hev1.1.6.L93.B0` -> `hevc`); None for a codec thumbnails do not decode."""
    return _DECODERS.get(codec.split(".", 1)[0].lower())


def keyframe_jpeg(
    codec: str, payload: bytes, *, description: bytes | None = None, width: int = DEFAULT_WIDTH
) -> tuple[bytes, int, int]:
    """Decode one H.264/H.265 keyframe (`payload`: the codec bytes of a frame, Annex-B or, with
    `description` (avcC/hvcC), length-prefixed) and return `(jpeg, width, height)`: the picture
    scaled to `width` pixels wide (height even, keeping the display aspect ratio). CPU-bound
    (milliseconds for 720p): call it off the event loop. Raises ThumbnailError."""
    name = decoder_name(codec)
    if name is None:
        raise ThumbnailError(f"no thumbnail decoder for codec {codec[:40]!r}")
    if len(payload) > MAX_KEYFRAME_BYTES:
        raise ThumbnailError(f"keyframe of {len(payload)} bytes is too large")
    try:
        decoder = av.CodecContext.create(name, "r")
        decoder.thread_count = 1  # one small picture: no thread pool per thumbnail
        if description:
            decoder.extradata = description
        frames = decoder.decode(av.Packet(payload))
        frames += decoder.decode(None)  # flush: a decoder may hold the one picture back
    except (av.FFmpegError, ValueError) as exc:
        raise ThumbnailError(f"the keyframe does not decode: {exc}") from None
    if not frames:
        raise ThumbnailError("the keyframe decodes to no picture")
    picture = frames[0]
    if not 0 < picture.width * picture.height <= MAX_PIXELS:
        raise ThumbnailError(f"picture size {picture.width}x{picture.height} is out of range")
    aspect = picture.width / picture.height
    ratio = decoder.sample_aspect_ratio
    if ratio is not None and ratio > 0:
        aspect *= float(ratio)
    out_width = max(2, width - width % 2)
    out_height = max(2, round(out_width / aspect / 2) * 2)
    # AREA: a 4x downscale at ~3/4 of the default bicubic's cost, and a smaller JPEG.
    scaled = picture.reformat(
        width=out_width, height=out_height, format="yuvj420p", interpolation="AREA"
    )
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = out_width
    encoder.height = out_height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = fractions.Fraction(1, 25)
    packets = encoder.encode(scaled)
    packets += encoder.encode(None)
    jpeg = b"".join(bytes(p) for p in packets)
    if not jpeg.startswith(b"\xff\xd8"):
        raise ThumbnailError("the JPEG encoder wrote no image")
    return jpeg, out_width, out_height


@dataclass(slots=True)
class _Entry:
    """One broadcast's cached thumbnail and the reader it is taken with."""

    consumer: BroadcastConsumer
    guard: StatsGuard | None
    jpeg: bytes | None = None
    track: str = ""
    sequence: int | None = None
    made_at: float = float("-inf")

    def close(self) -> None:
        if self.guard is not None:
            self.guard.close()
            self.guard = None


class Thumbnails:
    """The thumbnail cache of one origin; see the module docstring. Methods run on the event
    loop; `aclose()` ends the worker thread and closes every meter."""

    def __init__(
        self,
        origin: Origin,
        stats: StatsHandle | None = None,
        *,
        width: int = DEFAULT_WIDTH,
        refresh_s: float = DEFAULT_REFRESH_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or width < 2 or not refresh_s > 0:
            raise ValueError("max_entries must be >= 1, width >= 2 and refresh_s > 0")
        self._origin = origin
        self._stats = stats
        self._width = width
        self._refresh_s = refresh_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="moqsrt-thumbnail",
            initializer=partial(name_this_thread, "moqsrt-thumb"),
        )
        self._closed = False
        self.decoded = 0
        """Keyframes decoded so far (for tests and curiosity)."""

    @property
    def refresh_s(self) -> float:
        """Seconds between two thumbnails of a broadcast at least (what the page is told)."""
        return self._refresh_s

    async def jpeg(self, path: str) -> bytes | None:
        """The JPEG thumbnail of the broadcast live at `path`, or None when it is not live (or
        no valid path), has
        no decodable video yet, or its keyframe does not decode (logged once per keyframe)."""
        if self._closed:
            return None
        try:
            path = normalize_path(path)
        except ValueError:
            return None
        self.prune()
        async with self._lock:  # one keyframe at a time; concurrent askers share the answer
            try:
                return await self._jpeg(path)
            except ModelError as exc:  # the broadcast ended or dropped the track meanwhile
                _log.debug("thumbnail.no_keyframe", path=path, error=repr(exc))
                return None

    async def _jpeg(self, path: str) -> bytes | None:
        consumer = self._origin.get(path)
        if consumer is None:
            self._drop(path)
            return None
        entry = self._entries.get(path)
        if entry is not None and not entry.consumer.same_broadcast(consumer):
            self._drop(path)  # a new broadcast on the same path: a new reader and meter
            entry = None
        now = self._clock()
        if entry is not None:
            self._entries.move_to_end(path)
            # The interval runs from a keyframe taken; until one is, each ask may try.
            if entry.jpeg is not None and now - entry.made_at < self._refresh_s:
                return entry.jpeg
        config = self._video(path)
        if config is None:
            return entry.jpeg if entry is not None else None
        name, video = config
        if entry is None:
            entry = self._open(path, consumer)
        track = entry.consumer.subscribe_track(name)  # starts at the latest group
        if (name, track.latest_sequence) == (entry.track, entry.sequence):
            entry.made_at = now  # the keyframe tried last time: nothing new to decode
            return entry.jpeg
        group = track.poll_group()
        if group is None:
            return entry.jpeg
        try:
            async with asyncio.timeout(KEYFRAME_WAIT_S):
                frame = await group.next_frame()
        except TimeoutError:  # its keyframe is late: this group is tried again next time
            _log.debug("thumbnail.no_keyframe", path=path, error="keyframe not yet written")
            return entry.jpeg
        except Exception as exc:  # noqa: BLE001  (a producer's abort error may be anything)
            _log.debug("thumbnail.no_keyframe", path=path, error=repr(exc))
            return entry.jpeg
        # From here on this group's keyframe counts as tried (decoded or not).
        entry.track, entry.sequence, entry.made_at = name, group.sequence, now
        if frame is None:
            return entry.jpeg
        try:
            _, payload = decode_frame(frame)
        except Malformed as exc:
            _log.debug("thumbnail.no_keyframe", path=path, error=repr(exc))
            return entry.jpeg
        loop = asyncio.get_running_loop()
        codec, description, width = video.codec, video.description, self._width
        try:
            jpeg, _, _ = await loop.run_in_executor(
                self._executor,
                lambda: keyframe_jpeg(codec, bytes(payload), description=description, width=width),
            )
        except ThumbnailError as exc:
            _log.info("thumbnail.failed", path=path, codec=codec[:40], error=str(exc))
            return entry.jpeg
        self.decoded += 1
        entry.jpeg = jpeg
        return jpeg

    def _video(self, path: str) -> tuple[str, VideoConfig] | None:
        """The first video rendition of `path`'s catalog with a decoder, as (track, config)."""
        catalog = read_catalog(self._origin, path)
        if catalog is None:
            return None
        for name in sorted(catalog.video):
            config = catalog.video[name]
            if decoder_name(config.codec) is not None:
                return name, config
        return None

    def _open(self, path: str, consumer: BroadcastConsumer) -> _Entry:
        guard = None
        if self._stats is not None:
            guard = self._stats.broadcast(path, THUMBNAIL_TIER).egress(THUMBNAIL_VIEWER)
            consumer = consumer.with_meter(guard.meter)
        entry = self._entries[path] = _Entry(consumer, guard)
        while len(self._entries) > self._max_entries:
            _, old = self._entries.popitem(last=False)
            old.close()
        return entry

    def _drop(self, path: str) -> None:
        entry = self._entries.pop(path, None)
        if entry is not None:
            entry.close()

    def prune(self) -> None:
        """Drop the entries of broadcasts that ended (closing their meters, releasing their
        readers). O(entries); `HttpService` calls it every second, and `jpeg` on each call."""
        for path in [p for p, e in self._entries.items() if e.consumer.finished]:
            self._drop(path)

    def __len__(self) -> int:
        """Broadcasts cached now."""
        return len(self._entries)

    async def aclose(self) -> None:
        """Close every meter and end the worker thread (after a decode in progress).
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        for entry in self._entries.values():
            entry.close()
        self._entries.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
