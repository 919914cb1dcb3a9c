"""The sans-I/O moq-lite-03/04 session: QUIC stream bytes and events in, MoQ events and stream
commands out. No socket, no loop, no clock of its own (`now` is passed in).

One `MoqSession` per QUIC connection (raw QUIC) or WebTransport session. The transport adapter
feeds it what arrives (`feed`, `stream_reset`, `stop_sending`, `connection_lost`, `on_timer`)
and, after every call that may queue output, sends `data_to_send()`: a list of `StreamData`,
`ResetStream`, `StopSending` and `CloseSession` commands, with stream codes *unmapped* (the
adapter maps them with `wire.stream_code_to_wire`). Stream ids are QUIC stream ids; streams the
session opens come from the adapter's `StreamAllocator` (which also writes any WebTransport
prefix), so ids stay the transport's own.

Routing: a peer-opened bidi stream is read by its `Stream Type (i)`; Announce, Subscribe and
Probe are the publisher's side (events `AnnounceRequested`, `SubscribeRequested`, ...), answered
with `announce`, `subscribe_ok`, `open_group`, ... Everything a subscriber half needs plugs in
through `StreamHandler`s: `open_bidi(handler)` for its own control streams, and `uni_handler`
for peer-opened uni (group) streams, so that half lives in its own module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.moq.errors import MoqUsageError, ProtocolViolation
from gateway.moq.wire import (
    MAX_CONTROL_MESSAGE_BYTES,
    Announce,
    AnnounceRequest,
    BidiStreamType,
    GroupHeader,
    SessionCode,
    StreamCode,
    Subscribe,
    SubscribeDrop,
    SubscribeOk,
    SubscribeUpdate,
    UniStreamType,
    Version,
    encode_varint,
    take_message,
    take_varint,
)

__all__ = [
    "CONTROL_OPEN_TIMEOUT_S",
    "AnnounceCancelled",
    "AnnounceRequested",
    "CloseSession",
    "Command",
    "GroupStopped",
    "MoqEvent",
    "MoqSession",
    "ProbeOpened",
    "ResetStream",
    "SessionEnded",
    "StopSending",
    "StreamAllocator",
    "StreamData",
    "StreamHandler",
    "SubscribeCancelled",
    "SubscribeRequested",
    "SubscribeUpdated",
    "is_bidi",
    "is_local",
]

CONTROL_OPEN_TIMEOUT_S: Final = 10.0
"""A peer-opened control stream must deliver its type and first message within this many
seconds, or it is reset (a stream the peer opens and never uses would hold state forever)."""

_MAX_PEER_STREAMS: Final = 4096  # open peer control streams per session, a memory bound


def is_bidi(stream_id: int) -> bool:
    """True for a bidirectional QUIC stream id."""
    return not stream_id & 0x2


def is_local(stream_id: int, is_client: bool) -> bool:
    """True when the endpoint (`is_client` says which) opened `stream_id`."""
    return bool(stream_id & 0x1) != is_client


# --- events (what happened) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MoqEvent:
    """Base of the session's events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnounceRequested(MoqEvent):
    """The peer opened an Announce stream: answer with `announce()` (the live set first, then
    changes); never FIN it."""

    stream_id: int
    request: AnnounceRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnounceCancelled(MoqEvent):
    """The peer closed (`code=None`) or reset its Announce stream: stop announcing on it."""

    stream_id: int
    code: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeRequested(MoqEvent):
    """The peer opened a Subscribe stream: `subscribe_ok()` then `open_group()`s, or
    `reset(stream_id, StreamCode.NOT_FOUND / UNROUTABLE)`."""

    stream_id: int
    request: Subscribe


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeUpdated(MoqEvent):
    """A SUBSCRIBE_UPDATE on an open Subscribe stream."""

    stream_id: int
    update: SubscribeUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeCancelled(MoqEvent):
    """The peer ended a subscription: FIN (`code=None`, answered with a FIN by `finish()`) or
    reset/STOP_SENDING (`code`; the session already reset its side)."""

    stream_id: int
    code: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOpened(MoqEvent):
    """The peer opened a Probe stream (left open and silent: PROBE is optional)."""

    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupStopped(MoqEvent):
    """The peer STOP_SENDING'd one of our group streams (the session reset it)."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(MoqEvent):
    """The session is over: `code`/`reason` from the peer (`by_peer`) or from us (a protocol
    violation the peer made, or `close()`). Nothing more is fed or sent."""

    code: int
    reason: str
    by_peer: bool


# --- commands (what to send) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamData:
    """Send `data` on `stream_id`, then FIN when `end_stream`."""

    stream_id: int
    data: bytes
    end_stream: bool = False


@dataclass(frozen=True, slots=True)
class ResetStream:
    """RESET_STREAM `stream_id` with moq stream `code` (unmapped)."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class StopSending:
    """STOP_SENDING `stream_id` with moq stream `code` (unmapped)."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Close the whole session (QUIC CONNECTION_CLOSE / CLOSE_WEBTRANSPORT_SESSION)."""

    code: int
    reason: str


