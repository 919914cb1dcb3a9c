"""The MoQ listener with moq-rs (and a raw aioquic peer) on 127.0.0.1: the authorization hook
(refusals, tiers, path scope), error codes moq-rs understands, and a malformed peer."""

from __future__ import annotations

import asyncio
import ssl

import moq
import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent

from gateway.moq.server import MoqAuthDecision
from gateway.moq.session import MoqEvent
from gateway.moq.webtransport import ConnectRequest
from gateway.moq.wire import (
    Announce,
    AnnounceRequest,
    BidiStreamType,
    Version,
    encode_varint,
    take_message,
)
from model import BroadcastProducer, Origin, StatsHandle, TrackProducer
from tests.integration.moq_helpers import HOST, run_moq


def live(origin: Origin, path: str) -> tuple[BroadcastProducer, TrackProducer]:
    broadcast = BroadcastProducer()
    origin.publish(path, broadcast)
    track = broadcast.create_track("data")
    return broadcast, track


async def announced_paths(client: moq.Client, count: int) -> list[str]:
    paths: list[str] = []
    announced = client.announced()
    async for update in announced:
        if update.active:
            paths.append(update.prefix)
        if len(paths) == count:
            break
    announced.cancel()
    return paths


async def test_the_hook_picks_the_tier_from_the_token_and_scopes_the_paths() -> None:
    origin, stats = Origin(), StatsHandle("n")
    seen: list[ConnectRequest] = []

    async def auth(request: ConnectRequest) -> MoqAuthDecision:
        seen.append(request)
        if request.token != "alice-token":
            return MoqAuthDecision(accept=False, status=403)
        return MoqAuthDecision(tier="pro", root="live")

    hidden, hidden_track = live(origin, "other/b")
    shown, track = live(origin, "live/a")
    async with run_moq(origin, stats, auth=auth) as mq:
        async with asyncio.timeout(20), mq.client("webtransport", "x?jwt=alice-token") as client:
            assert await announced_paths(client, 1) == ["live/a"]
            broadcast = await client.request_broadcast("live/a")
            consumer = await broadcast.subscribe_track("data")
            group = track.append_group()
            group.write_frame(b"hello")
            group.finish()
            received = await consumer.recv_group()
            assert received is not None
            assert [f.payload async for f in received] == [b"hello"]
        async with asyncio.timeout(10):
            while not mq.records:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        with pytest.raises(Exception) as refused:  # noqa: PT011  (moq-rs' error class)
            async with asyncio.timeout(20), mq.client("webtransport", "x?jwt=mallory"):
                pass
        assert moq.is_auth(refused.value)
    (record,) = mq.records
    assert record.tier == "pro"
    assert record.path == "x"
    assert (record.groups, record.frames, record.bytes) == (1, 1, 5)
    entries = {(e.path, e.tier, e.role): e for e in stats.snapshot()}
    assert entries["live/a", "pro", "egress"].bytes == 5
    assert ("other/b", "pro", "egress") not in entries
    assert [r.token for r in seen] == ["alice-token", "mallory"]
    for producer in (track, hidden_track):
        producer.finish()
    for broadcast_producer in (shown, hidden):
        broadcast_producer.finish()


@pytest.mark.parametrize(
    ("transport", "versions", "spoken"),
    [
        ("quic", (Version.LITE_04, Version.LITE_03), "moq-lite-04"),
        ("quic", (Version.LITE_03,), "moq-lite-03"),
        ("webtransport", (Version.LITE_03,), "moq-lite-03"),
    ],
)
async def test_each_offered_version_serves_moq_rs(
    transport: str, versions: tuple[Version, ...], spoken: str
) -> None:
    origin = Origin()
    shown, track = live(origin, "live/v")
    async with run_moq(origin, versions=versions) as mq:
        async with asyncio.timeout(20), mq.client(transport) as client:
            assert await announced_paths(client, 1) == ["live/v"]
            consumer = await (await client.request_broadcast("live/v")).subscribe_track("data")
            group = track.append_group()
            group.write_frame(b"v")
            group.finish()
            received = await consumer.recv_group()
            assert received is not None
            assert [f.payload async for f in received] == [b"v"]
        async with asyncio.timeout(10):
            while not mq.records:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert mq.records[0].version == spoken
    track.finish()
    shown.finish()


