"""Handshake decisions and egress skipping of the SRT server, without sockets (fakes only)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest

from gateway import AuthDecision, Server, ServerConfig
from gateway.egress import Piece, Sender, random_access
from gateway.server import RateCap, _Pending
from gateway.srt import (
    Accept,
    HandshakeInfo,
    Reject,
    SrtConnection,
    SrtListener,
    SrtReactor,
    srt_now_us,
)
from gateway.streamid import StreamRequest
from model import BroadcastProducer, Origin, PublisherPolicy
from mux.export import TsChunk

PEER = ("127.0.0.1", 40000)


class FakeListener:
    port = 9999

    async def aclose(self) -> None:
        return None


def make_server(origin: Origin | None = None, **overrides: Any) -> Server:
    config = replace(ServerConfig(listen=("127.0.0.1", 0)), **overrides)
    return Server(
        config,
        cast(SrtReactor, object()),
        cast(SrtListener, FakeListener()),
        owns_reactor=False,
        origin=origin,
    )


async def decide(server: Server, stream_id: str, peer: tuple[str, int] = PEER) -> Accept | Reject:
    return await server._on_handshake(HandshakeInfo(stream_id=stream_id, peer=peer))


async def test_bad_stream_id_is_rejected_with_1400() -> None:
    server = make_server()
    assert await decide(server, "#!::m=publish") == Reject(1400)
    assert await decide(server, "") == Reject(1400)
    assert await decide(server, "#!::r=../../etc,m=request") == Reject(1400)
    assert server.rejected == 3


async def test_accepted_caller_carries_its_parsed_request_and_default_passphrase() -> None:
    server = make_server(passphrase="server-secret-1", prefix="live")
    decision = await decide(server, "#!::r=cam1,m=request,u=bob")
    assert isinstance(decision, Accept)
    assert decision.passphrase == "server-secret-1"
    pending = decision.context
    assert isinstance(pending, _Pending)
    assert pending.request.path == "live/cam1"
    assert pending.request.user == "bob"
    assert pending.tier == "default"


async def test_auth_hook_refusal_uses_its_code() -> None:
    async def auth(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        return AuthDecision(accept=request.user == "alice", code=1401)

    server = make_server(auth=auth)
    assert await decide(server, "#!::r=a,m=publish,u=mallory") == Reject(1401)
    assert isinstance(await decide(server, "#!::r=a,m=publish,u=alice"), Accept)


async def test_auth_hook_default_refusal_is_1403_and_bad_codes_fall_back_to_it() -> None:
    async def auth(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        return AuthDecision(accept=False, code=404 if request.user == "x" else 1403)

    server = make_server(auth=auth)
    assert await decide(server, "#!::r=a,u=y") == Reject(1403)
    assert await decide(server, "#!::r=a,u=x") == Reject(1403)


async def test_auth_hook_chooses_tier_and_passphrase_per_stream() -> None:
    async def auth(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        assert peer == PEER
        return AuthDecision(tier="pro", passphrase=f"secret-for-{request.resource}")

    server = make_server(auth=auth, passphrase="server-default-1")
    decision = await decide(server, "#!::r=cam7,m=publish")
    assert isinstance(decision, Accept)
    assert decision.passphrase == "secret-for-cam7"
    assert isinstance(decision.context, _Pending)
    assert decision.context.tier == "pro"


async def test_failing_or_slow_auth_hook_rejects_instead_of_crashing() -> None:
    async def broken(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        raise RuntimeError("auth backend down")

    async def slow(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        await asyncio.sleep(10)
        return AuthDecision()

    assert await decide(make_server(auth=broken), "#!::r=a") == Reject(1500)
    assert await decide(make_server(auth=slow, auth_timeout_s=0.05), "#!::r=a") == Reject(1503)


async def test_second_publisher_on_a_claimed_path_gets_1409() -> None:
    server = make_server()
    other = ("10.0.0.2", 5000)
    first = await decide(server, "#!::r=live/x,m=publish")
    assert isinstance(first, Accept)
    assert await decide(server, "#!::r=live/x,m=publish", other) == Reject(1409)
    assert await decide(server, "live/x", other) == Reject(1409)  # same path, OBS form
    assert isinstance(await decide(server, "#!::r=live/x,m=request", other), Accept)
    assert isinstance(await decide(server, "#!::r=live/y,m=publish", other), Accept)


async def test_pending_claim_expires_when_the_handshake_never_completes() -> None:
    # libsrt may still fail a handshake after the callback (e.g. a wrong passphrase).
    server = make_server(claim_timeout_s=0.05)
    other = ("10.0.0.2", 5000)
    assert isinstance(await decide(server, "#!::r=live/x,m=publish"), Accept)
    assert await decide(server, "#!::r=live/x,m=publish", other) == Reject(1409)
    await asyncio.sleep(0.08)
    assert isinstance(await decide(server, "#!::r=live/x,m=publish", other), Accept)


async def test_a_retry_from_the_same_host_replaces_its_pending_claim() -> None:
    server = make_server()
    first = await decide(server, "#!::r=live/x,m=publish", ("10.0.0.1", 5000))
    retry = await decide(server, "#!::r=live/x,m=publish", ("10.0.0.1", 5001))
    assert isinstance(first, Accept)
    assert isinstance(retry, Accept)
    assert isinstance(first.context, _Pending)
    assert isinstance(retry.context, _Pending)
    assert server._claims["live/x"] is retry.context.claim
    # Once the claim is active (the connection surfaced), nobody replaces it.
    claim = retry.context.claim
    assert claim is not None
    claim.expires_at = None
    assert await decide(server, "#!::r=live/x,m=publish", ("10.0.0.1", 5002)) == Reject(1409)


async def test_path_live_in_the_origin_gets_1409() -> None:
    origin = Origin()
    broadcast = BroadcastProducer()
    origin.publish("live/x", broadcast)
    server = make_server(origin)
    assert await decide(server, "#!::r=live/x,m=publish") == Reject(1409)
    broadcast.finish()
    assert isinstance(await decide(server, "#!::r=live/x,m=publish"), Accept)


async def test_takeover_policy_lets_a_second_publisher_through() -> None:
    server = make_server(publisher_policy=PublisherPolicy.TAKEOVER)
    assert isinstance(await decide(server, "#!::r=live/x,m=publish"), Accept)
    assert isinstance(await decide(server, "#!::r=live/x,m=publish"), Accept)


async def test_request_for_a_missing_path_gets_1404_when_the_server_must_not_wait() -> None:
    origin = Origin()
    server = make_server(origin, request_timeout_s=0)
    assert await decide(server, "#!::r=live/none,m=request") == Reject(1404)
    broadcast = BroadcastProducer()
    origin.publish("live/none", broadcast)
    assert isinstance(await decide(server, "#!::r=live/none,m=request"), Accept)
    broadcast.finish()


# -- egress: pacing into a fake connection, skipping when the link is slow -------------------


def packet(pid: int, *, rai: bool = False, fill: int = 0) -> bytes:
    if rai:
        header = bytes([0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x30, 1, 0x40])
    else:
        header = bytes([0x47, pid >> 8, pid & 0xFF, 0x10])
    return header + bytes([fill]) * (188 - len(header))


@dataclass
class FakeConn:
    capacity: int = 1 << 30  # payloads accepted before send() says "full"
    unacked: int = 0
    sent: list[bytes] = field(default_factory=list)
    srctimes: list[int | None] = field(default_factory=list)
    ended: bool = False

    def send(self, payload: bytes, *, srctime_us: int | None = None) -> bool:
        if len(self.sent) >= self.capacity:
            return False
        self.sent.append(payload)
        self.srctimes.append(srctime_us)
        return True

    def send_many(self, payloads: Sequence[bytes], *, srctime_us: int | None = None) -> int:
        """Like SrtConnection.send_many: how many of `payloads` went, stopping at a refusal."""
        for queued, payload in enumerate(payloads):
            if not self.send(payload, srctime_us=srctime_us):
                return queued
        return len(payloads)

    def send_buffer_bytes(self) -> int:
        return self.unacked


async def drive(
    s: Sender, items: list[TsChunk], error: BaseException | None = None, between: Any = None
) -> None:
    """Hand `items` to `s` as a hub would (one piece each, a keyframe is a join point), end
    the source with `error`, and run the sender to its end. `between(i)` runs before item i."""
    s.start((0, 0, 0), [])
    for i, item in enumerate(items):
        if between is not None:
            between(i)
        payloads = tuple(item.data[j : j + 1316] for j in range(0, len(item.data), 1316))
        s.offer(Piece(payloads, item.media_ts_us, random_access(item.data), None, len(item.data)))
        await asyncio.sleep(0)
    s.source_ended(None, error)
    async with asyncio.timeout(5):
        await s.run()


def sender(conn: FakeConn, **overrides: Any) -> Sender:
    config = replace(ServerConfig(), **overrides)
    return Sender(
        cast(SrtConnection, conn),
        latency_ms=config.latency_ms,
        send_buffer_limit_bytes=config.send_buffer_limit(),
    )


async def test_sender_delivers_every_byte_in_order_in_1316_byte_payloads() -> None:
    frames = [
        TsChunk(b"".join(packet(0x100, fill=i) for _ in range(5)), i * 33_000) for i in range(20)
    ]
    conn = FakeConn()
    s = sender(conn)
    await drive(s, frames)
    assert b"".join(conn.sent) == b"".join(c.data for c in frames)
    assert all(len(p) % 188 == 0 and len(p) <= 1316 for p in conn.sent)
    assert s.sent_bytes == sum(len(c.data) for c in frames)
    assert s.ended_by_source
    # every payload carries an SRT source time on libsrt's clock, never in the future, in order
    stamps = [t for t in conn.srctimes if t is not None]
    assert len(stamps) == len(conn.sent)
    assert stamps == sorted(stamps)
    assert stamps[-1] <= srt_now_us()


async def test_sender_reraises_the_source_error_after_sending_what_it_had() -> None:
    conn = FakeConn()
    s = sender(conn)
    with pytest.raises(ConnectionResetError):
        await drive(
            s, [TsChunk(packet(0x100, rai=True), 0)], ConnectionResetError("publisher vanished")
        )
    assert conn.sent == [packet(0x100, rai=True)]


async def test_slow_viewer_skips_to_the_next_keyframe() -> None:
    # GOP 1: keyframe + 3 frames; GOP 2: keyframe + 1 frame. The link refuses after 2 payloads.
    gop1 = [TsChunk(packet(0x100, rai=True, fill=1), 0)] + [
        TsChunk(packet(0x100, fill=2 + i), (i + 1) * 33_000) for i in range(3)
    ]
    gop2 = [
        TsChunk(packet(0x100, rai=True, fill=9), 132_000),
        TsChunk(packet(0x100, fill=10), 165_000),
    ]
    conn = FakeConn(capacity=2)
    s = sender(conn)

    def recover(i: int) -> None:
        if i == len(gop1):
            conn.capacity = 100  # the link recovers before the next GOP

    await drive(s, gop1 + gop2, between=recover)
    assert conn.sent[:2] == [gop1[0].data, gop1[1].data]
    # Nothing of GOP 1 after the refusal; GOP 2 from its keyframe on.
    assert conn.sent[2:] == [gop2[0].data, gop2[1].data]
    assert s.skips == 1
    assert s.skipped_bytes == 2 * 188


async def test_viewer_with_too_much_unacknowledged_data_is_skipped() -> None:
    conn = FakeConn(unacked=10_000_000)
    s = sender(conn, send_buffer_limit_bytes=1_000_000)
    frames = [TsChunk(packet(0x100, fill=1), 0), TsChunk(packet(0x100, fill=2), 33_000)]
    await drive(s, frames)
    assert conn.sent == []
    assert s.skipped_bytes == 2 * 188


def test_random_access_indicator_is_found_in_any_packet_of_a_chunk() -> None:
    assert random_access(packet(0, fill=0) + packet(0x100, rai=True))
    assert not random_access(packet(0x100) * 7)


def test_rate_cap_allows_the_sustained_rate_and_a_burst() -> None:
    cap = RateCap(8_000, burst_s=2.0, now=0.0)  # 1000 bytes/s, 2000-byte burst
    assert cap.take(2000, 0.0)  # the whole burst at once
    assert not cap.take(1, 0.0)
    cap = RateCap(8_000, burst_s=2.0, now=0.0)
    for second in range(1, 60):  # exactly the rate for a minute
        assert cap.take(1000, float(second))


def test_rate_cap_refuses_a_publisher_above_the_rate() -> None:
    cap = RateCap(8_000, burst_s=2.0, now=0.0)
    verdicts = [cap.take(1500, float(second)) for second in range(1, 10)]
    # 1500 bytes/s against 1000/s with a 2000-byte bucket: 500 short per second.
    assert verdicts[:3] == [True, True, False]