Command = StreamData | ResetStream | StopSending | CloseSession
"""What `data_to_send()` returns, in order."""


class StreamAllocator(Protocol):
    """Opens transport streams for the session (the adapter: raw QUIC or WebTransport)."""

    def open_uni(self) -> int:
        """Open a unidirectional stream and return its id (any transport prefix is written)."""
        ...

    def open_bidi(self) -> int:
        """Open a bidirectional stream and return its id."""
        ...


class StreamHandler(Protocol):
    """Reads one stream for a plug-in (the subscriber half): its own bidi control streams
    (`MoqSession.open_bidi`) and peer-opened uni streams (`MoqSession.uni_handler`).

    `on_data` gets each chunk as it arrives (`fin` on the last) and returns events; it buffers
    what it needs itself, with a cap, and raises `ProtocolViolation` for bad input (the session
    then closes). `on_reset` is called once when the peer resets the stream.
    """

    def on_data(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]: ...

    def on_reset(self, stream_id: int, code: int, now: float) -> list[MoqEvent]: ...


# --- peer-opened control streams ----------------------------------------------------------


class _PeerControl:
    """Receive state of one peer-opened bidi stream."""

    __slots__ = ("buf", "deadline", "kind", "request_seen")

    def __init__(self, deadline: float) -> None:
        self.buf = bytearray()
        self.kind: int | None = None
        self.request_seen = False
        self.deadline: float | None = deadline


