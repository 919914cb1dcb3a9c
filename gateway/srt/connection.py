"""`SrtConnection`: one connected SRT socket as the event loop sees it.

The reactor's I/O thread feeds it on the loop (received batches, the end of the stream);
`send` never blocks. Whoever holds it closes it; `close()` hands the socket back to the I/O
thread, which runs srt_close. `SocketOwner` is what it (and `SrtListener`) needs from the
reactor.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol, Self

from gateway.srt.closing import AcloseOnExit
from gateway.srt.errors import SrtError
from gateway.srt.lib import SockOpt, SrtErrno
from gateway.srt.sockets import SrtSocket
from gateway.srt.values import LinkStats, SrtOptions

if TYPE_CHECKING:
    from types import TracebackType

    from gateway.srt.listener import ListenerState

__all__ = ["SocketOwner", "SrtConnection"]


class SocketOwner(Protocol):
    """What connections and listeners need from the reactor (`gateway.srt.iothread.IoCore`)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the reactor delivers to."""
        ...

    def close_socket(self, sock: SrtSocket, on_closed: Callable[[], None] | None) -> None:
        """Close `sock` on the I/O thread, then call `on_closed()` on the loop."""

    def close_listener(self, state: ListenerState, on_closed: Callable[[], None] | None) -> None:
        """Stop a listener: reject new callers, close its socket on the I/O thread, then
        call `on_closed()` on the loop."""


MAX_UNREAD_BYTES: Final = 16 * 1024 * 1024
"""Bytes a connection keeps for `recv_batch()` at most (about 1.3 s at 100 Mbit/s): past it the
oldest messages are dropped and counted (`SrtConnection.dropped_unread_bytes`), so a caller
whose data nobody reads (a request not yet accepted) cannot grow memory."""


class _Ended:
    """Sentinel type: the connection has not ended."""


_NOT_ENDED: Final = _Ended()


def _finalize_connection(owner: SocketOwner, sock: SrtSocket) -> None:
    warnings.warn(f"unclosed SrtConnection @{sock.handle}", ResourceWarning, stacklevel=1)
    owner.close_socket(sock, None)


class SrtConnection(AcloseOnExit):
    """One connected SRT socket: a publisher or viewer the listener accepted, or a caller.

    Received messages arrive in batches from the reactor's I/O thread (`recv_batch`, or a
    receiver callback, `set_receiver`); `send` never blocks. Whoever holds it closes it
    (`close()` or `async with`); the reactor closes whatever is left when it closes. A
    forgotten one is closed with a ResourceWarning. Use it from the event loop's thread only.
    """

    def __init__(
        self,
        sock: SrtSocket,
        owner: SocketOwner,
        *,
        stream_id: str,
        peer: tuple[str, int],
        context: object,
        options: SrtOptions,
    ) -> None:
        """Built by the reactor (possibly on its I/O thread); do not construct directly."""
        self._sock = sock
        self._owner = owner
        #: The caller's SRTO_STREAMID ("" when it sent none).
        self.stream_id = stream_id
        #: The peer's (host, port).
        self.peer = peer
        #: What the handshake hook's Accept carried (None for callers).
        self.context = context
        #: The options the socket was set up with (a listener's, for accepted sockets).
        self.options = options
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        #: Bytes received and dropped unread because `MAX_UNREAD_BYTES` were already waiting.
        self.dropped_unread_bytes = 0
        self._receiver: Callable[[list[bytes]], None] | None = None
        self._receiver_error: Exception | None = None
        self._end: BaseException | _Ended | None = _NOT_ENDED
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._released_flag = False
        self._done: asyncio.Future[None] | None = None
        self._final_stats: LinkStats | None = None
        self._finalizer = weakref.finalize(self, _finalize_connection, owner, sock)
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self.ended else "open"
        # No stream id: it may carry secrets (the gateway logs a redacted one).
        return f"<SrtConnection @{self._sock.handle} {self.peer} {state}>"

    @property
    def handle(self) -> int:
        """The libsrt socket id (for logs and leak checks)."""
        return self._sock.handle

    @property
    def ended(self) -> bool:
        """True once the peer ended the connection (EOF or breakage) or close() was called."""
        return self._closed or not isinstance(self._end, _Ended)

    async def recv_batch(self) -> list[bytes]:
        """All messages received since the last call, oldest first; waits while there are none.

        Each message is one srt_recvmsg payload (at most `payload_size` bytes; for ffmpeg a
        multiple of 188). Returns [] at a clean end (the peer closed, or close() was called
        here); raises SrtConnectionLost when the link broke (peer silent for about
        `peer_idle_timeout_ms`). Only one task may wait at a time (RuntimeError otherwise).
        At most `MAX_UNREAD_BYTES` wait between calls; older messages are dropped past it.
        """
        while True:
            if self._receiver_error is not None:
                error, self._receiver_error = self._receiver_error, None
                raise error
            if self._pending:
                batch, self._pending = self._pending, []
                self._pending_bytes = 0
                return batch
            if self._closed:
                return []
            if not isinstance(self._end, _Ended):
                if self._end is not None:
                    raise self._end
                return []
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting in recv_batch()")
            waiter: asyncio.Future[None] = self._owner.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def set_receiver(self, receiver: Callable[[list[bytes]], None] | None) -> None:
        """Hand every batch received from now on to `receiver(batch)` (on the loop thread, in
        the reactor's delivery, with the batch's ownership) instead of keeping it for
        `recv_batch()`: no task wake-up per batch. Messages already waiting go to it at once.
        While it is set, `recv_batch()` only reports the end (returns [] or raises as usual).
        If `receiver` raises an `Exception`, it is removed and `recv_batch()` raises that
        exception once; later batches wait for `recv_batch()` again. None removes it.
        """
        self._receiver = receiver
        if receiver is not None and self._pending:
            batch, self._pending = self._pending, []
            self._pending_bytes = 0
            self._deliver(receiver, batch)

    def send(
        self, payload: bytes | bytearray | memoryview, *, srctime_us: int | None = None
    ) -> bool:
        """Queue one message (`srt_sendmsg2`, non-blocking): at most `payload_size` bytes.

        `srctime_us`: SRT source time on libsrt's clock (`srt_now_us()`, never in the future);
        None = now. True when queued; False when libsrt's send buffer is full (nothing was
        sent: retry later or skip). Raises SrtConnectionLost when the connection broke,
        SrtError after close() or for an oversized payload.
        """
        if self._closed:
            raise SrtError(SrtErrno.SRT_ESCLOSED, "connection is closed", op="srt_sendmsg2")
        return self._sock.send(payload, srctime_us=srctime_us)

    def send_many(self, payloads: Sequence[bytes], *, srctime_us: int | None = None) -> int:
        """Queue `payloads` (bytes, each at most `payload_size`) in order, non-blocking, all
        with the source time `srctime_us` (as in `send`): one call for a burst.

        Returns how many were queued, from the first: `len(payloads)`, or fewer when libsrt's
        send buffer filled (the rest were not sent: retry later or skip them). Raises as
        `send` does (the payloads before a failing one stay queued).
        """
        if self._closed:
            raise SrtError(SrtErrno.SRT_ESCLOSED, "connection is closed", op="srt_sendmsg2")
        return self._sock.send_many(payloads, srctime_us=srctime_us)

    def send_buffer_bytes(self) -> int:
        """Bytes sent but not yet acknowledged by the peer (`srt_getsndbuffer`); 0 once closed."""
        if self._closed:
            return 0
        return self._sock.send_buffer_bytes()

    def peer_latency_ms(self) -> int:
        """The latency the peer's receiver plays out with, as negotiated at the handshake
        (`SRTO_PEERLATENCY`: the larger of both sides' settings), in ms. Raises SrtError once
        the socket is gone."""
        return self._sock.get_int(SockOpt.SRTO_PEERLATENCY)

    def stats(self) -> LinkStats:
        """Link statistics (`srt_bstats`).

        libsrt refuses srt_bstats once the link broke or the peer closed, so after the end
        this is the last snapshot the I/O thread took (at most about 0.1 s before the last
        data arrived, 0.5 s for idle links), and after close() the one taken at close.
        Raises SrtError only when no snapshot exists.
        """
        if not self._closed:
            try:
                return self._sock.stats()
            except SrtError:
                if self._final_stats is None:
                    raise
        if self._final_stats is None:
            raise SrtError(SrtErrno.SRT_ESCLOSED, "connection is closed", op="srt_bstats")
        return self._final_stats

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the peer acknowledged everything sent, then for its latency.

        A libsrt 1.5.1 receiver drops what it holds for its play time (TSBPD) as soon as our
        close() reaches it, so call this before close() when the tail matters. True when
        done; False when the connection ended or `timeout_s` ran out first. Polls every 10 ms.
        """
        loop = self._owner.loop
        deadline = loop.time() + timeout_s
        try:
            while self.send_buffer_bytes() > 0:
                if self.ended or loop.time() >= deadline:
                    return False
                await asyncio.sleep(0.01)
            peer_latency_ms = self.peer_latency_ms()
        except SrtError:
            return False
        await asyncio.sleep(min(peer_latency_ms / 1000 + 0.05, max(deadline - loop.time(), 0)))
        return not self.ended

    async def wait_closed(self) -> None:
        """Wait until the connection is over: the peer ended it (EOF or breakage), or close()
        was called here and libsrt released the socket. Never raises."""
        if self._released_flag or (not self._closed and self.ended):
            return
        if self._done is None:
            self._done = self._owner.loop.create_future()
        await asyncio.shield(self._done)

    def close(self) -> None:
        """Close the connection (idempotent). Takes a final stats snapshot, wakes a waiting
        `recv_batch` (which returns []) and hands the socket to the I/O thread for srt_close."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        with contextlib.suppress(SrtError):  # broken: keep the I/O thread's last snapshot
            self._final_stats = self._sock.stats()
        self._wake()
        self._owner.close_socket(self._sock, self._released)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def aclose(self) -> None:
        """close(), then `wait_closed()` (what leaving `async with` does)."""
        self.close()
        await self.wait_closed()

    # -- fed by the reactor on the loop thread

    def _feed(self, messages: list[bytes]) -> None:
        if self._closed:
            return
        receiver = self._receiver
        if receiver is not None:
            self._deliver(receiver, messages)
            return
        if self._pending:
            self._pending.extend(messages)
        else:
            self._pending = messages
        self._pending_bytes += sum(map(len, messages))
        if self._pending_bytes > MAX_UNREAD_BYTES:
            self._drop_oldest()
        self._wake()

    def _drop_oldest(self) -> None:
        pending = self._pending
        excess = self._pending_bytes - MAX_UNREAD_BYTES
        dropped = count = 0
        while dropped < excess:
            dropped += len(pending[count])
            count += 1
        del pending[:count]
        self._pending_bytes -= dropped
        self.dropped_unread_bytes += dropped

    def _deliver(self, receiver: Callable[[list[bytes]], None], batch: list[bytes]) -> None:
        try:
            receiver(batch)
        except Exception as exc:  # noqa: BLE001  (raised by recv_batch, in the reader's task)
            self._receiver = None
            self._receiver_error = exc
            self._wake()

    def _feed_end(self, exc: BaseException | None, last_stats: LinkStats | None = None) -> None:
        if last_stats is not None and self._final_stats is None:
            self._final_stats = last_stats
        if isinstance(self._end, _Ended):
            self._end = exc
        self._wake()
        self._resolve_done()

    def _released(self) -> None:
        self._released_flag = True
        self._resolve_done()

    def _reactor_closed(self) -> None:
        """The reactor closed and released the socket: a clean end for readers."""
        self._finalizer.detach()
        self._feed_end(None)
        self._released()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resolve_done(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
