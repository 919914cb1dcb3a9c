"""Helpers of the MoQ end-to-end tests: a MoqServer beside the SRT gateway, moq-rs clients,
what a client received, and the fixture's own view of the same media (PyAV).

Counts the tests compare come from the moq-rs client (what it received) and from PyAV (the
fixture), never from the gateway's own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import moq

from gateway.moq.cert import Certificate, generate_certificate
from gateway.moq.publisher import DEFAULT_BACKLOG_BYTES
from gateway.moq.record import MoqSessionRecord
from gateway.moq.server import MoqAuthHook, MoqServer
from gateway.moq.wire import Version
from model import Origin, StatsHandle
from tests.media import EsPacket, es_packets

HOST = "127.0.0.1"


def varint_size(value: int) -> int:
    """Bytes of the QUIC varint of `value` (RFC 9000 section 16), for the legacy container's
    timestamp prefix (computed here, not by the gateway's codec)."""
    for size, limit in ((1, 1 << 6), (2, 1 << 14), (4, 1 << 30)):
        if value < limit:
            return size
    return 8


@dataclass(eq=False)
class MoqGateway:
    """A `MoqServer` on 127.0.0.1 serving `origin`, with its certificate and records."""

    server: MoqServer
    certificate: Certificate
    records: list[MoqSessionRecord] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, transport: str, path: str = "") -> str:
        if transport == "quic":
            return f"moqt://{HOST}:{self.port}"
        return f"https://localhost:{self.port}/{path}"

    def client(self, transport: str, path: str = "") -> moq.Client:
        """A one-shot moq-rs client pinned to this server's certificate."""
        return moq.Client(
            self.url(transport, path),
            tls_fingerprints=[self.certificate.fingerprint],
            reconnect=False,
            websocket_enabled=False,
        )


@contextlib.asynccontextmanager
async def run_moq(
    origin: Origin,
    stats: StatsHandle | None = None,
    *,
    auth: MoqAuthHook | None = None,
    backlog_cap_bytes: int | None = None,
    versions: tuple[Version, ...] = (Version.LITE_03, Version.LITE_04),
) -> AsyncIterator[MoqGateway]:
    """Serve MoQ on a free 127.0.0.1 UDP port until the block ends."""
    cert = generate_certificate()
    records: list[MoqSessionRecord] = []
    server = await MoqServer.bind(
        (HOST, 0),
        certificate=cert,
        origin=origin,
        auth=auth,
        node="test-node",
        sinks=(records.append,),
        backlog_cap_bytes=backlog_cap_bytes or DEFAULT_BACKLOG_BYTES,
        versions=versions,
    )
    if stats is not None:
        server.with_stats(stats)
    try:
        yield MoqGateway(server=server, certificate=cert, records=records)
    finally:
        async with asyncio.timeout(15):
            await server.aclose()


@dataclass
class Received:
    """What a moq-rs media subscription delivered, frame by frame."""

    timestamps_us: list[int] = field(default_factory=list)
    keyframes: list[bool] = field(default_factory=list)
    payload_bytes: int = 0
    legacy_bytes: int = 0  # payload + the varint timestamp prefix: the model frame's size

    def add(self, frame: moq.MediaFrame) -> None:
        self.timestamps_us.append(frame.timestamp_us)
        self.keyframes.append(frame.keyframe)
        self.payload_bytes += len(frame.payload)
        self.legacy_bytes += len(frame.payload) + varint_size(frame.timestamp_us)

    @property
    def frames(self) -> int:
        return len(self.timestamps_us)


async def collect_media(
    broadcast: moq.BroadcastConsumer, name: str, rendition: moq.Video | moq.Audio
) -> Received:
    """Read every frame of a media track until it ends (a bounded wait is the caller's)."""
    received = Received()
    subscription = moq.Subscription(max_age_us=60_000_000)  # never skip: count everything
    consumer = await broadcast.subscribe_media(name, rendition, subscription)
    async for frame in consumer:
        received.add(frame)
    return received


def gops(packets: list[EsPacket]) -> list[list[EsPacket]]:
    """Split video access units (decode order) into GOPs, from the first keyframe on."""
    out: list[list[EsPacket]] = []
    for packet in packets:
        if packet.keyframe:
            out.append([packet])
        elif out:
            out[-1].append(packet)
    return out


def fixture_packets(path: Path, pid: int) -> list[EsPacket]:
    """PyAV's access units of one PID of the fixture."""
    return es_packets(path, pid)


def relative_us(pts_90k: list[int]) -> list[int]:
    """PTS (90 kHz) as microseconds relative to the first one."""
    base = pts_90k[0]
    return [(p - base) * 100 // 9 for p in pts_90k]


class _RelaySide(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)


class ThrottledRelay:
    """A UDP relay in front of a server: a client talks to `port`; what the server sends back
    passes at most `rate_bytes_s` (token bucket, `burst_bytes` deep), the rest is dropped, as
    on a congested last mile. `delivered_bytes` counts what reached the client."""

    def __init__(self, server_port: int, rate_bytes_s: float, burst_bytes: int = 16_000) -> None:
        self._server = (HOST, server_port)
        self._rate = rate_bytes_s
        self._burst = burst_bytes
        self._tokens = float(burst_bytes)
        self._stamp = 0.0
        self._client: tuple[str, int] | None = None
        self._front: _RelaySide | None = None
        self._back: _RelaySide | None = None
        self.delivered_bytes = 0
        self.dropped_bytes = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._stamp = loop.time()
        _, self._front = await loop.create_datagram_endpoint(
            lambda: _RelaySide(self._from_client), local_addr=(HOST, 0)
        )
        _, self._back = await loop.create_datagram_endpoint(
            lambda: _RelaySide(self._from_server), remote_addr=self._server
        )
        assert self._front.transport is not None
        return int(self._front.transport.get_extra_info("sockname")[1])

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        self._client = addr
        if self._back is not None and self._back.transport is not None:
            self._back.transport.sendto(data)

    def _from_server(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < len(data) or self._client is None or self._front is None:
            self.dropped_bytes += len(data)
            return
        self._tokens -= len(data)
        self.delivered_bytes += len(data)
        assert self._front.transport is not None
        self._front.transport.sendto(data, self._client)

    @property
    def server_side_port(self) -> int:
        """The port the server sees this relay's client come from."""
        assert self._back is not None
        assert self._back.transport is not None
        return int(self._back.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()
