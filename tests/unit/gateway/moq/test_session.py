"""The sans-I/O session: peer control streams in (whole, byte by byte, split), events and
commands out; malformed, truncated and oversized input ends the session, never a hang."""

from __future__ import annotations

import random

import pytest

from gateway.moq.errors import MoqUsageError
from gateway.moq.session import (
    CONTROL_OPEN_TIMEOUT_S,
    AnnounceCancelled,
    AnnounceRequested,
    CloseSession,
    GroupStopped,
    MoqEvent,
    MoqSession,
    ProbeOpened,
    ResetStream,
    SessionEnded,
    StopSending,
    StreamData,
    SubscribeCancelled,
    SubscribeRequested,
    SubscribeUpdated,
)
from gateway.moq.wire import (
    Announce,
    AnnounceRequest,
    StreamCode,
    Subscribe,
    SubscribeOk,
    SubscribeUpdate,
    Version,
    encode_frame,
    encode_varint,
)
from tests.unit.gateway.moq.fakes import CountingAllocator

SUBSCRIBE_WIRE = bytes.fromhex("021200") + b"\x04demo" + b"\x06events" + bytes.fromhex("0000000000")


def server(version: Version = Version.LITE_03) -> MoqSession:
    return MoqSession(version, is_client=False, allocator=CountingAllocator())


def feed_split(
    session: MoqSession, stream_id: int, data: bytes, sizes: list[int], fin: bool = False
) -> list[MoqEvent]:
    events: list[MoqEvent] = []
    pos = 0
    for size in sizes:
        events += session.feed(stream_id, data[pos : pos + size], False, 0.0)
        pos += size
    events += session.feed(stream_id, data[pos:], fin, 0.0)
    return events


