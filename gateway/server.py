"""The SRT server: callers publish MPEG-TS into the model or pull it back out, metered.

`Server.bind(addr, ...)` opens an SRT listener. Each caller is decided in libsrt's listen
callback, before its handshake completes: the stream id is parsed (`gateway.streamid`, bad ->
1400), the authorization hook runs (reject -> its code, 1403 by default), a second publisher
on a claimed path is refused (1409 under `PublisherPolicy.REJECT`), and the passphrase for that
stream id is set. Accepted connections then come out of `async for request in server` as
`Publish` or `Subscribe`; `await request.accept(origin)` runs the connection until it ends and
returns its `SessionRecord`, which is also logged as `session.closed` and given to the sinks.
`run(origin, config)` is the convenience loop that accepts everything the handshake let in.

Lifetime: the server owns its listener, its reactor (unless one was passed in) and every
connection it has handed out; `aclose()` ends them all. `Server.serve` keeps its session tasks
in a set that `aclose()` drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Final, Self

import structlog

from gateway.egress import HubRegistry, Sender
from gateway.session import (
    LinkFigures,
    Outcome,
    Role,
    SessionRecord,
    SessionSink,
    default_node,
    emit_session,
)
from gateway.srt import (
    Accept,
    HandshakeInfo,
    Reject,
    SrtConnection,
    SrtError,
    SrtListener,
    SrtOptions,
    SrtReactor,
)
from gateway.streamid import (
    Mode,
    StreamIdError,
    StreamRequest,
    normalize_prefix,
    parse_stream_id,
)
from model import (
    BroadcastConsumer,
    BroadcastProducer,
    Closed,
    Origin,
    PublishConflict,
    PublisherPolicy,
    StatsHandle,
    Usage,
    normalize_path,
)
from mux import TsImporter

__all__ = [
    "AuthDecision",
    "AuthHook",
    "Publish",
    "Server",
    "ServerConfig",
    "Subscribe",
    "run",
]

_log = structlog.get_logger("moqsrt.srt.server")

# SRT rejection codes (SRT_REJX_*, 1000 + HTTP status) the server uses.
REJECT_BAD_REQUEST: Final = 1400
REJECT_UNAUTHORIZED: Final = 1401
REJECT_FORBIDDEN: Final = 1403
REJECT_NOT_FOUND: Final = 1404
REJECT_CONFLICT: Final = 1409
REJECT_INTERNAL: Final = 1500
REJECT_UNAVAILABLE: Final = 1503

AuthHook = Callable[[StreamRequest, tuple[str, int]], Awaitable["AuthDecision"]]
"""Decides a caller at handshake time: `(request, peer) -> AuthDecision`.

