"""Operator limits and the bounds on what the server remembers about callers (sans-I/O parts,
explicit `now`), and the handshake decisions that use them (fakes, no sockets)."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace
from typing import Any, cast

import pytest

from gateway import AuthDecision, Server, ServerConfig, StreamRequest
from gateway.admission import SessionSlots
from gateway.claims import PathClaims
from gateway.config import ConfigError, load_config
from gateway.request import Pending
from gateway.serve import add_arguments, server_config
from gateway.srt import Accept, HandshakeInfo, LogThrottle, PeerRate, Reject, SrtListener
from gateway.srt.reactor import SrtReactor


def test_peer_rate_allows_a_burst_then_its_rate() -> None:
    rate = PeerRate(10.0, 20.0)
    assert all(rate.allow("a", 0.0) for _ in range(20))
    assert not rate.allow("a", 0.0)
    assert rate.allow("b", 0.0)  # another address has its own bucket
    assert rate.allow("a", 0.1)  # one token back after 0.1 s at 10/s
    assert not rate.allow("a", 0.1)


def test_peer_rate_forgets_hosts_whose_bucket_is_full_again() -> None:
    rate = PeerRate(10.0, 20.0)
    for n in range(100):
        rate.allow(f"10.0.0.{n}", 0.0)
    assert len(rate) == 100
    rate.allow("x", 5.0)  # past the refill period: the prune runs
    assert len(rate) == 1


def test_peer_rate_table_is_capped() -> None:
    rate = PeerRate(1.0, 1.0, max_peers=50)
    for n in range(1000):
        rate.allow(f"h{n}", n * 0.0001)
    assert len(rate) <= 50


def test_log_throttle_lets_a_burst_through_then_counts_what_it_left_out() -> None:
    throttle = LogThrottle(10.0, burst=2)
    assert throttle.allow("k", 0.0) == 0
    assert throttle.allow("k", 1.0) == 0
    assert [throttle.allow("k", 2.0 + i / 10) for i in range(5)] == [None] * 5
    assert throttle.allow("other", 3.0) == 0
    assert throttle.allow("k", 10.5) == 5  # the next line says how many were left out
    assert throttle.allow("k", 10.6) == 0


def test_session_slots_count_in_all_and_per_host() -> None:
    slots = SessionSlots(max_sessions=3, max_per_host=2, pending_timeout_s=2.0)
    first = slots.reserve("a", 0.0)
    slots.reserve("a", 0.0)
    assert slots.refusal("a", 0.0) is not None  # a has 2
    assert slots.refusal("b", 0.0) is None
    slots.reserve("b", 0.0)
    assert slots.refusal("c", 0.0) is not None  # 3 in all
    slots.hold(first)
    assert slots.refusal("c", 2.5) is None  # the two pending ones expired, the held one stays
    assert (slots.total, slots.count("a"), slots.hosts()) == (1, 1, 1)
    slots.release(first)
    slots.release(first)  # idempotent
    assert (slots.total, slots.hosts()) == (0, 0)


def test_a_slot_that_surfaces_after_expiring_counts_again() -> None:
    slots = SessionSlots(max_sessions=None, max_per_host=None, pending_timeout_s=1.0)
    late = slots.reserve("a", 0.0)
    slots.prune(5.0)
    assert slots.total == 0
    slots.hold(late)
    assert slots.total == 1
    slots.release(late)
    assert slots.total == 0


def test_expired_pending_claims_are_pruned() -> None:
    claims = PathClaims(pending_timeout_s=2.0)
    for n in range(500):
        claims.claim(f"live/x{n}", pending=True, now=n * 0.01, host="h")
    active = claims.claim("live/main", pending=False, now=5.0)
    claims.claim("live/y", pending=True, now=10.0, host="h")
    assert len(claims) == 2  # the active claim and the new pending one
    assert claims.holds(active)


def test_an_expired_claim_is_activated_while_its_path_is_free() -> None:
    claims = PathClaims(pending_timeout_s=2.0)
    slow = claims.claim("live/a", pending=True, now=0.0, host="h1")
    claims.prune(10.0)
    assert claims.activate(slow, 10.0)
    assert claims.holds(slow)
    lost = claims.claim("live/b", pending=True, now=0.0, host="h1")
    taker = claims.claim("live/b", pending=True, now=3.0, host="h2")
    assert not claims.activate(lost, 3.5)
    assert claims.holds(taker)


# -- the server's handshake decisions -----------------------------------------------------


class FakeListener:
    port = 9999
    rate_refused = 0

    def remembered(self) -> dict[str, int]:
        return {"decisions": 0, "recent_rejects": 0, "rate_peers": 0}

    async def aclose(self) -> None:
        return None


def make_server(**overrides: Any) -> Server:
    config = replace(ServerConfig(listen=("127.0.0.1", 0)), **overrides)
    return Server(
        config,
        cast(SrtReactor, object()),
        cast(SrtListener, FakeListener()),
        owns_reactor=False,
        origin=None,
    )


async def decide(server: Server, stream_id: str, host: str = "10.0.0.1") -> Accept | Reject:
    return await server._on_handshake(HandshakeInfo(stream_id=stream_id, peer=(host, 5000)))


async def test_callers_over_the_session_limits_get_1402_without_asking_the_hook() -> None:
    asked: list[str] = []

    async def auth(request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        asked.append(peer[0])
        return AuthDecision()

    server = make_server(max_sessions=3, max_peer_sessions=2, auth=auth)
    request = "#!::r=live/a,m=request"
    assert isinstance(await decide(server, request), Accept)
    assert isinstance(await decide(server, request), Accept)
    assert await decide(server, request) == Reject(1402)  # per address
    assert isinstance(await decide(server, request, "10.0.0.2"), Accept)
    assert await decide(server, request, "10.0.0.3") == Reject(1402)  # in all
    assert asked == ["10.0.0.1", "10.0.0.1", "10.0.0.2"]
    assert server.rejected == 2
    assert server.held()["slots"] == 3


async def test_no_limits_when_they_are_off() -> None:
    server = make_server(max_sessions=None, max_peer_sessions=None)
    for _ in range(300):
        assert isinstance(await decide(server, "#!::r=live/a,m=request"), Accept)


async def test_a_viewer_is_accepted_with_its_input_discarded_a_publisher_is_not() -> None:
    server = make_server()
    viewer = await decide(server, "#!::r=live/a,m=request")
    publisher = await decide(server, "#!::r=live/b,m=publish")
    assert isinstance(viewer, Accept)
    assert isinstance(publisher, Accept)
    assert viewer.discard_input
    assert not publisher.discard_input


async def test_failed_handshakes_stop_counting_after_the_claim_timeout() -> None:
    server = make_server(max_peer_sessions=2, claim_timeout_s=0.05)
    for n in range(2):
        decision = await decide(server, f"#!::r=live/p{n},m=publish")
        assert isinstance(decision, Accept)
        assert isinstance(decision.context, Pending)
    assert await decide(server, "#!::r=live/p9,m=publish") == Reject(1402)
    await asyncio.sleep(0.1)  # libsrt failed them (never surfaced): they expire
    assert isinstance(await decide(server, "#!::r=live/p9,m=publish"), Accept)
    held = server.held()
    assert (held["slots"], held["claims"]) == (1, 1)


# -- configuration ----------------------------------------------------------------------------


def test_limit_keys_load_from_a_file_and_flags(tmp_path: Any) -> None:
    file = tmp_path / "moqsrt.toml"
    file.write_text("max_sessions = 50\nmax_peer_sessions = 0\nmax_peer_handshakes_per_s = 2.5\n")
    config = load_config(file, {"max_sessions": "60"})
    assert (config.max_sessions, config.max_peer_sessions) == (60, None)
    assert config.max_peer_handshakes_per_s == 2.5
    defaults = load_config()
    assert (defaults.max_sessions, defaults.max_peer_sessions) == (1000, 100)
    assert defaults.max_peer_handshakes_per_s == 20.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_sessions", "many"),
        ("max_sessions", 2.5),
        ("max_sessions", -1),
        ("max_peer_sessions", True),
        ("max_peer_handshakes_per_s", "inf"),
        ("max_peer_handshakes_per_s", [1]),
    ],
)
def test_a_bad_limit_is_a_config_error_naming_its_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {key: value})
    assert caught.value.key == key


def test_limit_flags_reach_the_server_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--max-sessions", "7", "--max-peer-sessions", "off", "--max-peer-handshakes-per-s", "3"]
    )
    overrides = {k: getattr(args, k) for k in vars(args) if k.startswith("max_")}
    config = server_config(load_config(None, overrides))
    assert (config.max_sessions, config.max_peer_sessions) == (7, None)
    assert config.max_peer_handshakes_per_s == 3.0
