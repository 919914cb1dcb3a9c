"""The subscriber half of a moq-lite session: discovers a peer's broadcasts and writes them into
the model (ingest from a moq-rs publisher, or from a relay in the client role).

One `Subscriber` per session, sans-I/O like the session it plugs into: `start()` opens an
Announce stream (ANNOUNCE_REQUEST for `prefix`); each active broadcast the peer announces is
handed to `open_broadcast(path)`, which returns an `Ingest` (a `BroadcastProducer` already
published and metered, plus its release) or `None` to leave it alone. The subscriber then
subscribes `catalog.json`, reads each catalog version for its rendition track names, subscribes
those, and writes every group and frame it receives into the broadcast as it arrives (one
model group per wire group, keeping the peer's sequence numbers). The broadcast finishes when
the peer un-announces it, when the session ends, or on `close()`; its `Ingest.release()` is then
called once. No counting here: the meter is the one the broadcast was built `with_meter`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from gateway.moq.errors import ProtocolViolation
from gateway.moq.session import MoqEvent, MoqSession, SessionEnded, StreamHandler
from gateway.moq.wire import (
    MAX_CONTROL_MESSAGE_BYTES,
    Announce,
    AnnounceRequest,
    BidiStreamType,
    GroupHeader,
    StreamCode,
    Subscribe,
    SubscribeResponseType,
    UniStreamType,
    take_message,
    take_varint,
)
from model import (
    DEFAULT_MAX_GROUP_BYTES,
    BroadcastProducer,
    Closed,
    GroupProducer,
    ModelError,
    TrackProducer,
    normalize_path,
)
from mux.catalog import CATALOG_TRACK

__all__ = [
    "CATALOG_PRIORITY",
    "MAX_CATALOG_BYTES",
    "MAX_TRACKS_PER_BROADCAST",
    "Ingest",
    "Subscriber",
]

CATALOG_PRIORITY: Final = 100
"""Subscriber priority of `catalog.json` (what moq-rs uses); media tracks get 0."""

MAX_CATALOG_BYTES: Final = 256 * 1024
"""Largest catalog frame parsed for rendition names (bigger ones are still written, unread)."""

MAX_TRACKS_PER_BROADCAST: Final = 64
"""Renditions subscribed per broadcast at most (a memory bound against a hostile catalog)."""

MAX_BROADCASTS_PER_SESSION: Final = 256
"""Broadcasts one session may have us ingest at once."""

MAX_BUFFERED_BYTES: Final = 64 * 1024 * 1024
"""Partial frames one session may have us hold across its group streams (bytes); the stream
that goes past it is stopped (its group dropped)."""

_log = structlog.get_logger("moqsrt.moq.subscriber")


class _Ended(Closed):
    """Why an ingested group or track ended early (the text says which)."""


@dataclass(slots=True, eq=False)
class Ingest:
    """Where one announced broadcast goes: `broadcast` (published in the origin and built
    `with_meter` from an ingress guard by whoever made it), and `release`, called exactly once
    after the subscriber finished or aborted it (closes that guard, un-publishes nothing: the
    broadcast's end does that)."""

    broadcast: BroadcastProducer
    release: Callable[[], None] = lambda: None


OpenBroadcast = Callable[[str], "Ingest | None"]
"""`open_broadcast(path) -> Ingest | None`: called for each broadcast the peer announces
(`path` normalized, full); `None` ignores it (refused, or a conflict with a live path)."""


class _Track:
    __slots__ = ("broadcast", "name", "producer", "stream_id", "subscribe_id")

    def __init__(
        self, broadcast: _Remote, name: str, producer: TrackProducer, subscribe_id: int
    ) -> None:
        self.broadcast = broadcast
        self.name = name
        self.producer = producer
        self.subscribe_id = subscribe_id
        self.stream_id = -1


class _Remote:
    """One broadcast being ingested."""

    __slots__ = ("catalog", "ended", "ingest", "path", "tracks")

    def __init__(self, path: str, ingest: Ingest) -> None:
        self.path = path
        self.ingest = ingest
        self.tracks: dict[str, _Track] = {}
        self.catalog: dict[str, Any] = {}
        self.ended = False


class Subscriber:
    """Ingests what the peer of `session` announces under `prefix` (see the module docstring).

    `flush()` is the adapter's (call after output was queued). Setting it up claims the
    session's `uni_handler`. Loop thread only; `handle(event)` must see the session's events
    (it reacts to `SessionEnded`). `max_frame_bytes` caps one frame held while it arrives, and
    `max_buffered_bytes` what all of the session's group streams hold at once.
    """

    def __init__(
        self,
        session: MoqSession,
        *,
        open_broadcast: OpenBroadcast,
        flush: Callable[[], None],
        prefix: str = "",
        max_frame_bytes: int = DEFAULT_MAX_GROUP_BYTES,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self._session = session
        self._open = open_broadcast
        self._flush = flush
        self.prefix = normalize_path(prefix)
        """The announce prefix asked for."""
        self._max_frame = max_frame_bytes
        self._max_buffered = max_buffered_bytes
        self._buffered = 0  # bytes the group readers hold now
        self._remotes: dict[str, _Remote] = {}
        self._subs: dict[int, _Track] = {}  # subscribe id -> track
        self._readers: set[_GroupReader] = set()  # group streams being read
        self._next_id = 0
        self._announce_stream: int | None = None
        self._closed = False
        session.uni_handler = self._uni

    @property
    def broadcasts(self) -> list[str]:
        """Paths being ingested now."""
        return sorted(self._remotes)

    def start(self) -> None:
        """Open the Announce stream (once); queues output."""
        if self._announce_stream is not None or self._closed:
            return
        request = AnnounceRequest(prefix=self.prefix).encode(self._session.version)
        self._announce_stream = self._session.open_bidi(
            BidiStreamType.ANNOUNCE, request, _AnnounceReader(self)
        )
        self._flush()

    def handle(self, event: MoqEvent) -> None:
        """React to a session event: `SessionEnded` finishes every broadcast."""
        if isinstance(event, SessionEnded):
            self._end_all()

    def close(self) -> None:
        """Stop: un-subscribe everything, finish every broadcast (idempotent); queues output."""
        if self._closed:
            return
        if self._announce_stream is not None:
            self._session.finish(self._announce_stream)
        self._end_all()
        self._flush()

    # -- announcements --

    def _announced(self, message: Announce) -> None:
        suffix = message.suffix
        raw = f"{self.prefix}/{suffix}" if self.prefix and suffix else self.prefix or suffix
        try:
            path = normalize_path(raw)
        except ValueError:
            _log.warning("moq.ingest_bad_path", path=raw[:200])
            return
        if not path:
            return
        if message.active:
            if path in self._remotes or self._closed:
                return
            if len(self._remotes) >= MAX_BROADCASTS_PER_SESSION:
                _log.warning("moq.ingest_too_many", path=path)
                return
            ingest = self._open(path)
            if ingest is None:
                return
            remote = _Remote(path, ingest)
            self._remotes[path] = remote
            _log.info("moq.ingest_started", path=path)
            self._subscribe(remote, CATALOG_TRACK, CATALOG_PRIORITY)
        else:
            ended = self._remotes.get(path)
            if ended is not None:
                self._end(ended, None)
        self._flush()

    # -- subscriptions --

    def _subscribe(self, remote: _Remote, name: str, priority: int) -> None:
        if name in remote.tracks:
            return
        try:
            producer = remote.ingest.broadcast.create_track(name)
        except (ModelError, ValueError) as exc:
            _log.warning("moq.ingest_track_refused", path=remote.path, track=name, error=str(exc))
            return
        track = _Track(remote, name, producer, self._next_id)
        self._next_id += 1
        remote.tracks[name] = track
        self._subs[track.subscribe_id] = track
        request = Subscribe(
            subscribe_id=track.subscribe_id, broadcast=remote.path, track=name, priority=priority
        )
        track.stream_id = self._session.open_bidi(
            BidiStreamType.SUBSCRIBE,
            request.encode(self._session.version),
            _SubscribeReader(self, track),
        )

    def _track_ended(self, track: _Track, code: int | None) -> None:
        """The peer FINed (`code=None`) or reset a subscription."""
        self._subs.pop(track.subscribe_id, None)
        if code is None:
            self._session.finish(track.stream_id)
            track.producer.finish()
        else:
            track.producer.abort(_Ended(f"subscription reset by the peer (code {code})"))
        if track.name == CATALOG_TRACK and not track.broadcast.ended:
            # Without its catalog a broadcast cannot be read: it is over.
            self._end(track.broadcast, None if code is None else code)

    def _catalog_frame(self, remote: _Remote, first: bool, payload: bytes) -> None:
        """Read a catalog frame (a full JSON document first in its group, RFC 7396 merge
        patches after it) and subscribe every rendition it names."""
        if len(payload) > MAX_CATALOG_BYTES:
            return
        try:
            value = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            _log.warning("moq.ingest_bad_catalog", path=remote.path)
            return
        if not isinstance(value, dict):
            return
        remote.catalog = value if first else _merge_patch(remote.catalog, value)
        for section in ("video", "audio"):
            part = remote.catalog.get(section)
            renditions = part.get("renditions") if isinstance(part, dict) else None
            if not isinstance(renditions, dict):
                continue
            for name in renditions:
                if len(remote.tracks) > MAX_TRACKS_PER_BROADCAST:
                    return
                if isinstance(name, str) and name and name != CATALOG_TRACK:
                    self._subscribe(remote, name, 0)

    # -- the end --

    def _end(self, remote: _Remote, code: int | None) -> None:
        if remote.ended:
            return
        remote.ended = True
        self._remotes.pop(remote.path, None)
        session = self._session
        for track in remote.tracks.values():
            if self._subs.pop(track.subscribe_id, None) is not None and session.can_send(
                track.stream_id
            ):
                session.finish(track.stream_id)
            track.producer.finish()
        broadcast = remote.ingest.broadcast
        if code is None:
            broadcast.finish()
        else:
            broadcast.abort(_Ended(f"the publisher's catalog subscription failed (code {code})"))
        _log.info("moq.ingest_ended", path=remote.path)
        try:
            remote.ingest.release()
        except Exception as exc:  # noqa: BLE001  (a failing release must not stop the others)
            _log.error("moq.ingest_release_failed", path=remote.path, error=repr(exc))

    def _end_all(self) -> None:
        self._closed = True
        for reader in list(self._readers):
            reader.abort("the session ended")
        for remote in list(self._remotes.values()):
            self._end(remote, None)

    # -- group streams --

    def _uni(self, stream_id: int) -> StreamHandler | None:
        return None if self._closed else _GroupReader(self)

    def _group_opened(self, reader: _GroupReader, header: GroupHeader) -> GroupProducer | None:
        track = self._subs.get(header.subscribe_id)
        if track is None:
            return None
        try:
            group = track.producer.create_group(header.sequence)
        except (ModelError, ValueError):
            return None  # a duplicate, or the track ended: drop the stream
        if track.name == CATALOG_TRACK:
            reader.catalog_of = track.broadcast
        return group


def _merge_patch(target: object, patch: object) -> dict[str, Any]:
    """RFC 7396 JSON merge patch of `patch` onto `target` (both dicts at the top)."""
    out: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    if not isinstance(patch, dict):
        return out
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = _merge_patch(out.get(key), value)
        else:
            out[key] = value
    return out


class _AnnounceReader:
    """Reads ANNOUNCE messages on our Announce stream."""

    def __init__(self, owner: Subscriber) -> None:
        self._owner = owner
        self._buf = bytearray()

    def on_data(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]:
        owner = self._owner
        buf = self._buf
        buf += data
        pos = 0
        version = owner._session.version
        while True:
            got = take_message(buf, pos, limit=MAX_CONTROL_MESSAGE_BYTES)
            if got is None:
                break
            body, pos = got
            message = Announce.decode(body, version)
            body.release()
            owner._announced(message)
        del buf[:pos]
        if fin:
            # The publisher stopped announcing: what it announced is over.
            owner._announce_stream = None
            owner._end_all()
            owner._session.finish(stream_id)
            owner._flush()
        return []

    def on_reset(self, stream_id: int, code: int, now: float) -> list[MoqEvent]:
        owner = self._owner
        owner._announce_stream = None
        owner._end_all()
        owner._session.reset(stream_id, StreamCode.CANCELLED)
        owner._flush()
        return []


class _SubscribeReader:
    """Reads the publisher's typed answers on one of our Subscribe streams."""

    def __init__(self, owner: Subscriber, track: _Track) -> None:
        self._owner = owner
        self._track = track
        self._buf = bytearray()
        self.ok = False

    def on_data(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]:
        buf = self._buf
        buf += data
        if len(buf) > 2 * MAX_CONTROL_MESSAGE_BYTES:
            raise ProtocolViolation("subscribe stream overflow")
        pos = 0
        while True:
            got_type = take_varint(buf, pos)
            if got_type is None:
                break
            kind, after = got_type
            got = take_message(buf, after, limit=MAX_CONTROL_MESSAGE_BYTES)
            if got is None:
                break
            body, pos = got
            body.release()
            if kind == SubscribeResponseType.SUBSCRIBE_OK:
                self.ok = True
            elif kind != SubscribeResponseType.SUBSCRIBE_DROP:
                raise ProtocolViolation(f"subscribe stream: message type {kind}")
        del buf[:pos]
        if fin:
            self._owner._track_ended(self._track, None)
            self._owner._flush()
        return []

    def on_reset(self, stream_id: int, code: int, now: float) -> list[MoqEvent]:
        owner = self._owner
        owner._session.reset(stream_id, StreamCode.CANCELLED)
        owner._track_ended(self._track, code)
        owner._flush()
        return []


class _GroupReader:
    """Reads one Group uni stream into a model group, a frame at a time."""

    __slots__ = ("_buf", "_group", "_held", "_need", "_owner", "_started", "catalog_of")

    def __init__(self, owner: Subscriber) -> None:
        self._owner = owner
        self._buf = bytearray()
        self._group: GroupProducer | None = None
        self._started = False  # stream type and header read
        self._need = -1  # payload length of the frame being received, -1 = reading its length
        self._held = 0  # len(_buf) as counted in the owner's _buffered
        self.catalog_of: _Remote | None = None

    def on_data(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]:
        buf = self._buf
        buf += data
        pos = 0
        if not self._started:
            got = take_varint(buf)
            if got is None:
                return self._truncated(fin)
            kind, after = got
            if kind != UniStreamType.GROUP:
                raise ProtocolViolation(f"uni stream type {kind}")
            got_header = take_message(buf, after, limit=MAX_CONTROL_MESSAGE_BYTES)
            if got_header is None:
                return self._truncated(fin)
            body, pos = got_header
            header = GroupHeader.decode(body, self._owner._session.version)
            body.release()
            self._started = True
            group = self._owner._group_opened(self, header)
            if group is None:
                self._stop(stream_id, StreamCode.CANCELLED)
                return []
            self._group = group
            self._owner._readers.add(self)
        group = self._group
        assert group is not None
        max_frame = self._owner._max_frame
        size = len(buf)
        while True:
            need = self._need
            if need < 0:
                got_len = take_varint(buf, pos)
                if got_len is None:
                    break
                need, pos = got_len
                if need > max_frame:
                    self.abort(f"frame of {need} bytes over the cap")
                    self._stop(stream_id, StreamCode.FRAME_TOO_LARGE)
                    return []
                self._need = need
            if size - pos < need:
                break
            with memoryview(buf) as view:
                payload = bytes(view[pos : pos + need])
            pos += need
            self._need = -1
            catalog = self.catalog_of
            if catalog is not None:
                self._owner._catalog_frame(catalog, group.frame_count == 0, payload)
            try:
                group.write_frame(payload)
            except ModelError:
                self.abort("the model refused a frame")
                self._stop(stream_id, StreamCode.CANCELLED)  # evicted or ended: drop the rest
                return []
        del buf[:pos]
        owner = self._owner
        if fin:
            if self._need >= 0 or buf:
                group.abort(_Ended("group stream ended inside a frame"))
            else:
                group.finish()
            self._forget()
            owner._flush()
            return []
        owner._buffered += len(buf) - self._held
        self._held = len(buf)
        if owner._buffered > owner._max_buffered:
            self.abort("the session holds too many partial frames")
            self._stop(stream_id, StreamCode.FRAME_TOO_LARGE)
        return []

    def on_reset(self, stream_id: int, code: int, now: float) -> list[MoqEvent]:
        self.abort(f"group reset by the peer (code {code})")
        return []

    def _forget(self) -> None:
        owner = self._owner
        owner._readers.discard(self)
        owner._buffered -= self._held
        self._held = 0
        self._buf.clear()

    def abort(self, why: str) -> None:
        """End the model group (if any) with `why`; forget this reader."""
        self._forget()
        if self._group is not None:
            self._group.abort(_Ended(why))

    def _truncated(self, fin: bool) -> list[MoqEvent]:
        if fin:
            raise ProtocolViolation("group stream ended before its header")
        if len(self._buf) > MAX_CONTROL_MESSAGE_BYTES:
            raise ProtocolViolation("group header too long")
        return []

    def _stop(self, stream_id: int, code: int) -> None:
        self._forget()
        self._owner._session.stop(stream_id, code)
        self._owner._flush()
