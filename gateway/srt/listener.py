"""`SrtListener`: a listening SRT socket as the event loop sees it, and `ListenerState`, the
part of it that libsrt's listen callback, the I/O thread and the finalizer share.

The I/O thread hands the listener the callers the handshake hook accepted; `accept()` /
`async for` yield them. `close()` / `aclose()` stop it; the I/O thread closes the socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import warnings
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Self

from gateway.srt.closing import AcloseOnExit
from gateway.srt.connection import SocketOwner, SrtConnection
from gateway.srt.errors import SrtError
from gateway.srt.lib import SrtErrno
from gateway.srt.sockets import SrtSocket
from gateway.srt.throttle import LogThrottle, PeerRate
from gateway.srt.values import Accept, HandshakeHook, Reject, SrtOptions

__all__ = ["MAX_DECISIONS", "MAX_RECENT_REJECTS", "ListenerState", "SrtListener"]

#: Bounds on what a listener remembers per caller between the callback and srt_accept, and
#: per refused caller (oldest forgotten first), whatever the rate of handshakes.
MAX_DECISIONS: Final = 4096
MAX_RECENT_REJECTS: Final = 4096
#: At most one log line per this many seconds about handshakes refused for their rate.
RATE_LOG_INTERVAL_S: Final = 10.0


def _finalize_listener(owner: SocketOwner, state: ListenerState) -> None:
    warnings.warn(f"unclosed SrtListener on port {state.port}", ResourceWarning, stacklevel=1)
    owner.close_listener(state, None)


@dataclass(slots=True, eq=False)
class ListenerState:
    """What a listener's facade, the listen callback (libsrt's thread), the I/O thread and the
    finalizer share; it never refers to the facade, so a dropped facade can be finalized."""

    options: SrtOptions
    on_handshake: HandshakeHook
    hook_timeout_s: float
    loop: asyncio.AbstractEventLoop
    sock: SrtSocket | None = None
    token: int = 0
    closing: bool = False
    host: str = ""
    port: int = 0
    #: Hook runs in flight (cancelled when the listener closes, so callbacks return at once).
    pending_hooks: set[concurrent.futures.Future[Accept | Reject]] = field(default_factory=set)
    #: socket id -> (Accept.context, monotonic time, Accept.discard_input) between the
    #: callback and srt_accept; at most MAX_DECISIONS (a handshake libsrt fails after the
    #: callback, e.g. a wrong passphrase, never reaches srt_accept: swept by the I/O thread).
    decisions: dict[int, tuple[object, float, bool]] = field(default_factory=dict)
    #: (peer, stream id) -> (reject code, monotonic expiry): the answer for handshake
    #: retransmissions of a caller already refused (see gateway.srt.listen_callback._decide);
    #: at most MAX_RECENT_REJECTS, expired ones swept by the I/O thread.
    recent_rejects: dict[tuple[tuple[str, int], str], tuple[int, float]] = field(
        default_factory=dict
    )
    #: Handshakes per peer host (None: unlimited); refused with `rate_reject_code`.
    handshake_rate: PeerRate | None = None
    rate_reject_code: int = 1402
    #: Handshakes refused by `handshake_rate` so far.
    rate_refused: int = 0
    #: Bounds the log lines of rate refusals (one per interval, with the count left out).
    rate_log: LogThrottle = field(default_factory=lambda: LogThrottle(RATE_LOG_INTERVAL_S))
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The facade, weakly: the I/O thread hands it accepted callers while it is alive.
    facade: weakref.ref[SrtListener] | None = None


class SrtListener(AcloseOnExit):
    """A listening SRT socket; `accept()` / `async for` yield the callers the hook accepted.

    Created by `SrtReactor.listen`. `aclose()` (or `async with`) stops it: new callers are
    rejected, callers accepted but not yet taken are closed, the socket is released. Closing
    the reactor closes it too. Use it from the event loop's thread only.
    """

    def __init__(self, owner: SocketOwner, state: ListenerState) -> None:
        """Built by the reactor; do not construct directly."""
        self._owner = owner
        self._state = state
        self._queue: deque[SrtConnection] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._released_flag = False
        self._done: asyncio.Future[None] | None = None
        self._finalizer = weakref.finalize(self, _finalize_listener, owner, state)
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        return f"<SrtListener {self.host}:{self.port}{' closed' if self._closed else ''}>"

    @property
    def host(self) -> str:
        """The bound address."""
        return self._state.host

    @property
    def port(self) -> int:
        """The bound UDP port (the real one when 0 was asked for)."""
        return self._state.port

    @property
    def options(self) -> SrtOptions:
        """The options every accepted socket inherits."""
        return self._state.options

    @property
    def closed(self) -> bool:
        """True once close() or aclose() was called (or the reactor closed)."""
        return self._closed

    @property
    def rate_refused(self) -> int:
        """Callers refused so far because their host was over the handshake rate."""
        return self._state.rate_refused

    def remembered(self) -> dict[str, int]:
        """Entries the listener holds about callers, per table (each bounded): `decisions`
        (accepted, awaiting srt_accept), `recent_rejects` (refused, answered from memory) and
        `rate_peers` (hosts with a handshake-rate bucket). For metrics and tests."""
        state = self._state
        with state.lock:
            if state.handshake_rate is not None:
                state.handshake_rate.prune(time.monotonic())
            return {
                "decisions": len(state.decisions),
                "recent_rejects": len(state.recent_rejects),
                "rate_peers": 0 if state.handshake_rate is None else len(state.handshake_rate),
            }

    async def accept(self) -> SrtConnection:
        """The next accepted caller, in arrival order; waits for one.

        The caller owns the returned connection. Raises SrtError(SRT_ESCLOSED) once the
        listener is closed and no accepted caller is left.
        """
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise SrtError(SrtErrno.SRT_ESCLOSED, "listener is closed", op="srt_accept")
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting in accept()")
            waiter: asyncio.Future[None] = self._owner.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SrtConnection:
        """`accept()`, ending the iteration when the listener closes."""
        try:
            return await self.accept()
        except SrtError as exc:
            if self._closed and exc.code == SrtErrno.SRT_ESCLOSED:
                raise StopAsyncIteration from None
            raise

    def close(self) -> None:
        """Stop listening (idempotent, non-blocking): the I/O thread closes the socket."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._owner.close_listener(self._state, self._released)
        while self._queue:
            self._queue.popleft().close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def aclose(self) -> None:
        """close(), then wait until libsrt released the socket."""
        self.close()
        if self._released_flag:
            return
        if self._done is None:
            self._done = self._owner.loop.create_future()
        await asyncio.shield(self._done)

    # -- fed by the reactor on the loop thread

    def _reactor_closed(self) -> None:
        """The reactor closed: the socket is gone, accepted-but-untaken callers too."""
        if not self._closed:
            self._closed = True
            self._finalizer.detach()
            while self._queue:
                self._queue.popleft().close()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._released()

    def _feed_accepted(self, conn: SrtConnection) -> None:
        if self._closed:
            conn.close()
            return
        self._queue.append(conn)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _released(self) -> None:
        self._released_flag = True
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
