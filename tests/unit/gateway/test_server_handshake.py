"""Handshake decisions and the publisher rate cap of the SRT server, without sockets (fakes)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, cast

from gateway import AuthDecision, Server, ServerConfig
from gateway.ratecap import RateCap
from gateway.request import Pending
from gateway.srt import (
    Accept,
    HandshakeInfo,
    Reject,
    SrtListener,
    SrtReactor,
)
from gateway.streamid import StreamRequest
from model import BroadcastProducer, Origin, PublisherPolicy

PEER = ("127.0.0.1", 40000)


class FakeListener:
    port = 9999
    rate_refused = 0

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
    assert isinstance(pending, Pending)
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
    assert isinstance(decision.context, Pending)
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
    assert isinstance(first.context, Pending)
    assert isinstance(retry.context, Pending)
    assert server._claims.get("live/x") is retry.context.claim
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