def splits(n: int) -> list[list[int]]:
    rng = random.Random(n)
    out = [[], [1] * (n - 1), [1316]]
    for _ in range(3):
        out.append([rng.randint(0, 5) for _ in range(n // 2)])
    return out


@pytest.mark.parametrize("sizes", splits(3))
def test_a_lite03_announce_request_arrives_however_it_is_split(sizes: list[int]) -> None:
    session = server()
    events = feed_split(session, 0, bytes.fromhex("010100"), sizes)
    assert events == [AnnounceRequested(stream_id=0, request=AnnounceRequest(prefix=""))]
    session.announce(0, Announce(active=True, suffix="demo"))
    assert session.data_to_send() == [StreamData(0, bytes.fromhex("0701") + b"\x04demo\x00")]


def test_a_lite04_announce_request_carries_the_exclude_hop() -> None:
    session = server(Version.LITE_04)
    events = session.feed(0, bytes.fromhex("010900c004e303bc879b80"), False, 0.0)
    assert events == [
        AnnounceRequested(
            stream_id=0, request=AnnounceRequest(prefix="", exclude_hop=0x0004E303BC879B80)
        )
    ]


@pytest.mark.parametrize("sizes", splits(len(SUBSCRIBE_WIRE)))
def test_a_subscribe_and_its_updates_arrive_however_they_are_split(sizes: list[int]) -> None:
    session = server()
    update = bytes.fromhex("06090145dc0000")
    events = feed_split(session, 4, SUBSCRIBE_WIRE + update, sizes)
    assert events == [
        SubscribeRequested(
            stream_id=4, request=Subscribe(subscribe_id=0, broadcast="demo", track="events")
        ),
        SubscribeUpdated(
            stream_id=4,
            update=SubscribeUpdate(priority=9, ordered=True, max_latency_ms=1500),
        ),
    ]


def test_serving_a_subscription_writes_subscribe_ok_and_group_streams() -> None:
    session = server()
    session.feed(4, SUBSCRIBE_WIRE, False, 0.0)
    session.subscribe_ok(4, SubscribeOk(priority=0))
    sid = session.open_group(0, 3)
    session.send(sid, encode_frame(b"rs-g3f0"))
    session.send(sid, encode_frame(b"rs-g3f1"))
    session.finish(sid)
    out = session.data_to_send()
    assert out[0] == StreamData(4, bytes.fromhex("00050000000000"))
    assert sid == 3
    assert b"".join(c.data for c in out[1:] if isinstance(c, StreamData)) == (
        bytes.fromhex("00020003") + b"\x07rs-g3f0\x07rs-g3f1"
    )
    assert out[-1] == StreamData(3, b"", True)
    with pytest.raises(MoqUsageError):
        session.send(sid, b"late")


def test_a_peer_fin_on_a_subscribe_stream_cancels_it_and_a_reset_also_resets_ours() -> None:
    session = server()
    session.feed(4, SUBSCRIBE_WIRE, False, 0.0)
    assert session.feed(4, b"", True, 0.0) == [SubscribeCancelled(stream_id=4, code=None)]
    assert session.can_send(4)  # the publisher FINs back when its groups are out
    session.feed(8, SUBSCRIBE_WIRE, False, 0.0)
    assert session.stream_reset(8, 1, 0.0) == [SubscribeCancelled(stream_id=8, code=1)]
    assert session.data_to_send() == [ResetStream(8, StreamCode.CANCELLED)]


def test_stop_sending_on_a_group_stream_resets_it_and_reports_it() -> None:
    session = server()
    sid = session.open_group(0, 0)
    session.data_to_send()
    assert session.stop_sending(sid, 1, 0.0) == [GroupStopped(stream_id=sid, code=1)]
    assert session.data_to_send() == [ResetStream(sid, 1)]
    assert not session.can_send(sid)


def test_the_announce_stream_cancelled_by_the_peer_is_reported() -> None:
    session = server()
    session.feed(0, bytes.fromhex("010100"), False, 0.0)
    assert session.stream_reset(0, 1, 0.0) == [AnnounceCancelled(stream_id=0, code=1)]
    assert session.data_to_send() == [ResetStream(0, StreamCode.CANCELLED)]


def test_a_probe_stream_is_left_open_and_whatever_comes_on_it_is_discarded() -> None:
    session = server()
    assert session.feed(4, b"\x04", False, 0.0) == [ProbeOpened(stream_id=4)]
    assert session.feed(4, b"\x05" * 100_000, False, 0.0) == []
    assert session.data_to_send() == []
    assert session.next_deadline() is None


@pytest.mark.parametrize("kind", [0x0, 0x3, 0x5, 0x6, 0x3F])
def test_unserved_stream_types_are_refused_and_the_session_goes_on(kind: int) -> None:
    session = server()
    assert session.feed(4, encode_varint(kind) + b"garbage", False, 0.0) == []
    assert session.data_to_send() == [
        ResetStream(4, StreamCode.CANCELLED),
        StopSending(4, StreamCode.CANCELLED),
    ]
    assert session.feed(4, b"more garbage", True, 0.0) == []
    assert session.feed(0, bytes.fromhex("010100"), False, 0.0)[0] == AnnounceRequested(
        stream_id=0, request=AnnounceRequest(prefix="")
    )


def ended_with_violation(events: list[MoqEvent], session: MoqSession) -> None:
    assert len(events) == 1
    assert isinstance(events[0], SessionEnded)
    assert events[0].code == 3
    assert not events[0].by_peer
    closes = [c for c in session.data_to_send() if isinstance(c, CloseSession)]
    assert len(closes) == 1
    assert closes[0].code == 3
    assert session.feed(0, b"\x01\x01\x00", False, 1.0) == []  # ignored afterwards


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("02") + bytes.fromhex("0500") + b"\x09dem",  # string past its message
        bytes.fromhex("02") + bytes.fromhex("0600") + b"\x00\x00\x07\x00\x00",  # ordered=7
        bytes.fromhex("01") + bytes.fromhex("020000"),  # trailing byte in ANNOUNCE_REQUEST
        bytes.fromhex("010100") + bytes.fromhex("0100"),  # a second message on Announce
        bytes.fromhex("02") + encode_varint(1 << 30),  # oversized length, no body yet
    ],
)
def test_malformed_and_oversized_control_messages_end_the_session(data: bytes) -> None:
    session = server()
    ended_with_violation(session.feed(0, data, False, 0.0), session)


def test_a_truncated_request_followed_by_fin_ends_the_session() -> None:
    session = server()
    assert session.feed(4, SUBSCRIBE_WIRE[:10], False, 0.0) == []
    ended_with_violation(session.feed(4, b"", True, 0.0), session)


def test_a_huge_message_trickled_in_is_refused_before_it_is_buffered() -> None:
    session = server()
    events = session.feed(4, b"\x02" + encode_varint(9000), False, 0.0)
    ended_with_violation(events, session)


def test_a_silent_control_stream_is_reset_after_the_timeout() -> None:
    session = server()
    session.feed(4, b"\x02\x05", False, 100.0)
    assert session.next_deadline() == 100.0 + CONTROL_OPEN_TIMEOUT_S
    session.on_timer(100.0 + CONTROL_OPEN_TIMEOUT_S)
    assert session.data_to_send() == [
        ResetStream(4, StreamCode.DELIVERY_TIMEOUT),
        StopSending(4, StreamCode.DELIVERY_TIMEOUT),
    ]
    assert session.next_deadline() is None


def test_peer_uni_streams_without_a_subscriber_half_are_stopped() -> None:
    session = server()
    assert session.feed(2, bytes.fromhex("00020003"), False, 0.0) == []
    assert session.data_to_send() == [StopSending(2, StreamCode.CANCELLED)]


def test_close_and_connection_loss_end_the_session_once() -> None:
    session = server()
    assert session.close(0, "bye") == [SessionEnded(code=0, reason="bye", by_peer=False)]
    assert session.close(0, "again") == []
    assert session.data_to_send() == [CloseSession(0, "bye")]
    other = server()
    assert other.connection_lost(0, "idle") == [SessionEnded(code=0, reason="idle", by_peer=True)]
    assert other.connection_lost(0, "idle") == []
    with pytest.raises(MoqUsageError):
        other.open_group(0, 0)


def test_a_stopped_peer_uni_stream_is_stopped_once_and_its_data_discarded() -> None:
    session = server()
    session.feed(2, bytes.fromhex("0002"), False, 0.0)
    session.feed(2, b"\x00" * 5000, False, 0.0)
    assert session.data_to_send() == [StopSending(2, StreamCode.CANCELLED)]
    assert session.feed(2, b"", True, 0.0) == []
    assert session.data_to_send() == []