class MoqSession:
    """One moq-lite-03/04 session, sans-I/O (see the module docstring for the I/O contract).

    `version`: negotiated (ALPN or `wt-protocol`). `is_client`: which end of the QUIC connection
    this is (decides which stream ids are local). `allocator`: opens streams. Methods that queue
    output say so: call `data_to_send()` afterwards. After `SessionEnded` the session ignores
    input and queues nothing more.
    """

    def __init__(self, version: Version, *, is_client: bool, allocator: StreamAllocator) -> None:
        self.version = version
        """The negotiated moq-lite version."""
        self.is_client = is_client
        self._allocator = allocator
        self._out: list[Command] = []
        self.pending_bytes = 0
        """Stream bytes queued and not yet taken by `data_to_send()` (part of what the
        connection holds for the peer, for the adapter's send budget)."""
        self._peer: dict[int, _PeerControl] = {}
        self._refused: set[int] = set()  # peer streams we reset: discard until they end
        self._handlers: dict[int, StreamHandler] = {}  # local bidi and peer uni plug-ins
        self._sending: set[int] = set()  # streams whose send side we still own
        self.uni_handler: Callable[[int], StreamHandler | None] | None = None
        """Factory for peer-opened uni streams (the subscriber half); `None` (or a factory
        answering `None`) STOP_SENDINGs them with `CANCELLED`."""
        self.ended: SessionEnded | None = None
        """The end, once the session is over."""

    # -- input --

    def feed(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]:
        """Take bytes that arrived on `stream_id` (`fin`: the peer's last). Returns events; may
        queue output (call `data_to_send()` afterwards). A peer violation closes the session
        and returns `SessionEnded`."""
        if self.ended is not None:
            return []
        try:
            handler = self._handlers.get(stream_id)
            if handler is not None:
                if fin:
                    del self._handlers[stream_id]
                return handler.on_data(stream_id, data, fin, now)
            if is_local(stream_id, self.is_client):
                # Our own bidi stream with no reader: nothing is expected on it.
                if data and is_bidi(stream_id):
                    raise ProtocolViolation(f"unexpected data on stream {stream_id}")
                return []
            if not is_bidi(stream_id):
                return self._peer_uni(stream_id, data, fin, now)
            return self._peer_bidi(stream_id, data, fin, now)
        except ProtocolViolation as exc:
            return [self._fail(exc)]

    def stream_reset(self, stream_id: int, code: int, now: float) -> list[MoqEvent]:
        """The peer reset its send side of `stream_id` with moq `code` (already unmapped)."""
        if self.ended is not None:
            return []
        handler = self._handlers.pop(stream_id, None)
        if handler is not None:
            try:
                return handler.on_reset(stream_id, code, now)
            except ProtocolViolation as exc:
                return [self._fail(exc)]
        self._refused.discard(stream_id)
        state = self._peer.pop(stream_id, None)
        if state is None:
            return []
        return self._peer_gone(stream_id, state, code)

    def stop_sending(self, stream_id: int, code: int, now: float) -> list[MoqEvent]:
        """The peer asked us to stop sending on `stream_id` (moq `code`, unmapped). The session
        resets that send side; queues output."""
        if self.ended is not None or stream_id not in self._sending:
            return []
        self.reset(stream_id, code)
        if not is_bidi(stream_id):
            return [GroupStopped(stream_id=stream_id, code=code)]
        state = self._peer.pop(stream_id, None)
        if state is None:
            return []
        return self._peer_gone(stream_id, state, code)

    def connection_lost(self, code: int, reason: str) -> list[MoqEvent]:
        """The transport ended (peer close or idle timeout): returns `SessionEnded` once."""
        if self.ended is not None:
            return []
        self.ended = SessionEnded(code=code, reason=reason, by_peer=True)
        self._forget()
        return [self.ended]

    def next_deadline(self) -> float | None:
        """When `on_timer` must run next (same clock as `now`), or `None`."""
        deadlines = [s.deadline for s in self._peer.values() if s.deadline is not None]
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> list[MoqEvent]:
        """Reset peer control streams that stayed silent past `CONTROL_OPEN_TIMEOUT_S`;
        queues output."""
        for sid, state in list(self._peer.items()):
            if state.deadline is not None and state.deadline <= now:
                self._refuse(sid, StreamCode.DELIVERY_TIMEOUT)
        return []

    # -- output --

    def data_to_send(self) -> list[Command]:
        """Return (and forget) the queued commands, in order."""
        out, self._out = self._out, []
        self.pending_bytes = 0
        return out

    def announce(self, stream_id: int, message: Announce) -> None:
        """Send an ANNOUNCE on a peer's Announce stream; queues output. Raises
        `MoqUsageError` when that stream is gone."""
        self.send(stream_id, message.encode(self.version))

    def subscribe_ok(self, stream_id: int, message: SubscribeOk) -> None:
        """Accept a subscription (SUBSCRIBE_OK); queues output."""
        self.send(stream_id, message.encode(self.version))

    def subscribe_drop(self, stream_id: int, message: SubscribeDrop) -> None:
        """Tell the subscriber groups will never come (SUBSCRIBE_DROP); queues output."""
        self.send(stream_id, message.encode(self.version))

    def open_group(self, subscribe_id: int, sequence: int) -> int:
        """Open a Group uni stream for `subscribe_id`'s group `sequence`, write its header and
        return the stream id (write frames with `send`, end with `finish`); queues output."""
        if self.ended is not None:
            raise MoqUsageError("session ended")
        stream_id = self._allocator.open_uni()
        self._sending.add(stream_id)
        header = GroupHeader(subscribe_id=subscribe_id, sequence=sequence)
        self._out.append(
            StreamData(stream_id, encode_varint(UniStreamType.GROUP) + header.encode(self.version))
        )
        return stream_id

    def open_bidi(self, stream_type: BidiStreamType, first: bytes, handler: StreamHandler) -> int:
        """Open a control stream of `stream_type` (the subscriber half's Announce/Subscribe),
        send `first` (its first message, encoded) and route what the peer answers on it to
        `handler`; returns the stream id; queues output."""
        if self.ended is not None:
            raise MoqUsageError("session ended")
        stream_id = self._allocator.open_bidi()
        self._sending.add(stream_id)
        self._handlers[stream_id] = handler
        self._out.append(StreamData(stream_id, encode_varint(stream_type) + first))
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Queue `data` (then FIN when `fin`) on a stream whose send side we own. Raises
        `MoqUsageError` when that side is already finished or reset."""
        if stream_id not in self._sending:
            raise MoqUsageError(f"stream {stream_id} is not open for sending")
        if fin:
            self._sending.discard(stream_id)
        if self.ended is None:
            self._out.append(StreamData(stream_id, data, fin))
            self.pending_bytes += len(data)

    def can_send(self, stream_id: int) -> bool:
        """True while our send side of `stream_id` is open."""
        return stream_id in self._sending and self.ended is None

    def finish(self, stream_id: int) -> None:
        """FIN our send side of `stream_id` (idempotent); queues output."""
        if stream_id in self._sending:
            self._sending.discard(stream_id)
            if self.ended is None:
                self._out.append(StreamData(stream_id, b"", True))

    def reset(self, stream_id: int, code: int) -> None:
        """RESET our send side of `stream_id` with moq `code` (idempotent); queues output."""
        if stream_id in self._sending:
            self._sending.discard(stream_id)
            if self.ended is None:
                self._out.append(ResetStream(stream_id, code))

    def stop(self, stream_id: int, code: int) -> None:
        """STOP_SENDING the peer's side of `stream_id` and stop reading it; queues output."""
        self._handlers.pop(stream_id, None)
        self._peer.pop(stream_id, None)
        if self.ended is None:
            self._out.append(StopSending(stream_id, code))

    def close(self, code: int = SessionCode.NO_ERROR, reason: str = "") -> list[MoqEvent]:
        """End the session with `code`; queues `CloseSession`. Returns `SessionEnded` once."""
        if self.ended is not None:
            return []
        self._out.append(CloseSession(code, reason))
        self.ended = SessionEnded(code=code, reason=reason, by_peer=False)
        self._forget()
        return [self.ended]

    # -- internals --

    def _fail(self, exc: ProtocolViolation) -> SessionEnded:
        self.close(exc.code, exc.reason)
        assert self.ended is not None
        return self.ended

    def _refuse(self, stream_id: int, code: int) -> None:
        self._peer.pop(stream_id, None)
        self._refused.add(stream_id)
        self.reset(stream_id, code)
        self._out.append(StopSending(stream_id, code))

    def _forget(self) -> None:
        self._peer.clear()
        self._refused.clear()
        self._handlers.clear()
        self._sending.clear()

    def _peer_uni(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]:
        if stream_id in self._refused:
            if fin:
                self._refused.discard(stream_id)
            return []
        factory = self.uni_handler
        handler = factory(stream_id) if factory is not None else None
        if handler is None:
            self._out.append(StopSending(stream_id, StreamCode.CANCELLED))
            if not fin:
                if len(self._refused) >= _MAX_PEER_STREAMS:
                    raise ProtocolViolation(f"more than {_MAX_PEER_STREAMS} refused streams")
                self._refused.add(stream_id)
            return []
        if not fin:
            self._handlers[stream_id] = handler
        return handler.on_data(stream_id, data, fin, now)

    def _peer_bidi(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]:
        if stream_id in self._refused:
            if fin:
                self._refused.discard(stream_id)
            return []
        state = self._peer.get(stream_id)
        if state is None:
            if not data and not fin:
                return []
            if len(self._peer) + len(self._refused) >= _MAX_PEER_STREAMS:
                raise ProtocolViolation(f"more than {_MAX_PEER_STREAMS} open control streams")
            state = self._peer[stream_id] = _PeerControl(now + CONTROL_OPEN_TIMEOUT_S)
            self._sending.add(stream_id)
        if state.kind == BidiStreamType.PROBE:
            events: list[MoqEvent] = []  # a subscriber sends nothing on Probe: discard
        else:
            state.buf += data
            events = self._parse_control(stream_id, state)
        if fin and stream_id in self._peer:
            del self._peer[stream_id]
            if not state.request_seen and state.kind != BidiStreamType.PROBE:
                raise ProtocolViolation(f"control stream {stream_id} ended before its request")
            events += self._peer_gone(stream_id, state, None)
        return events

    def _parse_control(self, stream_id: int, state: _PeerControl) -> list[MoqEvent]:
        buf = bytes(state.buf)  # control messages are small; a copy keeps state.buf resizable
        pos = 0
        events: list[MoqEvent] = []
        if state.kind is None:
            got = take_varint(buf)
            if got is None:
                return events
            state.kind, pos = got
            if state.kind == BidiStreamType.PROBE:
                state.deadline = None
                state.request_seen = True
                state.buf.clear()
                return [ProbeOpened(stream_id=stream_id)]
            if state.kind not in (BidiStreamType.ANNOUNCE, BidiStreamType.SUBSCRIBE):
                # Unknown or unserved (FETCH, TRACK, ... on 03/04): refuse the stream, keep the
                # session, as moq-rs does.
                self._refuse(stream_id, StreamCode.CANCELLED)
                return events
        while True:
            got_msg = take_message(buf, pos, limit=MAX_CONTROL_MESSAGE_BYTES)
            if got_msg is None:
                break
            body, pos = got_msg
            events.append(self._control_message(stream_id, state, body))
        del state.buf[:pos]
        return events

    def _control_message(self, stream_id: int, state: _PeerControl, body: memoryview) -> MoqEvent:
        version = self.version
        if state.kind == BidiStreamType.ANNOUNCE:
            if state.request_seen:
                raise ProtocolViolation("a second message on an Announce stream")
            state.request_seen = True
            state.deadline = None
            return AnnounceRequested(
                stream_id=stream_id, request=AnnounceRequest.decode(body, version)
            )
        if not state.request_seen:
            state.request_seen = True
            state.deadline = None
            return SubscribeRequested(stream_id=stream_id, request=Subscribe.decode(body, version))
        return SubscribeUpdated(stream_id=stream_id, update=SubscribeUpdate.decode(body, version))

    def _peer_gone(self, stream_id: int, state: _PeerControl, code: int | None) -> list[MoqEvent]:
        if not state.request_seen:
            self.reset(stream_id, StreamCode.CANCELLED)
            return []
        if state.kind == BidiStreamType.SUBSCRIBE:
            # A FIN is answered by the publisher's finish() once its groups are out.
            if code is not None:
                self.reset(stream_id, StreamCode.CANCELLED)
            return [SubscribeCancelled(stream_id=stream_id, code=code)]
        if code is None:
            self.finish(stream_id)
        else:
            self.reset(stream_id, StreamCode.CANCELLED)
        if state.kind == BidiStreamType.ANNOUNCE:
            return [AnnounceCancelled(stream_id=stream_id, code=code)]
        return []
