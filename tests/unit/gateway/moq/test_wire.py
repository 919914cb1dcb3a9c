"""The moq-lite codec against the byte transcripts captured from moq-ffi 0.4.18
(reference/moq-lite-wire.md): every message decodes from and encodes to those bytes."""

from __future__ import annotations

import pytest

from gateway.moq.errors import ProtocolViolation
from gateway.moq.wire import (
    Announce,
    AnnounceRequest,
    GroupHeader,
    Probe,
    StreamCode,
    Subscribe,
    SubscribeDrop,
    SubscribeOk,
    SubscribeUpdate,
    Version,
    encode_frame,
    encode_varint,
    stream_code_from_wire,
    stream_code_to_wire,
    take_message,
    take_varint,
    version_for_alpn,
)

L3 = Version.LITE_03
L4 = Version.LITE_04


def body_of(message: bytes) -> memoryview:
    got = take_message(message)
    assert got is not None
    body, end = got
    assert end == len(message)
    return body


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, "00"),
        (63, "3f"),
        (64, "4040"),
        (1500, "45dc"),
        (999_990, "800f4236"),
        (0x0004E303BC879B80, "c004e303bc879b80"),
        ((1 << 62) - 1, "ffffffffffffffff"),
    ],
)
def test_varints_encode_and_decode_to_rfc9000_bytes(value: int, wire: str) -> None:
    assert encode_varint(value).hex() == wire
    assert take_varint(bytes.fromhex(wire)) == (value, len(wire) // 2)


def test_varints_reject_out_of_range_values_and_wait_for_missing_bytes() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_varint(1 << 62)
    with pytest.raises(ValueError, match="negative"):
        encode_varint(-1)
    assert take_varint(bytes.fromhex("c004e3")) is None
    assert take_varint(b"") is None
    assert take_varint(bytes.fromhex("4005")) == (5, 2)  # non-minimal is accepted


def test_announce_request_lite03_is_the_captured_client_request() -> None:
    wire = bytes.fromhex("0100")
    assert AnnounceRequest.decode(body_of(wire), L3) == AnnounceRequest(prefix="")
    assert AnnounceRequest(prefix="").encode(L3) == wire


def test_announce_request_lite04_carries_the_exclude_hop() -> None:
    wire = bytes.fromhex("0900c004e303bc879b80")
    msg = AnnounceRequest.decode(body_of(wire), L4)
    assert msg == AnnounceRequest(prefix="", exclude_hop=0x0004E303BC879B80)
    assert msg.encode(L4) == wire


def test_announce_lite03_is_the_captured_moq_rs_announcement() -> None:
    wire = bytes.fromhex("0701") + b"\x04demo" + b"\x01"
    msg = Announce.decode(body_of(wire), L3)
    assert msg == Announce(active=True, suffix="demo", hop_count=1)
    assert msg.encode(L3) == wire
    ended = Announce(active=False, suffix="demo").encode(L3)
    assert ended == bytes.fromhex("0700") + b"\x04demo" + b"\x00"


def test_announce_lite04_carries_the_hop_list() -> None:
    msg = Announce(active=True, suffix="demo", hop_count=2, hops=(11, 5))
    wire = msg.encode(L4)
    assert wire == bytes.fromhex("0901") + b"\x04demo" + bytes.fromhex("020b05")
    assert Announce.decode(body_of(wire), L4) == msg


def test_subscribe_is_the_captured_lite03_request() -> None:
    wire = bytes.fromhex("1200") + b"\x04demo" + b"\x06events" + bytes.fromhex("0000000000")
    msg = Subscribe.decode(body_of(wire), L3)
    assert msg == Subscribe(subscribe_id=0, broadcast="demo", track="events")
    assert msg.encode(L3) == wire


def test_subscribe_with_priority_and_groups_round_trips() -> None:
    msg = Subscribe(
        subscribe_id=7,
        broadcast="live/cam1",
        track="catalog.json",
        priority=200,
        ordered=True,
        max_latency_ms=1500,
        start_group=0,
        end_group=9,
    )
    wire = msg.encode(L3)
    assert b"\xc8\x01\x45\xdc\x01\x0a" in wire  # priority is a raw byte, groups are +1
    assert Subscribe.decode(body_of(wire), L3) == msg


def test_subscribe_ok_is_what_moq_rs_sends_for_a_priority_7_subscription() -> None:
    wire = bytes.fromhex("00050700000000")
    assert SubscribeOk(priority=7).encode(L3) == wire
    assert SubscribeOk.decode(body_of(wire[1:]), L3) == SubscribeOk(priority=7)


def test_subscribe_update_is_the_one_moq_rs_accepted() -> None:
    wire = bytes.fromhex("06090145dc0000")
    msg = SubscribeUpdate.decode(body_of(wire), L3)
    assert msg == SubscribeUpdate(priority=9, ordered=True, max_latency_ms=1500)
    assert msg.encode(L3) == wire


def test_subscribe_drop_round_trips_with_its_type() -> None:
    msg = SubscribeDrop(start=3, end=5, error_code=StreamCode.OLD)
    wire = msg.encode(L3)
    assert wire == bytes.fromhex("0103030534")
    assert SubscribeDrop.decode(body_of(wire[1:]), L3) == msg


def test_group_header_and_frames_are_the_captured_lite03_group() -> None:
    wire = bytes.fromhex("00020003") + b"\x07rs-g3f0" + b"\x07rs-g3f1"
    header = GroupHeader(subscribe_id=0, sequence=3)
    assert b"\x00" + header.encode(L3) + encode_frame(b"rs-g3f0") + encode_frame(b"rs-g3f1") == wire
    assert GroupHeader.decode(body_of(wire[1:4]), L3) == header


def test_probe_lite04_adds_the_rtt() -> None:
    assert Probe(bitrate=1000, rtt_ms=20).encode(L3) == bytes.fromhex("0243e8")
    wire = Probe(bitrate=1000, rtt_ms=20).encode(L4)
    assert wire == bytes.fromhex("0343e814")
    assert Probe.decode(body_of(wire), L4) == Probe(bitrate=1000, rtt_ms=20)


@pytest.mark.parametrize("code", [0, 1, 5, 0x1D, 0x1E, 0x1F, 0x33, 0x36, 64 + 9, 0xFFFFFFFF])
def test_stream_codes_map_into_the_webtransport_range_and_back(code: int) -> None:
    wire = stream_code_to_wire(code)
    assert wire >= 0x52E4A40FA8DB
    assert stream_code_from_wire(wire) == code


def test_stream_codes_follow_the_http3_formula_and_accept_raw_codes() -> None:
    assert stream_code_to_wire(0) == 0x52E4A40FA8DB
    assert stream_code_to_wire(0x1E) == 0x52E4A40FA8DB + 0x1E + 1  # one reserved value skipped
    assert stream_code_from_wire(13) == 13  # an unmapped peer


def test_alpn_tokens_name_the_versions() -> None:
    assert version_for_alpn("moq-lite-03") is L3
    assert version_for_alpn("moq-lite-04") is L4
    assert version_for_alpn("moq-lite-05") is None
    assert L3.alpn == "moq-lite-03"


@pytest.mark.parametrize(
    ("cls", "body", "match"),
    [
        (Subscribe, bytes.fromhex("00") + b"\x04demo", "truncated"),
        (Subscribe, bytes.fromhex("00") + b"\x09demo", "runs past"),
        (Subscribe, bytes.fromhex("00") + b"\x02\xff\xfe\x00\x00\x00\x00\x00\x00", "UTF-8"),
        (Subscribe, bytes.fromhex("00") + b"\x00\x00\x00\x02\x00\x00\x00", "boolean"),
        (AnnounceRequest, bytes.fromhex("0000"), "trailing"),
        (Announce, bytes.fromhex("0200") + b"\x00", "status"),
        (GroupHeader, bytes.fromhex("00"), "truncated"),
    ],
)
def test_malformed_bodies_raise_protocol_violations(
    cls: type[Subscribe | AnnounceRequest | Announce | GroupHeader], body: bytes, match: str
) -> None:
    with pytest.raises(ProtocolViolation, match=match) as info:
        cls.decode(body, L3)
    assert info.value.code == 3


def test_take_message_waits_for_the_body_and_refuses_oversized_lengths() -> None:
    assert take_message(bytes.fromhex("05010203")) is None
    assert take_message(b"") is None
    with pytest.raises(ProtocolViolation, match="exceeds") as info:
        take_message(encode_varint(1 << 20))  # refused before any body byte arrived
    assert info.value.code == 3


def test_out_of_range_byte_fields_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        SubscribeOk(priority=256).encode(L3)
