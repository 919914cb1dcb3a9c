"""The MoQ listener's embedding API: `MoqServer` serves an `Origin` to moq-lite clients over raw
QUIC (ALPN `moq-lite-03` / `moq-lite-04`) and WebTransport (HTTP/3, same UDP port).

```python
cert = generate_certificate()                     # pin cert.fingerprint in clients
async with await MoqServer.bind("0.0.0.0:4443", certificate=cert, origin=origin, auth=auth) as s:
    s.with_stats(stats)                           # egress per (path, tier), like SRT viewers
    await s.wait_closed()
```

Each connection asks the authorization hook (path, token from the URL query) whether to serve
it and in which tier; an accepted session's reads are metered through one egress `StatsGuard`
per broadcast path (opened on its first subscription there, closed when the session ends), and
the session ends with one `MoqSessionRecord` (`session.closed`), followed by one ingress
record per broadcast it published, if any (`MoqSessionRecord.ingress_records`). `aclose()`
closes every connection and drains their tasks.

With a self-signed certificate (by default; `fingerprint_http` decides), the listener also
answers `GET /certificate.sha256` over plain HTTP on TCP at the same port number
(`gateway.moq.fingerprint`), so browsers (`@moq/watch` given `http://host:port/`) and moq-rs
clients can pin the certificate without being told its hash.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Self

import structlog
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from gateway.moq.cert import Certificate
from gateway.moq.fingerprint import FingerprintEndpoint
from gateway.moq.ingest import ingest_into
from gateway.moq.publisher import DEFAULT_BACKLOG_BYTES, TRACK_WAIT_S
from gateway.moq.record import (
    BroadcastUsage,
    MoqSessionRecord,
    MoqSessionSink,
    PublishUsage,
    emit_moq_session,
)
from gateway.moq.subscriber import Ingest, OpenBroadcast
from gateway.moq.transport import Admission, MoqConnection
from gateway.moq.webtransport import ConnectRequest
from gateway.moq.wire import SessionCode, Version
from model import Origin, StatsGuard, StatsHandle, Usage, normalize_path

__all__ = ["MoqAuthDecision", "MoqAuthHook", "MoqServer", "MoqSessionInfo", "is_self_signed"]

AUTH_TIMEOUT_S: Final = 1.5
"""How long the hook may think before the client is refused (503)."""

_log = structlog.get_logger("moqsrt.moq")


@dataclass(frozen=True, slots=True, kw_only=True)
class MoqAuthDecision:
    """The authorization hook's answer for one MoQ connection.

    `accept=False` refuses it: WebTransport clients get HTTP `status` (401/403/404 ...), raw
    QUIC clients a CONNECTION_CLOSE with session code 2 (unauthorized). Accepted, `tier` labels
    its usage and `root` limits what it sees to broadcasts under that path (`""`: all).
    `publish`: whether the gateway ingests what the client announces (at paths under
    `publish_root`, metered as ingress for (path, `publish_tier` or else `tier`)). `read=False`
    shows the client nothing (a publish-only connection).
    """

    accept: bool = True
    status: int = 403
    tier: str = "default"
    root: str = ""
    publish: bool = True
    publish_root: str = ""
    publish_tier: str | None = None
    read: bool = True


MoqAuthHook = Callable[[ConnectRequest], Awaitable[MoqAuthDecision] | MoqAuthDecision]
"""Decides a connection from its `ConnectRequest` (path, query token, peer). Sync or async;
bounded by `AUTH_TIMEOUT_S`; raising refuses with 500."""


@dataclass(eq=False)
class _Viewer:
    session: str
    conn: MoqConnection
    tier: str = "default"
    started_wall: float = 0.0
    started_mono: float = 0.0
    meters: dict[str, Usage] | None = None
    guards: dict[str, StatsGuard] | None = None
    publishes: list[PublishUsage] = field(default_factory=list)
    refused: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MoqSessionInfo:
    """A live session as `MoqServer.sessions()` reports it (a point-in-time reading)."""

    session: str
    peer: str
    transport: str
    path: str
    tier: str
    subscriptions: int
    backlog_bytes: int
    peak_backlog_bytes: int
    usage: Usage
    broadcasts: tuple[str, ...] = ()
    """The broadcast paths it has read from (metered), sorted."""
    started_at: float = 0.0
    """Unix epoch seconds."""


class MoqServer:
    """A MoQ listener serving `origin`; made by `bind`. Close it with `aclose()` (or `async
    with`). Records go to `sinks` and the `session.closed` log."""

    def __init__(
        self,
        quic_server: QuicServer,
        *,
        origin: Origin,
        auth: MoqAuthHook | None,
        node: str,
        sinks: Sequence[MoqSessionSink],
        backlog_cap_bytes: int,
        track_wait_s: float,
    ) -> None:
        self._track_wait_s = track_wait_s
        self._quic_server = quic_server
        self.origin = origin
        """The origin served."""
        self._auth = auth
        self.node = node
        """Node id put in every record."""
        self._sinks = tuple(sinks)
        self._backlog_cap = backlog_cap_bytes
        self._stats: StatsHandle | None = None
        self._viewers: dict[MoqConnection, _Viewer] = {}
        # The broadcasts peers publish now: (path, ingress meter), each until it ends.
        self._ingests: dict[object, tuple[str, Usage]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._certificate: Certificate | None = None
        self._fingerprint_endpoint: FingerprintEndpoint | None = None

    @classmethod
    async def bind(
        cls,
        addr: str | tuple[str, int],
        *,
        certificate: Certificate,
        origin: Origin,
        auth: MoqAuthHook | None = None,
        versions: Sequence[Version] = (Version.LITE_03, Version.LITE_04),
        node: str = "moqsrt",
        sinks: Sequence[MoqSessionSink] = (),
        backlog_cap_bytes: int = DEFAULT_BACKLOG_BYTES,
        idle_timeout_s: float = 30.0,
        track_wait_s: float = TRACK_WAIT_S,
        fingerprint_http: bool | None = None,
    ) -> MoqServer:
        """Listen on UDP `addr` (`"host:port"` or a tuple; port 0 picks one: `port`).

        `versions`: the moq-lite versions offered, in preference order for raw QUIC (on
        WebTransport the client's order wins, as moq-rs servers do). `backlog_cap_bytes`: what
        one connection may hold unacknowledged before its subscriptions skip ahead.
        `idle_timeout_s`: a silent client is dropped after this long. `track_wait_s`: how long
        a SUBSCRIBE for a track a live broadcast does not have yet waits (then NOT_FOUND).
        `fingerprint_http`: whether to answer `GET /certificate.sha256` on TCP at the bound
        port (`None`: when `certificate` is self-signed); a TCP port already taken is logged
        (`moq.fingerprint_unavailable`) and MoQ is served anyway. Raises `OSError` when the
        address cannot be bound, `ValueError` for a bad address or no version.
        """
        if not versions:
            raise ValueError("offer at least one moq-lite version")
        host, port = _split_addr(addr)
        config = QuicConfiguration(
            is_client=False,
            alpn_protocols=[v.alpn for v in versions] + ["h3"],
            max_datagram_frame_size=65536,
            idle_timeout=idle_timeout_s,
        )
        config.certificate = certificate.certificate
        config.certificate_chain = list(certificate.chain)
        config.private_key = certificate.private_key
        holder: list[MoqServer] = []
        offered = tuple(versions)

        def create_protocol(quic: QuicConnection, **kwargs: object) -> MoqConnection:
            return MoqConnection(quic, host=holder[0], offered=offered)

        quic_server = await serve(host, port, configuration=config, create_protocol=create_protocol)
        server = cls(
            quic_server,
            origin=origin,
            auth=auth,
            node=node,
            sinks=sinks,
            backlog_cap_bytes=backlog_cap_bytes,
            track_wait_s=track_wait_s,
        )
        holder.append(server)
        server._certificate = certificate
        if fingerprint_http if fingerprint_http is not None else is_self_signed(certificate):
            await server._start_fingerprint(host)
        return server

    async def _start_fingerprint(self, host: str) -> None:
        try:
            self._fingerprint_endpoint = await FingerprintEndpoint.start(
                host, self.port, lambda: self.fingerprint
            )
        except OSError as exc:
            _log.warning("moq.fingerprint_unavailable", host=host, port=self.port, error=str(exc))

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the certificate new connections get (what clients pin)."""
        assert self._certificate is not None
        return self._certificate.fingerprint

    @property
    def fingerprint_port(self) -> int | None:
        """The TCP port answering `GET /certificate.sha256` (the MoQ port), or None when off."""
        endpoint = self._fingerprint_endpoint
        return endpoint.port if endpoint is not None else None

    def with_stats(self, stats: StatsHandle) -> Self:
        """Meter sessions admitted from now on into `stats` (egress per path and tier).
        Returns `self`."""
        self._stats = stats
        return self

    def set_certificate(self, certificate: Certificate) -> None:
        """Serve new connections with `certificate` (a renewal); live ones keep theirs."""
        config = self._quic_server._configuration
        config.certificate = certificate.certificate
        config.certificate_chain = list(certificate.chain)
        config.private_key = certificate.private_key
        self._certificate = certificate

    @property
    def port(self) -> int:
        """The bound UDP port."""
        transport = self._quic_server._transport
        assert transport is not None
        return int(transport.get_extra_info("sockname")[1])

    def ingress_bytes(self) -> dict[str, int]:
        """Payload bytes each broadcast peers publish now counted so far, per path (what the
        status page's bit-rate sampler reads every second). O(live publishes)."""
        out: dict[str, int] = {}
        for path, meter in self._ingests.values():
            out[path] = out.get(path, 0) + meter.bytes
        return out

    def _tracked(self, open_broadcast: OpenBroadcast) -> OpenBroadcast:
        """`open_broadcast` whose broadcasts count in `ingress_bytes` until released."""

        def opened(path: str) -> Ingest | None:
            ingest = open_broadcast(path)
            meter = ingest.broadcast.meter if ingest is not None else None
            if ingest is None or meter is None:
                return ingest
            key = object()
            self._ingests[key] = (path, meter)
            release = ingest.release

            def released() -> None:
                self._ingests.pop(key, None)
                release()

            return Ingest(broadcast=ingest.broadcast, release=released)

        return opened

    def sessions(self) -> list[MoqSessionInfo]:
        """The admitted live sessions, now."""
        out = []
        for viewer in self._viewers.values():
            conn, request = viewer.conn, viewer.conn.request
            if viewer.meters is None or request is None:
                continue
            usage = Usage()
            for meter in viewer.meters.values():
                usage.add(meter)
            out.append(
                MoqSessionInfo(
                    session=viewer.session,
                    peer=request.peer,
                    transport=request.transport,
                    path=request.path,
                    tier=viewer.tier,
                    subscriptions=conn.publisher.subscriptions if conn.publisher else 0,
                    backlog_bytes=conn.backlog(),
                    peak_backlog_bytes=conn.budget.peak_bytes if conn.budget else 0,
                    usage=usage,
                    broadcasts=tuple(sorted(viewer.meters)),
                    started_at=viewer.started_wall,
                )
            )
        return out

    def kick(self, session: str) -> bool:
        """End the admitted live session `session` (session code 0, reason "closed by
        operator"); its record follows as for any close. False when no such session is live."""
        for conn, viewer in self._viewers.items():
            if viewer.session == session and viewer.meters is not None:
                conn.close_session(SessionCode.NO_ERROR, "closed by operator")
                return True
        return False

    # -- ConnectionHost --

    async def admit(self, conn: MoqConnection, request: ConnectRequest) -> Admission | int:
        """:meta private: ask the hook, open the session's metering."""
        viewer = _Viewer(
            session=uuid.uuid4().hex,
            conn=conn,
            started_wall=time.time(),
            started_mono=time.monotonic(),
        )
        self._viewers[conn] = viewer
        decision = await self._decide(request)
        if not decision.accept:
            viewer.refused = True
            _log.info("moq.refused", peer=request.peer, path=request.path, status=decision.status)
            return decision.status
        viewer.tier = decision.tier
        viewer.meters = {}
        viewer.guards = {}
        _log.info(
            "moq.session_opened",
            session=viewer.session,
            peer=request.peer,
            transport=request.transport,
            version=request.version.alpn,
            path=request.path,
            tier=decision.tier,
        )

        def meter_for(path: str) -> Usage:
            meters, guards = viewer.meters, viewer.guards
            assert meters is not None
            assert guards is not None
            meter = meters.get(path)
            if meter is None:
                if self._stats is not None:
                    guard = self._stats.broadcast(path, viewer.tier).egress(viewer.session)
                    guards[path] = guard
                    meter = guard.meter
                else:
                    meter = Usage()
                meters[path] = meter
            return meter

        return Admission(
            origin=self.origin if decision.read else Origin(),
            root=normalize_path(decision.root),
            meter_for=meter_for,
            backlog_cap_bytes=self._backlog_cap,
            track_wait_s=self._track_wait_s,
            ingest=(
                self._tracked(
                    ingest_into(
                        self.origin,
                        self._stats,
                        tier=decision.publish_tier or decision.tier,
                        root=normalize_path(decision.publish_root),
                        session=viewer.session,
                        on_ended=viewer.publishes.append,
                    )
                )
                if decision.publish
                else None
            ),
        )

    async def _decide(self, request: ConnectRequest) -> MoqAuthDecision:
        if self._auth is None:
            return MoqAuthDecision()
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                answer = self._auth(request)
                if inspect.isawaitable(answer):
                    answer = await answer
        except TimeoutError:
            return MoqAuthDecision(accept=False, status=503)
        except Exception as exc:  # noqa: BLE001  (a failing hook refuses the client)
            _log.warning("moq.auth_failed", peer=request.peer, error=repr(exc))
            return MoqAuthDecision(accept=False, status=500)
        assert isinstance(answer, MoqAuthDecision)
        return answer

    def ended(self, conn: MoqConnection) -> None:
        """:meta private: finish the session in a drained task."""
        viewer = self._viewers.pop(conn, None)
        if viewer is None:
            return
        task = asyncio.get_running_loop().create_task(self._finish(viewer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, viewer: _Viewer) -> None:
        conn = viewer.conn
        publisher = conn.publisher
        if publisher is not None:
            await publisher.aclose()
        request = conn.request
        meters = viewer.meters or {}
        total = Usage()
        for meter in meters.values():
            total.add(meter)
        for guard in (viewer.guards or {}).values():
            guard.close()
        if request is None or viewer.meters is None:
            return  # refused, or never got as far as asking: nothing was served
        code = conn.close_code or 0
        record = MoqSessionRecord(
            session=viewer.session,
            node=self.node,
            path=request.path,
            tier=viewer.tier,
            peer=request.peer,
            transport=request.transport,
            version=request.version.alpn,
            started_at=viewer.started_wall,
            ended_at=time.time(),
            duration_s=time.monotonic() - viewer.started_mono,
            groups=total.groups,
            frames=total.frames,
            bytes=total.bytes,
            subscriptions=publisher.subscriptions_served if publisher is not None else 0,
            skipped_groups=publisher.skipped_groups if publisher is not None else 0,
            broadcasts=tuple(
                BroadcastUsage(path=p, groups=m.groups, frames=m.frames, bytes=m.bytes)
                for p, m in sorted(meters.items())
            ),
            outcome="closed" if code == 0 else "error",
            error="" if code == 0 else f"code {code}: {conn.close_reason}"[:200],
            quic=conn.figures(),
        )
        await emit_moq_session(record, self._sinks)
        # The subscriber released every broadcast when the session ended, before `ended()`.
        for ingress in record.ingress_records(viewer.publishes):
            await emit_moq_session(ingress, self._sinks)

    # -- lifetime --

    async def aclose(self) -> None:
        """Close every connection (session code 0), stop listening and drain the sessions'
        tasks and records (idempotent)."""
        if self._closed.is_set():
            return
        for conn in list(self._viewers):
            conn.close_session(SessionCode.NO_ERROR, "server closing")
        # Let the close frames go out before the socket closes.
        await asyncio.sleep(0.05)
        for conn in list(self._viewers):
            conn._terminated(SessionCode.NO_ERROR, "server closing")
        self._quic_server.close()
        if self._fingerprint_endpoint is not None:
            await self._fingerprint_endpoint.aclose()
        self._closed.set()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def wait_closed(self) -> None:
        """Wait until `aclose()` ran."""
        await self._closed.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def is_self_signed(certificate: Certificate) -> bool:
    """Whether `certificate` has no chain and names itself as issuer (what clients can only
    trust by pinning its hash)."""
    leaf = certificate.certificate
    return not certificate.chain and leaf.issuer == leaf.subject


def _split_addr(addr: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return addr
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)
