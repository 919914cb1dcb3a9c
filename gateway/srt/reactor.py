"""`SrtReactor`: libsrt for one asyncio loop, the facade over the I/O thread
(`gateway.srt.iothread`).

It listens (`listen` -> `SrtListener`, every caller decided by an async handshake hook, see
`gateway.srt.listen_callback`) and connects (`connect` -> `SrtConnection`). The first reactor
in the process starts libsrt (`gateway.srt.runtime`). `aclose()` closes connections, then
listeners, then the epoll, then srt_cleanup; a reactor dropped unclosed is shut down with a
ResourceWarning.
"""

from __future__ import annotations

import asyncio
import socket
import warnings
import weakref
from dataclasses import dataclass
from functools import partial

from gateway.srt.addresses import pack_sockaddr
from gateway.srt.closing import AcloseOnExit
from gateway.srt.connection import SrtConnection
from gateway.srt.errors import SrtError
from gateway.srt.iothread import IoCore
from gateway.srt.lib import SrtErrno
from gateway.srt.listener import ListenerState, SrtListener
from gateway.srt.throttle import PeerRate
from gateway.srt.values import HandshakeHook, SrtOptions

__all__ = ["ReactorCounters", "SrtReactor"]


def _finalize_reactor(core: IoCore) -> None:
    warnings.warn("unclosed SrtReactor", ResourceWarning, stacklevel=1)
    core.orphan()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactorCounters:
    """What the I/O thread did so far.

    `wakeups`: srt_epoll_wait returns with a socket ready; `loop_calls`: call_soon_threadsafe
    calls made (one per wake-up at most, fewer when coalesced); `messages` / `bytes`: payload
    received from all sockets (`discarded_bytes` of them read and dropped, from callers
    accepted with `Accept(discard_input=True)`); `sockets`: sockets the reactor owns now
    (listeners included).
    """

    wakeups: int
    loop_calls: int
    messages: int
    bytes: int
    sockets: int
    discarded_bytes: int = 0


class SrtReactor(AcloseOnExit):
    """Runs libsrt for one asyncio loop: listeners, callers and one I/O thread.

    Create it inside a running loop (`async with SrtReactor() as reactor:`); the first one
    in the process runs srt_startup and routes libsrt's log to `moqsrt.libsrt`. `aclose()`
    closes every connection and listener it made, the epoll, and (for the last reactor)
    srt_cleanup. Use it from the loop's thread.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        hook_timeout_s: float = 2.0,
        wait_ms: int = 100,
        batch_window_ms: float = 5.0,
    ) -> None:
        """`hook_timeout_s` bounds each handshake hook (then reject 1503); `wait_ms` bounds
        each srt_epoll_wait; after a wake-up that delivered something the I/O thread lets
        data gather for `batch_window_ms` (at most that much added latency; it cuts the CPU
        per message by more than half for smooth streams). Raises OSError when libsrt is
        missing, SrtError if libsrt fails to start."""
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._hook_timeout_s = hook_timeout_s
        self._core = IoCore(self._loop, wait_ms, batch_window_ms)
        self._closed = False
        self._finalizer = weakref.finalize(self, _finalize_reactor, self._core)
        self._finalizer.atexit = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop data is delivered to."""
        return self._loop

    @property
    def closed(self) -> bool:
        """True once aclose() was called."""
        return self._closed

    def counters(self) -> ReactorCounters:
        """A snapshot of the I/O thread's counters (see ReactorCounters)."""
        core = self._core
        return ReactorCounters(
            wakeups=core.wakeups,
            loop_calls=core.loop_calls,
            messages=core.messages,
            bytes=core.bytes,
            sockets=core.connection_count(),
            discarded_bytes=core.discarded_bytes,
        )

    async def _resolve(self, host: str, port: int) -> tuple[bytes, str]:
        try:
            return pack_sockaddr(host, port), host
        except ValueError:
            infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            if not infos:
                raise
            addr = str(infos[0][4][0])
            return pack_sockaddr(addr, port), addr

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise SrtError(SrtErrno.SRT_ESCLOSED, "reactor is closed", op=op)

    async def listen(
        self,
        host: str,
        port: int,
        options: SrtOptions | None,
        on_handshake: HandshakeHook,
        backlog: int = 64,
        *,
        hook_timeout_s: float | None = None,
        handshake_rate: PeerRate | None = None,
        rate_reject_code: int = 1402,
    ) -> SrtListener:
        """Listen on (host, port) (port 0 = any free port, see `SrtListener.port`).

        Every caller's handshake runs `await on_handshake(HandshakeInfo)` on this loop: Accept
        lets it in (optionally with its own passphrase), Reject(code) refuses it with that
        code. A hook that raises or takes over `hook_timeout_s` (default: the reactor's) is
        refused with 1503. While a hook runs, libsrt processes no other packet arriving on
        this port (see the module docs), so keep hooks fast. `handshake_rate` (owned by the
        listener from now on) refuses, with `rate_reject_code` and without running the hook,
        a caller whose host started more handshakes than it allows. Raises SrtError (e.g.
        SRT_EDUPLISTEN / bind errors) with libsrt's message; the caller closes the listener.
        """
        self._check_open("srt_listen")
        addr, _ = await self._resolve(host, port)
        state = ListenerState(
            options=options if options is not None else SrtOptions(),
            on_handshake=on_handshake,
            hook_timeout_s=self._hook_timeout_s if hook_timeout_s is None else hook_timeout_s,
            loop=self._loop,
            handshake_rate=handshake_rate,
            rate_reject_code=rate_reject_code,
        )
        listener = SrtListener(self._core, state)
        state.facade = weakref.ref(listener)
        fut: asyncio.Future[None] = self._loop.create_future()
        if not self._core.submit(partial(self._core.cmd_listen, state, addr, backlog, fut)):
            listener._reactor_closed()
            self._check_open("srt_listen")
        try:
            await fut
        except BaseException:
            listener.close()
            raise
        return listener

    async def connect(
        self,
        host: str,
        port: int,
        options: SrtOptions | None = None,
        *,
        local: tuple[str, int] | None = None,
    ) -> SrtConnection:
        """Connect to an SRT listener as a caller (non-blocking srt_connect on the I/O thread).

        `local` is a numeric (host, port) to send from (srt_bind before srt_connect; port 0
        picks one). Callers bound to the same local address share one UDP socket and one pair
        of libsrt send/receive threads (libsrt's multiplexer), as the callers a listener
        accepts do.

        Raises SrtRejected (reject_code from the listener or libsrt, e.g. 1403, 10 = wrong
        passphrase), SrtTimeout after `connect_timeout_ms`, SrtError otherwise. The caller
        owns the connection.
        """
        self._check_open("srt_connect")
        options = options if options is not None else SrtOptions()
        addr, numeric = await self._resolve(host, port)
        bind = None if local is None else pack_sockaddr(*local)
        fut: asyncio.Future[SrtConnection] = self._loop.create_future()
        cmd = partial(self._core.cmd_connect, addr, (numeric, port), options, bind, fut)
        if not self._core.submit(cmd):
            self._check_open("srt_connect")
        return await fut

    async def aclose(self) -> None:
        """Close every connection and listener, the epoll, the thread; srt_cleanup if last.

        Idempotent; waits (bounded, 10 s) for the I/O thread. Pending accept()/recv_batch()
        calls return or end cleanly.
        """
        if not self._closed:
            self._closed = True
            self._finalizer.detach()
            self._core.begin_shutdown()
        await self._core.wait_stopped()
