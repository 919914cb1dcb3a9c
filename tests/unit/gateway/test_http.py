"""The operator's HTTP surface with a real model and fake servers: metrics equal the stats
snapshot, the API lists broadcasts, sessions and usage, kicks reach the server, tokens guard
non-loopback listeners."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ConfigError, load_config
from gateway.http import GatewaySources, HttpService, TokenRequired, is_loopback, read_catalog
from gateway.http.app import http_token
from gateway.moq.server import MoqSessionInfo
from gateway.session import LinkFigures, SessionRecord
from model import BroadcastProducer, Origin, StatsHandle, Usage
from mux.catalog import CATALOG_TRACK, AudioConfig, Catalog, VideoConfig

TOKEN = "s3cret-token-0123456789"


@dataclass(eq=False)
class FakeSrtSession:
    session: str
    role: str
    live_path: str | None
    tier: str = "default"
    peer: tuple[str, int] = ("127.0.0.1", 40000)
    user: str = ""
    started_at: float = 1000.0
    meter: Usage = field(default_factory=Usage)
    link: LinkFigures = field(default_factory=LinkFigures)
    kicked: bool = False
    link_reads: int = 0
    """calls of `link_stats` (libsrt's statistics in the real session: what costs)"""

    def usage(self) -> Usage:
        return self.meter.copy()

    def link_stats(self) -> LinkFigures:
        self.link_reads += 1
        return self.link


@dataclass(eq=False)
class FakeSrtServer:
    live: list[FakeSrtSession] = field(default_factory=list)

    def requests(self) -> Sequence[FakeSrtSession]:
        return list(self.live)

    def kick(self, session: str) -> bool:
        for s in self.live:
            if s.session == session:
                s.kicked = True
                self.live.remove(s)
                return True
        return False


@dataclass(eq=False)
class FakeMoqServer:
    live: list[MoqSessionInfo] = field(default_factory=list)
    kicked: list[str] = field(default_factory=list)
    publishing: dict[str, Usage] = field(default_factory=dict)
    """path -> ingress meter of a broadcast a MoQ peer publishes now"""
    session_reads: int = 0

    def sessions(self) -> list[MoqSessionInfo]:
        self.session_reads += 1
        return list(self.live)

    def ingress_bytes(self) -> dict[str, int]:
        return {path: meter.bytes for path, meter in self.publishing.items()}

    def kick(self, session: str) -> bool:
        if any(s.session == session for s in self.live):
            self.kicked.append(session)
            return True
        return False


def moq_session(session: str, path: str, usage: Usage) -> MoqSessionInfo:
    return MoqSessionInfo(
        session=session,
        peer="127.0.0.1:50000",
        transport="quic",
        path="",
        tier="pro",
        subscriptions=2,
        backlog_bytes=1234,
        peak_backlog_bytes=5000,
        usage=usage,
        broadcasts=(path,),
        started_at=1000.0,
    )


@dataclass(eq=False)
class World:
    origin: Origin
    stats: StatsHandle
    sources: GatewaySources
    srt: FakeSrtServer
    moq: FakeMoqServer
    keep: list[object] = field(default_factory=list)  # producers dropped unfinished would end


def catalog() -> Catalog:
    return Catalog(
        video={"0.avc3": VideoConfig(codec="avc3.64001f", coded_width=320, coded_height=240)},
        audio={"1.mp4a": AudioConfig(codec="mp4a.40.2", sample_rate=48000, channels=2)},
    )


def publish(world: World, path: str, tier: str, frames: int) -> BroadcastProducer:
    """Publish `path` with a catalog and `frames` 1000-byte video frames, metered as ingress."""
    guard = world.stats.broadcast(path, tier).ingress()
    broadcast = BroadcastProducer().with_meter(guard.meter)
    world.origin.publish(path, broadcast)
    cat = broadcast.create_track(CATALOG_TRACK)
    group = cat.append_group()
    group.write_frame(catalog().to_json())
    group.finish()
    video = broadcast.create_track("0.avc3")
    group = video.append_group()
    for _ in range(frames):
        group.write_frame(b"v" * 1000)
    world.srt.live.append(
        FakeSrtSession(
            session=f"pub-{path.replace('/', '-')}",
            role="ingress",
            live_path=path,
            tier=tier,
            meter=guard.meter,
        )
    )
    world.keep += [guard, broadcast, cat, video, group]
    return broadcast


@pytest.fixture
def world() -> World:
    origin, stats = Origin(), StatsHandle("gw-test")
    sources = GatewaySources(origin, stats, recent_max=3)
    srt, moq = FakeSrtServer(), FakeMoqServer()
    sources.add_srt(srt)
    sources.add_moq(moq)
    return World(origin, stats, sources, srt, moq)


@pytest.fixture
async def http(world: World) -> AsyncIterator[HttpService]:
    # No /metrics cache: the tests change counters between scrapes.
    async with await HttpService.bind(
        "127.0.0.1", 0, world.sources, path_labels=True, rate_interval_s=0.05, metrics_cache_s=0
    ) as service:
        yield service


async def get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        asyncio.timeout(5),
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response,
    ):
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def counter(
    metrics: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return metrics[(name, tuple(sorted({"node": "gw-test", **labels}.items())))]


async def test_metrics_counters_equal_the_stats_snapshot_per_path_tier_and_role(
    world: World, http: HttpService
) -> None:
    publish(world, "live/a", "pro", 5)
    publish(world, "live/b", "free", 3)
    viewer = world.origin.get("live/a")
    assert viewer is not None
    with world.stats.broadcast("live/a", "pro").egress("v1") as guard:
        track = viewer.with_meter(guard.meter).subscribe_track("0.avc3")
        group = await track.next_group()
        assert group is not None
        assert len(group.read_ready()) == 5
    status, text = await get(http.port, "/metrics")
    assert status == 200
    metrics = samples(text)
    snapshot = world.stats.snapshot()
    assert len(snapshot) == 3
    for entry in snapshot:
        labels = {"path": entry.path, "tier": entry.tier, "role": entry.role}
        for name in ("groups", "frames", "bytes"):
            assert counter(metrics, f"moqsrt_{name}_total", **labels) == getattr(entry, name)
        assert counter(metrics, "moqsrt_sessions_opened_total", **labels) == entry.sessions
    # What the model moved, counted by hand: catalog frame + 5 video frames in, 5 frames out.
    cat_bytes = len(catalog().to_json())
    a_in = counter(metrics, "moqsrt_bytes_total", path="live/a", tier="pro", role="ingress")
    assert a_in == cat_bytes + 5000
    a_out = counter(metrics, "moqsrt_bytes_total", path="live/a", tier="pro", role="egress")
    assert a_out == 5000
    assert counter(metrics, "moqsrt_viewers_total", path="live/a", tier="pro", role="egress") == 1
    assert counter(metrics, "moqsrt_live_broadcasts") == 2


async def test_without_path_labels_metrics_sum_paths_and_carry_no_path_label(
    world: World,
) -> None:
    publish(world, "live/a", "pro", 5)
    publish(world, "live/b", "pro", 3)
    async with await HttpService.bind("127.0.0.1", 0, world.sources) as service:
        _, text = await get(service.port, "/metrics")
    metrics = samples(text)
    assert all("path" not in dict(labels) for _, labels in metrics)
    total = sum(e.bytes for e in world.stats.snapshot() if e.role == "ingress")
    assert counter(metrics, "moqsrt_bytes_total", tier="pro", role="ingress") == total
    assert counter(metrics, "moqsrt_live_sessions", protocol="srt", role="ingress") == 2
    assert counter(metrics, "moqsrt_live_sessions", protocol="moq", role="egress") == 0


async def test_srt_link_and_moq_gauges_sum_the_live_sessions(
    world: World, http: HttpService
) -> None:
    publish(world, "live/a", "pro", 1)
    world.srt.live[0].link = LinkFigures(rtt_ms=12.0, pkts_recv=700, bytes_recv=900_000)
    world.srt.live.append(
        FakeSrtSession(
            session="v1",
            role="egress",
            live_path="live/a",
            link=LinkFigures(rtt_ms=30.0, pkts_sent=500, pkts_retrans=7),
        )
    )
    world.moq.live.append(moq_session("m1", "live/a", Usage(1, 2, 300)))
    _, text = await get(http.port, "/metrics")
    metrics = samples(text)
    link = "moqsrt_srt_link"
    assert counter(metrics, link, role="ingress", kind="bytes_recv", path="live/a") == 900_000
    assert counter(metrics, link, role="egress", kind="pkts_retrans", path="live/a") == 7
    rtt = "moqsrt_srt_rtt_max_seconds"
    assert counter(metrics, rtt, role="egress", path="live/a") == pytest.approx(0.030)
    assert counter(metrics, "moqsrt_moq_sessions", transport="quic") == 1
    assert counter(metrics, "moqsrt_moq_backlog_bytes") == 1234
    live = "moqsrt_live_sessions"
    assert counter(metrics, live, protocol="moq", role="egress", path="live/a") == 1


async def test_the_ledger_lag_gauge_appears_once_the_ledger_sets_its_hook(
    world: World, http: HttpService
) -> None:
    _, text = await get(http.port, "/metrics")
    assert "moqsrt_ledger_lag_seconds" not in text
    world.sources.ledger_lag_s = lambda: 2.5
    _, text = await get(http.port, "/metrics")
    assert counter(samples(text), "moqsrt_ledger_lag_seconds") == 2.5


async def test_a_metrics_reading_is_served_again_within_the_cache_interval_only(
    world: World,
) -> None:
    publish(world, "live/a", "pro", 1)
    (session,) = world.srt.live
    async with await HttpService.bind(
        "127.0.0.1", 0, world.sources, path_labels=True, metrics_cache_s=0.5
    ) as service:
        first = await asyncio.gather(*(get(service.port, "/metrics") for _ in range(3)))
        assert session.link_reads == 1  # three concurrent scrapes, one reading
        publish(world, "live/b", "pro", 1)
        _, again = await get(service.port, "/metrics")
        assert {text for _, text in first} == {again}  # within 0.5 s: the same exposition
        assert counter(samples(again), "moqsrt_live_broadcasts") == 1
        assert session.link_reads == 1
        await asyncio.sleep(0.55)
        _, fresh = await get(service.port, "/metrics")
    assert counter(samples(fresh), "moqsrt_live_broadcasts") == 2
    assert session.link_reads == 2


async def test_the_broadcasts_routes_read_no_libsrt_statistics_the_sessions_route_does(
    world: World, http: HttpService
) -> None:
    publish(world, "live/a", "pro", 1)
    world.srt.live[0].link = LinkFigures(rtt_ms=12.0)
    world.srt.live.append(FakeSrtSession(session="v1", role="egress", live_path="live/a"))
    for route in ("/api/v1/broadcasts", "/status.json", "/"):
        status, text = await get(http.port, route)
        assert status == 200
        assert "pub-live-a" in text or route != "/api/v1/broadcasts"
    assert [s.link_reads for s in world.srt.live] == [0, 0]
    status, text = await get(http.port, "/api/v1/sessions")
    assert status == 200
    assert [s.link_reads for s in world.srt.live] == [1, 1]
    assert {s["session"]: s["link"]["rtt_ms"] for s in json.loads(text)["live"]} == {
        "pub-live-a": 12.0,
        "v1": 0.0,
    }


async def test_a_broadcast_published_over_moq_gets_a_bit_rate(
    world: World, http: HttpService
) -> None:
    # Published as a MoQ peer's is: an ingress meter the MoQ server reports, no SRT session.
    guard = world.stats.broadcast("live/m", "default").ingress()
    broadcast = BroadcastProducer().with_meter(guard.meter)
    world.origin.publish("live/m", broadcast)
    world.moq.publishing["live/m"] = guard.meter
    group = broadcast.create_track("0.avc3").append_group()
    world.keep += [guard, broadcast, group]
    written = 0
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def write_5_kb_every_10_ms() -> None:
        nonlocal written
        while True:
            group.write_frame(b"x" * 5_000)
            written += 5_000
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(write_5_kb_every_10_ms())
    try:
        await asyncio.sleep(0.4)
        status, text = await get(http.port, "/api/v1/broadcasts")
        elapsed = loop.time() - started
    finally:
        writer.cancel()
    assert status == 200
    (listed,) = json.loads(text)["broadcasts"]
    assert listed["path"] == "live/m"
    # What was written over the time it took, measured here, not by the gateway: the
    # sampler's window is a part of that time, so allow for the writer's jitter.
    assert listed["bitrate_bps"] is not None
    assert 0.3 * 8 * written / elapsed <= listed["bitrate_bps"] <= 4_000_000 * 1.3
    # The sampler reads the MoQ server's publishes, never its whole session list.
    assert world.moq.session_reads <= 1  # the /api/v1/broadcasts answer's own reading


async def test_broadcasts_list_catalog_tracks_publisher_viewers_and_bitrate(
    world: World, http: HttpService
) -> None:
    broadcast = publish(world, "live/a", "pro", 5)
    world.srt.live.append(FakeSrtSession(session="v1", role="egress", live_path="live/a"))
    world.srt.live.append(FakeSrtSession(session="w", role="egress", live_path=None))
    world.moq.live.append(moq_session("m1", "live/a", Usage()))
    video = broadcast.create_track("extra")
    group = video.append_group()
    world.keep += [video, group]

    async def write_10_kb_every_10_ms() -> None:  # so that the sampler measures a rate
        while True:
            group.write_frame(b"x" * 10_000)
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(write_10_kb_every_10_ms())
    try:
        await asyncio.sleep(0.3)
        status, text = await get(http.port, "/api/v1/broadcasts")
    finally:
        writer.cancel()
    assert status == 200
    (listed,) = json.loads(text)["broadcasts"]
    assert listed["path"] == "live/a"
    assert listed["tracks"] == ["0.avc3", "1.mp4a"]
    assert listed["catalog"]["video"]["renditions"]["0.avc3"]["codec"] == "avc3.64001f"
    assert listed["publisher"]["session"] == "pub-live-a"
    assert listed["publisher"]["protocol"] == "srt"
    assert listed["viewers"] == {"srt": 1, "moq": 1}
    # At most 10 kB per 10 ms were written: 8 Mbit/s (slower under load, never faster).
    assert 0 < listed["bitrate_bps"] <= 8_000_000 * 1.2
    # With the writer stopped, the listed ingress is the stats entry's.
    await asyncio.gather(writer, return_exceptions=True)
    _, text = await get(http.port, "/api/v1/broadcasts")
    (listed,) = json.loads(text)["broadcasts"]
    (entry,) = [e for e in world.stats.snapshot() if e.role == "ingress"]
    assert listed["ingress"] == {
        "groups": entry.groups,
        "frames": entry.frames,
        "bytes": entry.bytes,
    }


async def test_reading_the_catalog_for_the_api_bills_nobody(
    world: World, http: HttpService
) -> None:
    publish(world, "live/a", "pro", 1)
    before = world.stats.snapshot()
    await get(http.port, "/api/v1/broadcasts")
    assert world.stats.snapshot() == before


async def test_sessions_lists_live_ones_and_recent_records_without_stream_ids(
    world: World, http: HttpService
) -> None:
    publish(world, "live/a", "pro", 2)
    world.moq.live.append(moq_session("m1", "live/a", Usage(1, 2, 300)))
    for i in range(5):
        world.sources.record_session(
            SessionRecord(
                session=f"old{i}",
                node="gw-test",
                role="egress",
                path="live/a",
                tier="pro",
                peer="127.0.0.1:1",
                stream_id="publish:live/a:alice:hunter2hunter2",
                user="alice",
                started_at=1.0,
                ended_at=2.0,
                duration_s=1.0,
                groups=1,
                frames=2,
                bytes=3,
                ts_bytes=4,
            )
        )
    status, text = await get(http.port, "/api/v1/sessions")
    assert status == 200
    assert "hunter2" not in text
    body = json.loads(text)
    live = {s["session"]: s for s in body["live"]}
    assert live["pub-live-a"]["protocol"] == "srt"
    assert live["pub-live-a"]["frames"] == 3  # catalog + 2 video frames
    assert live["m1"]["protocol"] == "moq"
    assert live["m1"]["bytes"] == 300
    assert [r["session"] for r in body["recent"]] == [
        "old4",
        "old3",
        "old2",
    ]  # bounded, newest first
    assert body["recent"][0]["protocol"] == "srt"


async def test_delete_kicks_an_srt_or_moq_session_and_404s_an_unknown_one(
    world: World, http: HttpService
) -> None:
    publish(world, "live/a", "pro", 1)
    world.moq.live.append(moq_session("m1", "live/a", Usage()))
    publisher = world.srt.live[0]
    async with asyncio.timeout(5), aiohttp.ClientSession() as client:
        base = f"http://127.0.0.1:{http.port}/api/v1/sessions/"
        async with client.delete(base + publisher.session) as response:
            assert response.status == 204
        async with client.delete(base + "m1") as response:
            assert response.status == 204
        async with client.delete(base + "nobody") as response:
            assert response.status == 404
    assert publisher.kicked
    assert world.moq.kicked == ["m1"]


@dataclass
class FakeRecord:
    data: dict[str, Any]

    def as_dict(self) -> Mapping[str, Any]:
        return self.data


class FakeLedger:
    def __init__(self) -> None:
        self.records = [
            FakeRecord({"seq": i, "kind": "session", "bytes": i * 10}) for i in (1, 2, 3)
        ]

    async def read_since(self, since: int, *, limit: int = 1000) -> Sequence[FakeRecord]:
        return [r for r in self.records if r.data["seq"] > since][:limit]


async def test_usage_reads_the_ledger_after_a_cursor_and_says_503_without_one(
    world: World, http: HttpService
) -> None:
    status, text = await get(http.port, "/api/v1/usage?since=0")
    assert status == 503
    assert "ledger" in json.loads(text)["error"]
    world.sources.usage = FakeLedger()
    status, text = await get(http.port, "/api/v1/usage?since=1&limit=1")
    assert status == 200
    body = json.loads(text)
    assert [r["seq"] for r in body["records"]] == [2]
    assert body["cursor"] == 2
    status, text = await get(http.port, f"/api/v1/usage?since={body['cursor']}")
    assert [r["seq"] for r in json.loads(text)["records"]] == [3]
    status, _ = await get(http.port, "/api/v1/usage?since=soon")
    assert status == 400
    status, _ = await get(http.port, "/api/v1/usage?limit=0")
    assert status == 400


async def test_a_token_guards_every_route_when_configured(world: World) -> None:
    async with await HttpService.bind("127.0.0.1", 0, world.sources, token=TOKEN) as service:
        for path in ("/metrics", "/api/v1/broadcasts", "/api/v1/sessions", "/api/v1/usage"):
            status, _ = await get(service.port, path)
            assert status == 401, path
            status, _ = await get(service.port, path, token="wrong-token-0123456789")
            assert status == 401, path
        assert (await get(service.port, "/metrics", token=TOKEN))[0] == 200
        assert (await get(service.port, "/api/v1/sessions", token=TOKEN))[0] == 200


async def test_a_non_loopback_listener_without_a_token_refuses_to_start(world: World) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1", "gateway.example"):
        with pytest.raises(TokenRequired, match="http_token"):
            await HttpService.bind(host, 0, world.sources)


def test_loopback_addresses_are_recognised() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.8.0.1")
    assert is_loopback("::1")
    assert is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("::")
    assert not is_loopback("10.0.0.1")


def test_http_defaults_to_loopback_8080_and_keeps_the_token_out_of_the_repr(
    tmp_path: Any,
) -> None:
    assert load_config().http == ("127.0.0.1", 8080)
    assert load_config(None, {"http": "off"}).http is None
    file = tmp_path / "moqsrt.toml"
    file.write_text(f'http = "0.0.0.0:8081"\nhttp_token = "{TOKEN}"\nmetrics_path_labels = true\n')
    config = load_config(file)
    assert config.http == ("0.0.0.0", 8081)
    assert config.http_token == TOKEN
    assert config.metrics_path_labels is True
    assert TOKEN not in repr(config)
    with pytest.raises(ConfigError, match="http_token") as info:
        load_config(None, {"http_token": "short"})
    assert "short" not in str(info.value)
    with pytest.raises(ConfigError, match="metrics_path_labels"):
        load_config(None, {"metrics_path_labels": "maybe"})


def test_the_token_comes_from_the_setting_else_the_environment() -> None:
    assert http_token(TOKEN, {}) == TOKEN
    assert http_token(None, {"MOQSRT_HTTP_TOKEN": "from-env-0123456789"}) == "from-env-0123456789"
    assert http_token(None, {}) is None


def test_serve_refuses_a_public_http_address_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import structlog

    from gateway.cli import main

    monkeypatch.delenv("MOQSRT_HTTP_TOKEN", raising=False)
    root = logging.getLogger()
    handlers, level, saved = list(root.handlers), root.level, structlog.get_config()
    try:  # serve sets up logging before it finds the missing token: undo that afterwards
        status = main(["serve", "--srt", "127.0.0.1:0", "--moq", "off", "--http", "0.0.0.0:0"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**saved)
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("moqsrt serve: http_token: ")
    assert len(err.splitlines()) == 1


def test_read_catalog_parses_each_catalog_once_and_follows_a_new_one(world: World) -> None:
    publish(world, "live/a", "pro", 1)
    first = read_catalog(world.origin, "live/a")
    assert first is not None
    assert first.track_names() == catalog().track_names()
    assert read_catalog(world.origin, "live/a") is first  # the same bytes: parsed once
    # A new catalog group (the audio track gone) is read, parsed, and replaces the old answer.
    changed = Catalog(video=dict(catalog().video), audio={})
    cat = next(t for t in world.keep if getattr(t, "name", None) == CATALOG_TRACK)
    group = cat.append_group()  # type: ignore[attr-defined]
    group.write_frame(changed.to_json())
    group.finish()
    second = read_catalog(world.origin, "live/a")
    assert second is not None
    assert second is not first
    assert second.track_names() == changed.track_names() != first.track_names()
    # A catalog that does not parse reads as None, also when asked again.
    group = cat.append_group()  # type: ignore[attr-defined]
    group.write_frame(b"{not json")
    group.finish()
    assert read_catalog(world.origin, "live/a") is None
    assert read_catalog(world.origin, "live/a") is None