It runs on the event loop while libsrt's receiver thread waits for the answer, which holds up
every connection on the listener's port: keep it fast (cache remote answers). It is bounded by
`ServerConfig.auth_timeout_s` (past it the caller gets 1503); an exception rejects with 1500.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthDecision:
    """The authorization hook's answer for one caller.

    `accept=False` refuses the handshake with `code` (an SRT rejection code, 1000..2999; 1401
    unauthorized and 1403 forbidden are the usual ones). When accepted, `tier` labels the
    session's usage (a customer plan; `internal` for the platform's own consumers), and
    `passphrase` (10..79 characters) is the SRT passphrase this caller must use, replacing the
    server's default; None keeps the default.
    """

    accept: bool = True
    code: int = REJECT_FORBIDDEN
    tier: str = "default"
    passphrase: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Settings of one SRT server (plain data; `Server.bind` keyword arguments override them).

    - `listen`: `(host, port)` or `"host:port"`; port 0 picks a free port (`Server.port`).
    - `latency_ms`: SRT latency offered to callers (the larger side wins); also the exporter's
      stalled-group skip budget, and half of it the pacer's lateness budget.
    - `passphrase` / `pbkeylen`: default SRT encryption (None: unencrypted unless the hook
      chooses a passphrase for that caller).
    - `prefix`: model path prefix, joined to every stream id's resource on a segment boundary.
    - `publisher_policy`: REJECT refuses a second publisher on a path this server has claimed,
      or that is live in the origin given to `bind`/`serve`, with 1409 at handshake; TAKEOVER
      lets the newcomer replace it (the old publisher's connection is closed).
    - `request_timeout_s`: how long an `m=request` caller waits for its broadcast to appear;
      0 means "must be live now" (1404 at handshake when the origin is known).
    - `auth`: the authorization hook (None accepts every well-formed stream id).
    - `sinks`: every `SessionRecord` is handed to each of them.
    - `node`: node id in records (None: the stats handle's node, else the host name).
    - `send_buffer_limit_bytes`: a viewer whose unsent SRT bytes exceed this is skipped ahead
      to the next keyframe (None: twice latency x `max_bitrate_bps`, at least 1 MB).
    - `publish_cap_bps`: per-publisher input cap (TS bits per second, sustained; bursts of
      `PUBLISH_BURST_S` at that rate are allowed); a publisher above it is disconnected with
      `outcome="error"`. None: no cap.
    - `max_bitrate_bps`: sizes libsrt receive buffers (latency x rate); `maxbw_bytes_s` caps
      what libsrt sends per connection (None: libsrt's default).
    - `peer_idle_timeout_ms`: a silent peer is declared lost after this long.
    - `default_mode`: mode of `#!::` ids without `m=`.
    - `auth_timeout_s`: bound on the authorization hook (then 1503).
    - `claim_timeout_s`: how long a publisher's path stays claimed between its handshake and
      its connection surfacing (a handshake libsrt fails after our callback frees it then).
    - `drain_timeout_s`: bound on handing a viewer the tail of an ended broadcast.
    """

    listen: tuple[str, int] | str = ("0.0.0.0", 9000)
    latency_ms: int = 120
    passphrase: str | None = None
    pbkeylen: int = 16
    prefix: str = ""
    publisher_policy: PublisherPolicy = PublisherPolicy.REJECT
    request_timeout_s: float = 10.0
    auth: AuthHook | None = None
    sinks: Sequence[SessionSink] = ()
    node: str | None = None
    send_buffer_limit_bytes: int | None = None
    publish_cap_bps: int | None = None
    max_bitrate_bps: int = 100_000_000
    maxbw_bytes_s: int | None = None
    peer_idle_timeout_ms: int = 5000
    default_mode: Mode = "publish"
    auth_timeout_s: float = 1.5
    claim_timeout_s: float = 2.0
    drain_timeout_s: float = 2.0

    def send_buffer_limit(self) -> int:
        """`send_buffer_limit_bytes`, or its default when None (bytes)."""
        if self.send_buffer_limit_bytes is not None:
            return self.send_buffer_limit_bytes
        return max(1_000_000, 2 * self.latency_ms * self.max_bitrate_bps // 8000)


def parse_listen(addr: tuple[str, int] | str) -> tuple[str, int]:
    """`"host:port"` or `(host, port)` -> `(host, port)`; ValueError when malformed."""
    if isinstance(addr, tuple):
        return addr
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {addr!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))


@dataclass(slots=True, eq=False)
class _Claim:
    """A path held by one publisher: pending between handshake and accept, then active until
    that publisher's session ends.

    libsrt may still fail a handshake after our callback accepted it (a wrong or missing
    passphrase), and we are not told; so a pending claim expires after `claim_timeout_s`, and
    a new caller from the same host replaces a pending claim at once (an encoder retrying with
    the right passphrase must not see 1409 for its own failed attempt).
    """

    path: str
    expires_at: float | None
    host: str = ""
    owner: Publish | None = None

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def blocks(self, host: str, now: float) -> bool:
        """True when this claim refuses a new publisher from `host` at time `now`."""
        if not self.live(now):
            return False
        return self.expires_at is None or host != self.host


@dataclass(slots=True, eq=False)
class _Pending:
    """What the listen callback decided, carried to the accepted connection as its context."""

    request: StreamRequest
    tier: str
    peer: tuple[str, int]
    claim: _Claim | None = None
    stamped_at: float = field(default_factory=time.monotonic)


class Server:
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
        self._claims: dict[str, _Claim] = {}
        self._requests: set[_Request] = set()
        self._tasks: set[asyncio.Task[SessionRecord]] = set()
        self._hubs = HubRegistry(latency_ms=config.latency_ms)
        self._closed = False
        self.rejected = 0
        """Callers refused at handshake so far (all codes)."""

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
        host, port = parse_listen(cfg.listen)
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

            listener = await srt.listen(host, port, options, on_handshake)
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
        tier = "default"
        passphrase = self.config.passphrase
        if self.config.auth is not None:
            try:
                async with asyncio.timeout(self.config.auth_timeout_s):
                    decision = await self.config.auth(request, info.peer)
            except TimeoutError:
                return self._refuse(info, REJECT_UNAVAILABLE, "authorization hook timed out")
            except Exception as exc:  # noqa: BLE001  (a failing hook refuses, never crashes)
                _log.warning("srt.auth_failed", peer=_peer(info.peer), error=repr(exc))
                return self._refuse(info, REJECT_INTERNAL, "authorization hook failed")
            if not decision.accept:
                code = decision.code if 1000 <= decision.code <= 2999 else REJECT_FORBIDDEN
                return self._refuse(info, code, "refused by authorization hook", request)
            tier = decision.tier
            if decision.passphrase is not None:
                passphrase = decision.passphrase
        pending = _Pending(request=request, tier=tier, peer=info.peer)
        if request.is_publish:
            if self.config.publisher_policy is PublisherPolicy.REJECT:
                if self._path_taken(request.path, info.peer[0]):
                    return self._refuse(info, REJECT_CONFLICT, "path already published", request)
                pending.claim = self._claim(request.path, pending=True, host=info.peer[0])
        elif (
            self.config.request_timeout_s <= 0
            and self._origin is not None
            and not self._origin.is_live(request.path)
        ):
            return self._refuse(info, REJECT_NOT_FOUND, "no broadcast at path", request)
        return Accept(passphrase=passphrase, context=pending)

    def _refuse(
        self, info: HandshakeInfo, code: int, reason: str, request: StreamRequest | None = None
    ) -> Reject:
        self.rejected += 1
        _log.info(
            "srt.rejected",
            code=code,
            reason=reason,
            peer=_peer(info.peer),
            stream_id=(info.stream_id or "")[:128],
            path=request.path if request else None,
        )
        return Reject(code)

    def _path_taken(self, path: str, host: str = "") -> bool:
        claim = self._claims.get(path)
        if claim is not None and claim.blocks(host, time.monotonic()):
            return True
        return self._origin is not None and self._origin.is_live(path)

    def _claim(self, path: str, *, pending: bool, host: str = "") -> _Claim:
        expires = time.monotonic() + self.config.claim_timeout_s if pending else None
        claim = _Claim(path=path, expires_at=expires, host=host)
        self._claims[path] = claim
        return claim

    def _release(self, claim: _Claim | None) -> None:
        if claim is not None and self._claims.get(claim.path) is claim:
            del self._claims[claim.path]

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
        if not isinstance(pending, _Pending):
            # Not decided by our callback (cannot happen with our listener): refuse quietly.
            conn.close()
            return None
        if self._closed:
            conn.close()
            return None
        claim = pending.claim
        if claim is not None:
            if self._claims.get(claim.path) is not claim:
                # The claim expired and another publisher took the path meanwhile.
                _log.info(
                    "srt.rejected",
                    code=REJECT_CONFLICT,
                    reason="claim expired",
                    peer=_peer(pending.peer),
                    path=claim.path,
                )
                conn.close()
                return None
            claim.expires_at = None
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


PUBLISH_BURST_S: Final = 2.0
"""Seconds of `publish_cap_bps` a publisher may send at once above the sustained rate."""


class RateCap:
    """A token bucket over received bytes: `rate_bps` bits per second sustained, with a burst
    of `burst_s` seconds at that rate. Sans-I/O: the caller passes `now` (seconds)."""

    def __init__(self, rate_bps: int, burst_s: float, now: float) -> None:
        if rate_bps <= 0 or burst_s <= 0:
            raise ValueError("rate_bps and burst_s must be positive")
        self._rate_bytes_s = rate_bps / 8
        self._capacity = self._rate_bytes_s * burst_s
        self._tokens = self._capacity
        self._at = now

    def take(self, nbytes: int, now: float) -> bool:
        """Account `nbytes` received at `now`; False once the publisher is over the cap."""
        elapsed = max(0.0, now - self._at)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate_bytes_s)
        self._at = now
        self._tokens -= nbytes
        return self._tokens >= 0


class _OverCap(Exception):
    """A publisher went over `publish_cap_bps` (ends its session with this message)."""


def _peer(peer: tuple[str, int]) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Request:
    """Common part of `Publish` and `Subscribe`: one accepted SRT connection awaiting a verdict.

    `accept(origin, path=None)` runs it to the end and returns its `SessionRecord`; `reject()`
    closes it. Exactly one of them, once; a second call raises `RuntimeError`.
    """

    role: Role

    def __init__(self, server: Server, conn: SrtConnection, pending: _Pending) -> None:
        self._server = server
        self._conn = conn
        self._pending = pending
        self._claim = pending.claim
        self._used = False
        self._shutting_down = False
        self._task: asyncio.Task[object] | None = None
        self.session = secrets.token_hex(8)
        """This session's unique id (also the viewer id in egress stats)."""
        self.started_at = time.time()
        self._started_mono = time.monotonic()

    @property
    def request(self) -> StreamRequest:
        """The parsed stream id."""
        return self._pending.request

    @property
    def resource(self) -> str:
        """The caller's resource (stream id path without the server prefix)."""
        return self._pending.request.resource

    @property
    def path(self) -> str:
        """The model path the caller asked for (prefix joined, normalized)."""
        return self._pending.request.path

    @property
    def stream_id(self) -> str:
        """The raw stream id the caller sent."""
        return self._pending.request.raw

    @property
    def user(self) -> str:
        """The user named in the stream id (`u=` or MediaMTX's user), '' for none."""
        return self._pending.request.user

    @property
    def tier(self) -> str:
        """The tier the authorization hook chose (`default` without a hook)."""
        return self._pending.tier

    @property
    def peer(self) -> tuple[str, int]:
        """The caller's `(host, port)`."""
        return self._pending.peer

    @property
    def connection(self) -> SrtConnection:
        """The SRT connection (owned by this request; closed when it ends)."""
        return self._conn

    def reject(self, code: int = REJECT_FORBIDDEN) -> None:
        """Refuse the request after the handshake: the connection is closed (the caller sees
        a disconnect, not `code`, which is only logged; refuse with a code the caller sees
        from the authorization hook instead). Raises `RuntimeError` if already used."""
        self._use()
        _log.info("srt.request_rejected", session=self.session, code=code, path=self.path)
        self._finish_request()

    def _use(self) -> None:
        if self._used:
            raise RuntimeError("request already accepted or rejected")
        self._used = True

    def _finish_request(self) -> None:
        self._conn.close()
        self._server._release(self._claim)
        self._server._requests.discard(self)

    def _shutdown(self) -> None:
        """The server is closing: end this session soon (the session task records it)."""
        self._shutting_down = True
        if not self._used:
            self._used = True
            self._finish_request()
            return
        self._conn.close()

    def _link(self) -> LinkFigures:
        try:
            return LinkFigures.from_stats(self._conn.stats())
        except SrtError:
            return LinkFigures()

    async def _end(
        self,
        *,
        path: str,
        outcome: Outcome,
        error: str = "",
        usage: Usage | None = None,
        ts_bytes: int = 0,
        skipped_bytes: int = 0,
    ) -> SessionRecord:
        """Close the connection and its claim, then build, log and sink the session's record.

        `usage` is the session's payload meter (None: nothing moved); read the link figures
        before the close so they include the last exchange.
        """
        link = self._link()
        self._finish_request()
        usage = usage or Usage()
        record = SessionRecord(
            session=self.session,
            node=self._server.node,
            role=self.role,
            path=path,
            tier=self.tier,
            peer=_peer(self.peer),
            stream_id=self.stream_id,
            user=self.user,
            started_at=self.started_at,
            ended_at=time.time(),
            duration_s=round(time.monotonic() - self._started_mono, 6),
            groups=usage.groups,
            frames=usage.frames,
            bytes=usage.bytes,
            ts_bytes=ts_bytes,
            skipped_bytes=skipped_bytes,
            outcome=outcome,
            error=error,
            srt=link,
        )
        await emit_session(record, self._server.config.sinks)
        return record


class Publish(_Request):
    """A caller sending MPEG-TS (`m=publish`, OBS `app/key`, MediaMTX `publish:`)."""

    role: Role = "ingress"
    _active_path: str | None = None

    async def accept(self, origin: Origin, path: str | None = None) -> SessionRecord:
        """Publish the caller's stream at `path` (default: the requested path) on `origin`,
        metered as ingress for (path, tier), until the caller disconnects.

        A clean end (the caller closed) finishes the broadcast; a broken link or server
        shutdown aborts it. Returns the session's record (also logged and given to the sinks).
        When the path is taken (`PublishConflict` from the origin, or a different `path` that
        another publisher of this server holds) the connection is closed and the record says
        `outcome="error"`. Raises `RuntimeError` if the request was already used.
        """
        self._use()
        server = self._server
        target = self.path if path is None else normalize_path(path)
        conflict = ""
        if not target:
            conflict = "empty path"
        elif target != self.path and server.config.publisher_policy is PublisherPolicy.REJECT:
            if server._path_taken(target):
                conflict = f"path {target!r} already published"
            else:
                server._release(self._claim)
                self._claim = server._claim(target, pending=False)
                self._claim.owner = self
        if not conflict:
            try:
                return await self._run(origin, target)
            except PublishConflict as exc:
                conflict = f"path {target!r} already published ({exc})"
        return await self._end(path=target, outcome="error", error=conflict)

    async def _run(self, origin: Origin, path: str) -> SessionRecord:
        server = self._server
        guard = server.stats.broadcast(path, self.tier).ingress()
        broadcast = BroadcastProducer().with_meter(guard.meter)
        try:
            origin.publish(path, broadcast)
        except BaseException:
            broadcast.abort(Closed("publish refused"))
            guard.close()
            raise
        if server.config.publisher_policy is PublisherPolicy.TAKEOVER:
            self._take_over(path)
        self._active_path = path
        _log.info(
            "srt.publish_started",
            session=self.session,
            path=path,
            tier=self.tier,
            peer=_peer(self.peer),
        )
        importer = TsImporter(broadcast)
        cap_bps = server.config.publish_cap_bps
        cap = None if cap_bps is None else RateCap(cap_bps, PUBLISH_BURST_S, time.monotonic())
        ts_bytes = 0
        outcome: Outcome = "eof"
        error = ""
        cancelled: asyncio.CancelledError | None = None

        def receive(batch: list[bytes]) -> None:
            # Runs in the reactor's delivery of each batch (no task wake-up per batch).
            nonlocal ts_bytes
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            ts_bytes += len(data)
            if cap is not None and not cap.take(len(data), time.monotonic()):
                raise _OverCap(f"publisher above the {cap_bps} bit/s cap")
            importer.feed(data)

        try:
            self._conn.set_receiver(receive)
            while batch := await self._conn.recv_batch():  # the end (data goes to receive)
                receive(batch)
        except _OverCap as exc:
            outcome, error = "error", str(exc)
        except asyncio.CancelledError as exc:
            cancelled = exc
            outcome, error = "closed", "cancelled"
        except SrtError as exc:
            outcome, error = (
                ("closed", "server closed") if self._shutting_down else ("error", str(exc))
            )
        except Exception as exc:  # noqa: BLE001  (never let one publisher take the server down)
            outcome, error = "error", repr(exc)
            _log.exception("srt.publish_failed", session=self.session)
        self._conn.set_receiver(None)  # nothing reaches the importer once it is ended
        if outcome == "eof" and self._shutting_down:
            outcome, error = "closed", "server closed"
        try:
            if outcome == "eof":
                importer.finish()
            else:
                importer.abort(Closed(f"publisher ended: {error}"))
        except Exception:  # noqa: BLE001
            _log.exception("srt.importer_end_failed", session=self.session)
        if not broadcast.is_closed:
            if outcome == "eof":
                broadcast.finish()
            else:
                broadcast.abort(Closed(f"publisher ended: {error}"))
        usage = guard.meter.copy()
        guard.close()
        record = await self._end(
            path=path, outcome=outcome, error=error, usage=usage, ts_bytes=ts_bytes
        )
        if cancelled is not None:
            raise cancelled
        return record

    def _take_over(self, path: str) -> None:
        for request in list(self._server._requests):
            if request is self or not isinstance(request, Publish):
                continue
            if request._active_path == path:
                _log.info(
                    "srt.publish_taken_over", session=request.session, path=path, by=self.session
                )
                request._shutdown()


class Subscribe(_Request):
    """A caller pulling MPEG-TS (`m=request`, MediaMTX `read:`)."""

    role: Role = "egress"

    async def accept(self, origin: Origin, path: str | None = None) -> SessionRecord:
        """Send the broadcast at `path` (default: the requested path) from `origin` to the
        caller, metered as egress for (path, tier) with this session as the viewer, until the
        broadcast ends or the caller leaves.

        Waits up to `request_timeout_s` for the broadcast to appear (a caller hanging up
        meanwhile ends the wait); past it the connection is closed (`outcome="timeout"`: the
        handshake had completed, so the caller sees a disconnect, not 1404). Output starts at
        a keyframe; a viewer whose link cannot keep up is skipped ahead to the next keyframe,
        never slowing the publisher or other viewers. Returns the session's record.
        """
        self._use()
        target = self.path if path is None else normalize_path(path)
        consumer: BroadcastConsumer | None = None
        outcome: Outcome = "eof"
        error = ""
        cancelled: asyncio.CancelledError | None = None
        try:
            consumer = await self._wait_for(origin, target)
            if consumer is None:
                outcome, error = "eof", "caller left before the broadcast appeared"
        except TimeoutError:
            outcome, error = "timeout", f"no broadcast at {target!r}"
        except asyncio.CancelledError as exc:
            cancelled, outcome, error = exc, "closed", "cancelled"
        if consumer is None:
            record = await self._end(path=target, outcome=outcome, error=error)
            if cancelled is not None:
                raise cancelled
            return record
        return await self._run(origin, consumer, target)

    async def _wait_for(self, origin: Origin, path: str) -> BroadcastConsumer | None:
        timeout = max(self._server.config.request_timeout_s, 0.0)
        announced = asyncio.ensure_future(origin.announced_broadcast(path))
        hangup = asyncio.ensure_future(self._conn.wait_closed())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({announced, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (announced, hangup):
                fut.cancel()
            await asyncio.gather(announced, hangup, return_exceptions=True)
        if announced.done() and not announced.cancelled() and announced.exception() is None:
            return announced.result()
        return None

    async def _run(self, origin: Origin, consumer: BroadcastConsumer, path: str) -> SessionRecord:
        server = self._server
        guard = server.stats.broadcast(path, self.tier).egress(viewer=self.session)
        _log.info(
            "srt.subscribe_started",
            session=self.session,
            path=path,
            tier=self.tier,
            peer=_peer(self.peer),
        )
        # One export per broadcast, shared by its viewers; each sender bills its own meter for
        # the model reads behind the chunks it takes (gateway.egress, metering rule).
        sender = Sender(
            self._conn,
            latency_ms=server.config.latency_ms,
            send_buffer_limit_bytes=server.config.send_buffer_limit(),
            meter=guard.meter,
        )
        hub = server._hubs.attach((id(origin), path), consumer, sender)
        pump = asyncio.ensure_future(sender.run())
        hangup = asyncio.ensure_future(self._conn.wait_closed())
        outcome: Outcome = "eof"
        error = ""
        cancelled: asyncio.CancelledError | None = None
        try:
            await asyncio.wait({pump, hangup}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError as exc:
            cancelled = exc
        finally:
            for fut in (pump, hangup):
                fut.cancel()
            await asyncio.gather(pump, hangup, return_exceptions=True)
            await server._hubs.detach(hub, sender)
        if cancelled is not None:
            outcome, error = "closed", "cancelled"
        elif self._shutting_down:
            outcome, error = "closed", "server closed"
        elif pump.done() and not pump.cancelled():
            failure = pump.exception()
            if failure is not None:
                outcome, error = "error", str(failure) or repr(failure)
            # The broadcast ended (or broke): let the caller receive the tail before closing.
            await sender.drain(server.config.drain_timeout_s)
        else:
            outcome, error = "eof", "caller left"
        usage = guard.meter.copy()
        guard.close()
        record = await self._end(
            path=path,
            outcome=outcome,
            error=error,
            usage=usage,
            ts_bytes=sender.sent_bytes,
            skipped_bytes=sender.skipped_bytes,
        )
        if cancelled is not None:
            raise cancelled
        return record


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
