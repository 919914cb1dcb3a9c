"""The SRT server: callers publish MPEG-TS into the model or pull it back out, metered.

`Server.bind(addr, ...)` opens an SRT listener. Each caller is decided in libsrt's listen
callback, before its handshake completes: the stream id is parsed (`gateway.streamid`, bad ->
1400), the authorization hook runs (reject -> its code, 1403 by default), a second publisher
on a claimed path is refused (1409 under `PublisherPolicy.REJECT`), a caller over the operator's
limits (sessions in all or per address, handshakes per second per address) is refused with 1402,
and the passphrase for that stream id is set; whatever a viewer sends is dropped unread.
Accepted connections then come out of `async for request in server` as `Publish` or
`Subscribe`; `await request.accept(origin)` runs the connection until it ends and
returns its `SessionRecord`, which is also logged as `session.closed` and given to the sinks.
`run(origin, config)` is the convenience loop that accepts everything the handshake let in.

Lifetime: the server owns its listener, its reactor (unless one was passed in) and every
connection it has handed out; `aclose()` ends them all. `Server.serve` keeps its session tasks
in a set that `aclose()` drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Self

import structlog

from gateway.admission import HANDSHAKE_BURST_S, SessionSlots
from gateway.auth import (
    REJECT_CONFLICT,
    REJECT_FORBIDDEN,
    REJECT_INTERNAL,
    REJECT_NOT_FOUND,
    REJECT_OVERLOAD,
    REJECT_UNAVAILABLE,
    AuthHook,
)
from gateway.claims import PathClaims
from gateway.config import parse_host_port
from gateway.egress import HubRegistry
from gateway.publish import Publish
from gateway.request import Pending, SessionRequest, format_peer
from gateway.server_config import ServerConfig
from gateway.session import SessionRecord, default_node
from gateway.srt import (
    Accept,
    HandshakeInfo,
    LogThrottle,
    PeerRate,
    Reject,
    SrtConnection,
    SrtError,
    SrtListener,
    SrtOptions,
    SrtReactor,
)
from gateway.srt.closing import AcloseOnExit
from gateway.streamid import (
    StreamIdError,
    StreamRequest,
    normalize_prefix,
    parse_stream_id,
    redact_stream_id,
)
from gateway.subscribe import Subscribe
from model import Closed, Origin, PublisherPolicy, StatsHandle

__all__ = ["Server", "run"]

_log = structlog.get_logger("moqsrt.srt.server")

#: Refusal log lines: at most REFUSAL_LOG_BURST per code per REFUSAL_LOG_INTERVAL_S; the next
#: line says how many were left out (a flood of bad callers cannot flood the log).
REFUSAL_LOG_INTERVAL_S = 10.0
REFUSAL_LOG_BURST = 20


class Server(AcloseOnExit):
    """An SRT listener that turns callers into `Publish` / `Subscribe` requests.

    Make one with `await Server.bind(...)`; use it as an async context manager (or call
    `aclose()`). Iterate it (`async for request in server`) to receive requests, or call
    `serve(origin)` to accept them all. Every request must be accepted or rejected promptly:
    until then its connection is open and the caller waits.
    """

    def __init__(
        self,
        config: ServerConfig,
        reactor: SrtReactor,
        listener: SrtListener,
        *,
        owns_reactor: bool,
        origin: Origin | None,
    ) -> None:
        """Use `Server.bind`; this wires already-open parts together."""
        self.config = config
        self._prefix = normalize_prefix(config.prefix)
        self._reactor = reactor
        self._listener = listener
        self._owns_reactor = owns_reactor
        self._origin = origin
        self._stats: StatsHandle | None = None
        self._claims = PathClaims(config.claim_timeout_s)
        # A handshake libsrt fails after our callback (a wrong passphrase) keeps its slot for
        # claim_timeout_s (2 s), longer than libsrt keeps the socket it made for it (measured:
        # about 1 s, ~0.7 MB each with the default buffers), so max_sessions bounds those too.
        self._slots = SessionSlots(
            config.max_sessions, config.max_peer_sessions, config.claim_timeout_s
        )
        self._refusal_log = LogThrottle(REFUSAL_LOG_INTERVAL_S, REFUSAL_LOG_BURST)
        self._requests: set[SessionRequest] = set()
        self._tasks: set[asyncio.Task[SessionRecord]] = set()
        self._hubs = HubRegistry(latency_ms=config.latency_ms)
        self._closed = False
        self._rejected = 0

    @classmethod
    async def bind(
        cls,
        addr: tuple[str, int] | str | None = None,
        *,
        config: ServerConfig | None = None,
        latency_ms: int | None = None,
        passphrase: str | None = None,
        prefix: str | None = None,
        auth: AuthHook | None = None,
        origin: Origin | None = None,
        reactor: SrtReactor | None = None,
    ) -> Server:
        """Open an SRT listener on `addr` (else `config.listen`) and return the server.

        Keyword arguments other than `config`, `origin` and `reactor` override the matching
        `ServerConfig` fields. `origin`, when given, lets the handshake refuse a publisher
        whose path is already live there (1409) and a request for a path that is not live
        when `request_timeout_s` is 0 (1404). `reactor`: share an existing `SrtReactor` (the
        caller keeps owning it); by default the server runs its own. Raises `SrtError` when
        the address cannot be bound, `ValueError` for a bad prefix or address.
        """
        cfg = config or ServerConfig()
        overrides: dict[str, object] = {}
        if addr is not None:
            overrides["listen"] = addr
        if latency_ms is not None:
            overrides["latency_ms"] = latency_ms
        if passphrase is not None:
            overrides["passphrase"] = passphrase
        if prefix is not None:
            overrides["prefix"] = prefix
        if auth is not None:
            overrides["auth"] = auth
        cfg = replace(cfg, **overrides)  # type: ignore[arg-type]
        if isinstance(cfg.listen, tuple):
            host, port = cfg.listen
        else:
            host, port = parse_host_port("listen", cfg.listen)
        normalize_prefix(cfg.prefix)  # fail early on a bad prefix
        owns = reactor is None
        srt = reactor if reactor is not None else SrtReactor()
        try:
            options = SrtOptions(
                latency_ms=cfg.latency_ms,
                passphrase=cfg.passphrase,
                pbkeylen=cfg.pbkeylen,
                max_bitrate_bps=cfg.max_bitrate_bps,
                maxbw_bytes_s=cfg.maxbw_bytes_s,
                peer_idle_timeout_ms=cfg.peer_idle_timeout_ms,
            )
            holder: list[Server] = []

            async def on_handshake(info: HandshakeInfo) -> Accept | Reject:
                return await holder[0]._on_handshake(info)

            rate = cfg.max_peer_handshakes_per_s
            listener = await srt.listen(
                host,
                port,
                options,
                on_handshake,
                handshake_rate=None
                if rate is None
                else PeerRate(rate, max(1.0, rate * HANDSHAKE_BURST_S)),
                rate_reject_code=REJECT_OVERLOAD,
            )
        except BaseException:
            if owns:
                await srt.aclose()
            raise
        server = cls(cfg, srt, listener, owns_reactor=owns, origin=origin)
        holder.append(server)
        _log.info("srt.listening", host=host, port=listener.port, latency_ms=cfg.latency_ms)
        return server

    def with_stats(self, stats: StatsHandle) -> Self:
        """Meter every session into `stats` (a builder: returns the server). Without it the
        server uses a private `StatsHandle`. Call before the first request is accepted."""
        self._stats = stats
        return self

    @property
    def stats(self) -> StatsHandle:
        """The stats handle sessions are metered into (created on first use if none was set)."""
        if self._stats is None:
            self._stats = StatsHandle(self.node)
        return self._stats

    @property
    def node(self) -> str:
        """The node id in this server's records."""
        if self.config.node:
            return self.config.node
        if self._stats is not None:
            return self._stats.node
        return default_node()

    @property
    def port(self) -> int:
        """The UDP port the listener is bound to."""
        return self._listener.port

    @property
    def rejected(self) -> int:
        """Callers refused at handshake so far (all codes, handshake-rate refusals included)."""
        return self._rejected + self._listener.rate_refused

    def held(self) -> dict[str, int]:
        """What the server holds about callers now, per table: `sessions` (handed out, not
        ended), `slots` and `slot_hosts` (sessions counted against the limits, pending ones
        included, and their hosts), `claims` (publishers' paths), and the listener's
        `decisions`, `recent_rejects` and `rate_peers` (`SrtListener.remembered`). Each is
        bounded whatever callers do; for metrics and tests. Expired entries are pruned first."""
        now = time.monotonic()
        self._slots.prune(now)
        self._claims.prune(now)
        return {
            "sessions": len(self._requests),
            "slots": self._slots.total,
            "slot_hosts": self._slots.hosts(),
            "claims": len(self._claims),
            **self._listener.remembered(),
        }

    @property
    def prefix(self) -> str:
        """The normalized path prefix."""
        return self._prefix

    # -- handshake (listen callback, on the loop) -------------------------------------------

    async def _on_handshake(self, info: HandshakeInfo) -> Accept | Reject:
        try:
            request = parse_stream_id(
                info.stream_id, self._prefix, default_mode=self.config.default_mode
            )
        except StreamIdError as exc:
            return self._refuse(info, exc.code, str(exc))
        # Before the hook: a caller over the limits costs no authorization round trip.
        over = self._slots.refusal(info.peer[0], time.monotonic())
        if over is not None:
            return self._refuse(info, REJECT_OVERLOAD, over, request)
        tier = "default"
        passphrase = self.config.passphrase
        if self.config.auth is not None:
            try:
                async with asyncio.timeout(self.config.auth_timeout_s):
                    decision = await self.config.auth(request, info.peer)
            except TimeoutError:
                return self._refuse(info, REJECT_UNAVAILABLE, "authorization hook timed out")
            except Exception as exc:  # noqa: BLE001  (a failing hook refuses, never crashes)
                _log.warning("srt.auth_failed", peer=format_peer(info.peer), error=repr(exc))
                return self._refuse(info, REJECT_INTERNAL, "authorization hook failed")
            if not decision.accept:
                code = decision.code if 1000 <= decision.code <= 2999 else REJECT_FORBIDDEN
                return self._refuse(info, code, "refused by authorization hook", request)
            tier = decision.tier
            if decision.passphrase is not None:
                passphrase = decision.passphrase
        pending = Pending(request=request, tier=tier, peer=info.peer)
        if request.is_publish:
            if self.config.publisher_policy is PublisherPolicy.REJECT:
                if self._path_taken(request.path, info.peer[0]):
                    return self._refuse(info, REJECT_CONFLICT, "path already published", request)
                pending.claim = self._claims.claim(
                    request.path, pending=True, now=time.monotonic(), host=info.peer[0]
                )
        elif (
            self.config.request_timeout_s <= 0
            and self._origin is not None
            and not self._origin.is_live(request.path)
        ):
            return self._refuse(info, REJECT_NOT_FOUND, "no broadcast at path", request)
        pending.slot = self._slots.reserve(info.peer[0], time.monotonic())
        # A viewer only receives: what it sends is dropped on the I/O thread, never kept.
        return Accept(passphrase=passphrase, context=pending, discard_input=not request.is_publish)

    def _refuse(
        self, info: HandshakeInfo, code: int, reason: str, request: StreamRequest | None = None
    ) -> Reject:
        self._rejected += 1
        suppressed = self._refusal_log.allow(code, time.monotonic())
        if suppressed is not None:
            _log.info(
                "srt.rejected",
                code=code,
                reason=reason,
                peer=format_peer(info.peer),
                stream_id=redact_stream_id(info.stream_id),
                path=request.path if request else None,
                suppressed=suppressed,
            )
        return Reject(code)

    def _path_taken(self, path: str, host: str = "") -> bool:
        if self._claims.blocks(path, host, time.monotonic()):
            return True
        return self._origin is not None and self._origin.is_live(path)

    # -- requests -------------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Publish | Subscribe:
        """Wait for the next accepted caller; StopAsyncIteration once the server is closed."""
        while True:
            if self._closed:
                raise StopAsyncIteration
            try:
                conn = await self._listener.accept()
            except (SrtError, Closed) as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                _log.warning("srt.accept_failed", error=repr(exc))
                await asyncio.sleep(0.05)
                continue
            request = self._surface(conn)
            if request is not None:
                return request

    def _surface(self, conn: SrtConnection) -> Publish | Subscribe | None:
        pending = conn.context
        if not isinstance(pending, Pending):
            # Not decided by our callback (cannot happen with our listener): refuse quietly.
            conn.close()
            return None
        if self._closed:
            self._slots.release(pending.slot)
            conn.close()
            return None
        claim = pending.claim
        if claim is not None and not self._claims.activate(claim, time.monotonic()):
            # The claim expired and another publisher took the path meanwhile.
            _log.info(
                "srt.rejected",
                code=REJECT_CONFLICT,
                reason="claim expired",
                peer=format_peer(pending.peer),
                path=claim.path,
            )
            self._slots.release(pending.slot)
            conn.close()
            return None
        if pending.slot is not None:
            self._slots.hold(pending.slot)
        cls = Publish if pending.request.is_publish else Subscribe
        request = cls(self, conn, pending)
        if claim is not None and isinstance(request, Publish):
            claim.owner = request
        self._requests.add(request)
        return request

    async def serve(self, origin: Origin) -> None:
        """Accept every request into `origin` until the server closes; then wait for the
        running sessions to end. Each session runs in a task the server drains on close.
        Cancelling `serve` closes the server."""
        if self._origin is None:
            self._origin = origin
        try:
            async for request in self:
                task = asyncio.create_task(request.accept(origin), name=f"srt-{request.session}")
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
        finally:
            await self.aclose()

    def _task_done(self, task: asyncio.Task[SessionRecord]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("srt.session_crashed", error=repr(task.exception()))

    def requests(self) -> list[SessionRequest]:
        """The requests handed out and not yet ended (`Publish` and `Subscribe`), now."""
        return list(self._requests)

    def kick(self, session: str) -> bool:
        """End the live session whose id is `session` (`SessionRequest.kick`); False when no
        such session is live."""
        for request in self._requests:
            if request.session == session:
                request.kick()
                return True
        return False

    @property
    def sessions(self) -> int:
        """Requests handed out and not yet ended."""
        return len(self._requests)

    async def aclose(self) -> None:
        """Stop listening, end every session (publishers abort, viewers are closed), wait for
        the session tasks of `serve`, close the reactor if the server owns it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(SrtError):
            await self._listener.aclose()
        for request in list(self._requests):
            request._shutdown()
        if self._tasks:
            tasks = list(self._tasks)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.drain_timeout_s + 3.0):
                    await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for request in list(self._requests):
            request._conn.close()
        await self._hubs.aclose()
        self._claims.clear()
        if self._owns_reactor:
            await self._reactor.aclose()


async def run(
    origin: Origin,
    config: ServerConfig | None = None,
    *,
    stats: StatsHandle | None = None,
    ready: Callable[[Server], None] | None = None,
) -> None:
    """Serve SRT into `origin` with `config` until cancelled: bind, then `Server.serve`.

    First publisher wins per `config.publisher_policy`; `config.auth` decides callers; every
    request that passes the handshake is accepted in a task the server drains on exit. `stats`
    meters the sessions (a private handle otherwise); `ready` is called with the bound server
    (e.g. to learn its port) before the first request.
    """
    cfg = config or ServerConfig()
    async with await Server.bind(config=cfg, origin=origin) as server:
        if stats is not None:
            server.with_stats(stats)
        if ready is not None:
            ready(server)
        await server.serve(origin)