async def test_a_refused_raw_quic_client_is_closed_as_unauthorized() -> None:
    origin = Origin()

    def auth(request: ConnectRequest) -> MoqAuthDecision:
        return MoqAuthDecision(accept=request.transport == "webtransport")

    async with run_moq(origin, auth=auth) as mq:

        async def connect_until_closed() -> None:
            async with asyncio.timeout(20), mq.client("quic") as client:
                assert client.session is not None
                await client.session.closed()  # raises the close reason

        with pytest.raises(Exception) as refused:  # noqa: PT011  (moq-rs' error class)
            await connect_until_closed()
        assert moq.is_auth(refused.value)
    assert mq.records == []


async def test_unknown_tracks_and_broadcasts_fail_fast_in_moq_rs() -> None:
    origin = Origin()
    broadcast_producer, track = live(origin, "live/a")
    async with run_moq(origin) as mq:
        mq.server._track_wait_s = 0.2
        async with asyncio.timeout(20), mq.client("quic") as client:
            await announced_paths(client, 1)
            broadcast = await client.request_broadcast("live/a")
            consumer = await broadcast.subscribe_track("missing")
            with pytest.raises(Exception) as missing:  # noqa: PT011  (moq-rs' error class)
                await consumer.recv_group()
            error = moq.protocol_error(missing.value)
            assert error is not None
            assert "not found" in str(error).lower() or "notfound" in str(error).lower()
    track.finish()
    broadcast_producer.finish()


class _Watcher(QuicConnectionProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.terminated: asyncio.Future[ConnectionTerminated] = (
            asyncio.get_running_loop().create_future()
        )

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x02" + encode_varint(1 << 20),  # an oversized SUBSCRIBE length
        b"\x02\x05\x00\x09abc",  # a string running past its message
        b"\x01\x02\x00\x00",  # trailing bytes in ANNOUNCE_REQUEST
    ],
)
async def test_a_malformed_peer_is_closed_with_a_protocol_violation(garbage: bytes) -> None:
    origin = Origin()
    async with run_moq(origin) as mq:
        config = QuicConfiguration(
            is_client=True, alpn_protocols=["moq-lite-03"], verify_mode=ssl.CERT_NONE
        )
        async with asyncio.timeout(10):
            async with connect(
                HOST, mq.port, configuration=config, create_protocol=_Watcher
            ) as peer:
                assert isinstance(peer, _Watcher)
                stream_id = peer._quic.get_next_available_stream_id()
                peer._quic.send_stream_data(stream_id, garbage, end_stream=False)
                peer.transmit()
                event = await peer.terminated
        assert event.error_code == 3
        async with asyncio.timeout(10):
            while not mq.records:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    (record,) = mq.records
    assert record.outcome == "error"
    assert record.error.startswith("code 3")


class _Recorder:
    """A StreamHandler that keeps what the peer answers on a stream we opened."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.arrived = asyncio.Event()

    def on_data(self, stream_id: int, data: bytes, fin: bool, now: float) -> list[MoqEvent]:
        self.data += data
        self.arrived.set()
        return []

    def on_reset(self, stream_id: int, code: int, now: float) -> list[MoqEvent]:
        return []


@pytest.mark.parametrize("transport", ["quic", "webtransport"])
async def test_the_server_can_open_control_streams_to_a_moq_rs_client(transport: str) -> None:
    """The seam the subscriber half uses: an ANNOUNCE_REQUEST on a bidi stream the server
    opens is answered by moq-rs, and on WebTransport the answer reaches the session instead
    of killing the connection in aioquic's H3 layer (the wire reference's pitfall)."""
    async with run_moq(Origin()) as mq, asyncio.timeout(20), mq.client(transport) as client:
        broadcast = client.create_broadcast("cam/9")
        track = broadcast.publish_track("t")
        broadcast.announce()
        while not mq.server._viewers or next(iter(mq.server._viewers)).session is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        conn = next(iter(mq.server._viewers))
        session = conn.session
        assert session is not None
        recorder = _Recorder()
        request = AnnounceRequest(prefix="").encode(session.version)
        session.open_bidi(BidiStreamType.ANNOUNCE, request, recorder)
        conn.flush()
        await recorder.arrived.wait()
        got = take_message(bytes(recorder.data))
        assert got is not None
        announce = Announce.decode(got[0], session.version)
        assert announce.active
        assert announce.suffix == "cam/9"
        assert conn.close_code is None  # the connection survived the answer
        track.finish()
        broadcast.close()
