"""The SRT I/O thread: one thread around `srt_epoll_wait` feeding the asyncio loop in batches.

The I/O thread owns every libsrt call that can block on a lock libsrt holds while a listen
callback runs (srt_listen, srt_connect, srt_close, srt_cleanup); the loop thread only queues
commands for it (a deque plus a wake-up pipe) and makes non-blocking calls (srt_sendmsg2,
srt_bstats). Each wake-up drains every ready socket and hands all of it to the loop in ONE
`call_soon_threadsafe` (coalesced while the loop has not run the previous one). `IoCore`
never refers to the `SrtReactor` facade, so a dropped facade can be finalized; its shutdown
closes connections, then listeners, then the epoll, then releases the libsrt runtime.

Limit (libsrt's design): the listen callback runs on the receiver thread of the listener's
UDP port, so while a hook runs no packet for that port is processed, the listener's own
connections included; they wait in the kernel's UDP buffer (SRTO_RCVBUF, capped by
net.core.rmem_max). Measured: a 1.5 s hook left a 1.4 s gap, no loss, in an 8 Mbit/s stream
on the same port; other ports, the I/O thread and the loop never wait. A refused caller's
handshake retransmissions are answered from memory, so one slow caller stalls a port once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from gateway.srt import lib, listen_callback, runtime
from gateway.srt.addresses import SOCKADDR_BUF_BYTES, unpack_sockaddr
from gateway.srt.connection import SrtConnection
from gateway.srt.errors import SrtConnectionLost, SrtError, check, error_from_last, rejection
from gateway.srt.lib import EpollOpt, SockOpt, SockStatus, SrtErrno
from gateway.srt.listener import ListenerState
from gateway.srt.sockets import SrtSocket
from gateway.srt.values import LinkStats, SrtOptions
from gateway.threadname import name_this_thread

__all__ = ["IoCore"]

_log = logging.getLogger("moqsrt.srt")

#: Largest SRT live payload plus slack; one buffer is reused for every srt_recvmsg.
RECV_BUF_BYTES: Final = 1500
#: Messages read from one socket per wake-up before moving on (fairness; epoll is level-
#: triggered, so the rest is read on the next wake-up).
MAX_MESSAGES_PER_WAKE: Final = 4096
#: srt_epoll_wait timeout while a broken socket still has data waiting for its play time.
DRAIN_POLL_MS: Final = 10
#: How often the I/O thread checks idle connections for signs of life (ACKs) and expires
#: handshake decisions nobody accepted.
SWEEP_INTERVAL_S: Final = 0.5
#: Least interval between srt_bstats snapshots of a connection that is receiving data.
STATS_SNAPSHOT_S: Final = 0.1
#: How long a handshake decision waits for srt_accept (which normally follows within one
#: wake-up) before it is dropped as a handshake libsrt failed after the callback.
DECISION_TTL_S: Final = 10.0

_Event = tuple[Callable[..., None], Any]
_NOARG: Final = object()


class _ConnEntry:
    """A connected socket the I/O thread reads (I/O thread only)."""

    __slots__ = (
        "discard",
        "drain_deadline",
        "handle",
        "heard_mark",
        "idle_s",
        "last_heard",
        "latency_ms",
        "perf",
        "perf_at",
        "ref",
        "sock",
    )

    def __init__(
        self, sock: SrtSocket, conn: SrtConnection, options: SrtOptions, discard: bool = False
    ) -> None:
        self.sock = sock
        # Read and drop what the peer sends (Accept.discard_input): nothing reaches the loop.
        self.discard = discard
        self.handle = sock.handle
        self.ref = weakref.ref(conn)
        self.latency_ms = options.latency_ms
        self.idle_s = options.peer_idle_timeout_ms / 1000
        self.last_heard = time.monotonic()
        self.heard_mark = -1
        self.drain_deadline: float | None = None
        # Last srt_bstats snapshot (libsrt refuses srt_bstats once the link is broken).
        self.perf = lib.SrtTraceBStats()
        self.perf_at = 0.0

    def snapshot(self, now: float) -> bool:
        """srt_bstats into `perf`; False (keeping the old one) when libsrt refuses."""
        if lib.bstats(self.handle, self.perf) < 0:
            return False
        self.perf_at = now
        return True


class _ListenerEntry:
    __slots__ = ("handle", "sock", "state")

    def __init__(self, sock: SrtSocket, state: ListenerState) -> None:
        self.sock = sock
        self.handle = sock.handle
        self.state = state


class _ConnectingEntry:
    __slots__ = ("future", "handle", "options", "peer", "sock")

    def __init__(
        self,
        sock: SrtSocket,
        future: asyncio.Future[SrtConnection],
        options: SrtOptions,
        peer: tuple[str, int],
    ) -> None:
        self.sock = sock
        self.handle = sock.handle
        self.future = future
        self.options = options
        self.peer = peer


_Entry = _ConnEntry | _ListenerEntry | _ConnectingEntry


def _settle(arg: tuple[asyncio.Future[Any], Any]) -> None:
    """Loop thread: finish a listen/connect future, or close what nobody waits for anymore."""
    fut, value = arg
    if fut.done():
        if isinstance(value, SrtConnection):
            value.close()
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


class IoCore:
    """The thread, its epoll and every socket it owns; never refers to the SrtReactor facade."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, wait_ms: int, batch_window_ms: float
    ) -> None:
        runtime.acquire()
        self._loop = loop
        self._wait_ms = wait_ms
        self._batch_window_s = batch_window_ms / 1000
        self._orphaned = False  # the facade was garbage-collected unclosed
        try:
            self._eid = check(lib.epoll_create(), "srt_epoll_create")
        except SrtError:
            runtime.release()
            raise
        lib.epoll_set(self._eid, EpollOpt.SRT_EPOLL_ENABLE_EMPTY)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        rc = lib.epoll_add_ssock(self._eid, self._wake_r, EpollOpt.SRT_EPOLL_IN)
        if rc < 0:
            exc = error_from_last("srt_epoll_add_ssock")
            lib.epoll_release(self._eid)
            os.close(self._wake_r)
            os.close(self._wake_w)
            runtime.release()
            raise exc
        self._cmd_lock = threading.Lock()
        self._commands: deque[Callable[[list[_Event]], None]] = deque()
        self._accepting = True
        self._stopping = False
        # I/O thread only:
        self._entries: dict[int, _Entry] = {}
        # Subscribed to the epoll: removing twice makes libsrt log an "IPE" error.
        self._polled: set[int] = set()
        self._owned: dict[int, tuple[SrtSocket, weakref.ref[Any] | None]] = {}
        self._listener_states: list[ListenerState] = []
        self._draining: set[_ConnEntry] = set()
        self._buf = ctypes.create_string_buffer(RECV_BUF_BYTES)
        self._addr_buf = ctypes.create_string_buffer(SOCKADDR_BUF_BYTES)
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL_S
        # I/O thread -> loop:
        self._outbox: list[_Event] = []
        self._outbox_lock = threading.Lock()
        self._stopped: asyncio.Future[None] = loop.create_future()
        # Counters (written by the I/O thread, read anywhere).
        self.wakeups = 0
        self.loop_calls = 0
        self.messages = 0
        self.bytes = 0
        self.discarded_bytes = 0
        self._thread = threading.Thread(target=self._run, name=f"srt-io-{self._eid}", daemon=True)
        self._thread.start()

    # -- any thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the reactor delivers to."""
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        """The I/O thread."""
        return self._thread

    def connection_count(self) -> int:
        """Sockets this reactor currently owns (listeners included)."""
        return len(self._owned)

    def submit(self, cmd: Callable[[list[_Event]], None]) -> bool:
        """Queue `cmd(events)` for the I/O thread; False once the thread stopped taking any."""
        with self._cmd_lock:
            if not self._accepting:
                return False
            self._commands.append(cmd)
        self._wake()
        return True

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: already awake; closed: stopping
            os.write(self._wake_w, b"\0")

    def close_socket(self, sock: SrtSocket, on_closed: Callable[[], None] | None) -> None:
        """Close `sock` on the I/O thread, then run `on_closed()` on the loop."""
        if not self.submit(partial(self._cmd_close_socket, sock, on_closed)):
            # The thread has stopped and closed every socket it owned already.
            sock.close()
            if on_closed is not None:
                self._call_soon(on_closed)

    def close_listener(self, state: ListenerState, on_closed: Callable[[], None] | None) -> None:
        """Reject new callers at once, then close the listener on the I/O thread."""
        state.closing = True
        with state.lock:
            pending = list(state.pending_hooks)
        for fut in pending:
            fut.cancel()
        if not self.submit(partial(self._cmd_close_listener, state, on_closed)) and on_closed:
            self._call_soon(on_closed)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed
            self._loop.call_soon_threadsafe(fn)

    def orphan(self) -> None:
        """The facade is gone unclosed: shut down, and let the thread release the pipe."""
        self._orphaned = True
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        """Ask the thread to close everything and stop (idempotent)."""
        with self._cmd_lock:
            if self._stopping:
                return
            self._stopping = True
        for state in list(self._listener_states):
            state.closing = True
            with state.lock:
                pending = list(state.pending_hooks)
            for fut in pending:
                fut.cancel()
        self._wake()

    async def wait_stopped(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) for the thread to finish its shutdown; then release the pipe."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._stopped)
        except TimeoutError:
            _log.error("SRT I/O thread did not stop within %.0f s", timeout_s)
            return
        self._thread.join(timeout=1.0)
        if self._wake_w >= 0:
            os.close(self._wake_w)
            self._wake_w = -1

    # -- I/O thread -> loop

    def _post(self, events: list[_Event]) -> None:
        """Hand `events` to the loop (one call_soon_threadsafe unless one is pending) and
        empty the list, so the I/O thread keeps no reference to what it delivered."""
        with self._outbox_lock:
            schedule = not self._outbox
            self._outbox.extend(events)
        events.clear()
        if schedule:
            self.loop_calls += 1
            try:
                self._loop.call_soon_threadsafe(self._flush)
            except RuntimeError:  # loop closed: nobody left to deliver to
                with self._outbox_lock:
                    self._outbox.clear()

    def _flush(self) -> None:
        with self._outbox_lock:
            events, self._outbox = self._outbox, []
        for fn, arg in events:
            try:
                if arg is _NOARG:
                    fn()
                else:
                    fn(arg)
            except Exception:  # noqa: BLE001 - one bad handler must not starve the others
                _log.exception("SRT reactor event handler %r failed", fn)

    # -- the thread

    def _run(self) -> None:
        name_this_thread(f"srt-io-{self._eid}")
        try:
            self._serve()
        except BaseException:  # noqa: BLE001 - log it; the shutdown below must still run
            _log.exception("SRT I/O thread failed; closing every socket")
        events: list[_Event] = []
        try:
            self._shutdown(events)
        except BaseException:  # noqa: BLE001 - same reason
            _log.exception("SRT I/O thread shutdown failed")
        events.append((self._mark_stopped, _NOARG))
        self._post(events)
        if self._orphaned:  # nobody will await wait_stopped() to close it
            os.close(self._wake_w)
            self._wake_w = -1

    def _mark_stopped(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)

    def _serve(self) -> None:
        arrays = lib.EpollWaitArrays(1024)
        eid = self._eid
        events: list[_Event] = []
        while not self._stopping and not runtime.exiting():
            self._run_commands(events)
            if events:
                self._post(events)
            timeout = DRAIN_POLL_MS if self._draining else self._wait_ms
            n = lib.epoll_wait(eid, arrays, timeout)
            if n > 0:
                if arrays.lrnum.value > 0:
                    self._drain_pipe()
                ready = arrays.readfds[: arrays.rnum.value]
                if arrays.wnum.value:
                    seen = set(ready)
                    ready.extend(h for h in arrays.writefds[: arrays.wnum.value] if h not in seen)
                if ready:
                    self.wakeups += 1
                for handle in ready:
                    self._dispatch(handle, events)
            elif n < 0:
                code, _ = lib.getlasterror()
                if code != SrtErrno.SRT_ETIMEOUT:
                    _log.error("srt_epoll_wait failed: %s", lib.getlasterror_str())
                    time.sleep(timeout / 1000)
            if self._draining:
                self._retry_draining(events)
            now = time.monotonic()
            if now >= self._next_sweep:
                self._sweep(now)
            if events:
                self._post(events)
                if self._batch_window_s:
                    # Let more data gather before the next wake-up: per wake-up costs
                    # (epoll, GIL hand-offs, one loop callback) dominate at small batches.
                    time.sleep(self._batch_window_s)

    def _retry_draining(self, events: list[_Event]) -> None:
        for entry in list(self._draining):
            self._read(entry, events)

    def _dispatch(self, handle: int, events: list[_Event]) -> None:
        # A function of its own so no entry stays referenced by the loop's frame while it
        # waits (a forgotten connection must be collectable at once).
        entry = self._entries.get(handle)
        if isinstance(entry, _ConnEntry):
            self._read(entry, events)
        elif isinstance(entry, _ListenerEntry):
            self._accept(entry, events)
        elif isinstance(entry, _ConnectingEntry):
            self._connected(entry, events)

    def _run_commands(self, events: list[_Event]) -> None:
        while True:
            try:
                cmd = self._commands.popleft()
            except IndexError:
                return
            try:
                cmd(events)
            except Exception:  # noqa: BLE001 - the I/O thread must keep serving
                _log.exception("SRT reactor command %r failed", cmd)

    def _drain_pipe(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _own(self, sock: SrtSocket, ref: weakref.ref[Any] | None) -> None:
        self._owned[sock.handle] = (sock, ref)

    def _forget(self, handle: int) -> None:
        self._entries.pop(handle, None)
        self._owned.pop(handle, None)
        self._unpoll(handle)

    def _poll(self, handle: int, events: int) -> None:
        check(lib.epoll_add_usock(self._eid, handle, events), "srt_epoll_add_usock")
        self._polled.add(handle)

    def _unpoll(self, handle: int) -> None:
        if handle in self._polled:
            self._polled.discard(handle)
            lib.epoll_remove_usock(self._eid, handle)

    # -- reading

    def _read(self, entry: _ConnEntry, events: list[_Event]) -> None:
        msgs = lib.recvmsg_drain(entry.handle, self._buf, RECV_BUF_BYTES, MAX_MESSAGES_PER_WAKE)
        # Read the error first: it is this thread's, and only the drain's last call set it.
        code = lib.getlasterror()[0] if len(msgs) < MAX_MESSAGES_PER_WAKE else None
        if msgs:
            now = time.monotonic()
            entry.last_heard = now
            if now - entry.perf_at >= STATS_SNAPSHOT_S:
                entry.snapshot(now)
            self.messages += len(msgs)
            nbytes = sum(map(len, msgs))
            self.bytes += nbytes
            if entry.discard:
                self.discarded_bytes += nbytes
            else:
                conn = entry.ref()
                if conn is not None:
                    events.append((conn._feed, msgs))
        if code is not None and code != SrtErrno.SRT_EASYNCRCV:
            self._broken(entry, code, events)

    def _broken(self, entry: _ConnEntry, code: int, events: list[_Event]) -> None:
        now = time.monotonic()
        try:
            # Packets received but not yet due (TSBPD): libsrt hands them out after the break
            # only once their play time comes, so keep reading for up to latency + 0.5 s.
            left = entry.sock.get_int(SockOpt.SRTO_RCVDATA)
        except SrtError:
            left = 0
        if left > 0:
            if entry.drain_deadline is None:
                entry.drain_deadline = now + (entry.latency_ms + 500) / 1000
                self._unpoll(entry.handle)
                self._draining.add(entry)
                return
            if now < entry.drain_deadline:
                return
        self._draining.discard(entry)
        self._entries.pop(entry.handle, None)
        self._unpoll(entry.handle)
        silence = now - entry.last_heard
        exc: SrtConnectionLost | None = None
        if silence >= max(1.0, 0.6 * entry.idle_s):
            exc = SrtConnectionLost(
                code,
                f"connection lost: nothing heard from the peer for {silence:.1f} s",
                op="srt_recvmsg",
            )
        conn = entry.ref()
        if conn is not None:
            last = LinkStats.from_struct(entry.perf) if entry.perf_at else None
            events.append((partial(conn._feed_end, exc), last))

    def _sweep(self, now: float) -> None:
        """Note signs of life on connections that receive no data (ACKs of what we send), so a
        clean close of a viewer is not mistaken for a timeout; expire stale decisions."""
        self._next_sweep = now + SWEEP_INTERVAL_S
        for entry in self._entries.values():
            if not isinstance(entry, _ConnEntry) or now - entry.perf_at < SWEEP_INTERVAL_S * 0.8:
                continue
            if not entry.snapshot(now):
                continue
            perf = entry.perf
            mark = perf.pktRecvACKTotal + perf.pktRecvNAKTotal + perf.pktRecvTotal
            if mark != entry.heard_mark:
                entry.heard_mark = mark
                entry.last_heard = now
        for state in self._listener_states:
            with state.lock:
                stale = [ns for ns, d in state.decisions.items() if now - d[1] > DECISION_TTL_S]
                for ns in stale:
                    del state.decisions[ns]
                expired = [k for k, (_, until) in state.recent_rejects.items() if until <= now]
                for key in expired:
                    del state.recent_rejects[key]

    # -- accepting and connecting

    def _accept(self, entry: _ListenerEntry, events: list[_Event]) -> None:
        # One srt_accept per readiness: the epoll is level-triggered, so a second waiting
        # caller is reported again, and libsrt logs an error for every srt_accept that finds
        # nothing.
        state = entry.state
        try:
            sock = entry.sock.accept(self._addr_buf)
        except SrtError as exc:
            _log.warning("SRT accept on port %d failed: %s", state.port, exc)
            return
        if sock is None:
            return
        with state.lock:
            context, _, discard = state.decisions.pop(sock.handle, (None, 0.0, False))
        listener = state.facade() if state.facade is not None else None
        if listener is None or state.closing:
            sock.close()
            return
        try:
            stream_id = sock.get_bytes(SockOpt.SRTO_STREAMID).decode("utf-8", "replace")
            conn = SrtConnection(
                sock,
                self,
                stream_id=stream_id,
                peer=unpack_sockaddr(self._addr_buf.raw),
                context=context,
                options=state.options,
            )
            self._poll(sock.handle, EpollOpt.SRT_EPOLL_IN | EpollOpt.SRT_EPOLL_ERR)
        except SrtError as exc:
            _log.warning("SRT accepted socket @%d unusable: %s", sock.handle, exc)
            sock.close()
            return
        self._own(sock, weakref.ref(conn))
        accepted = _ConnEntry(sock, conn, state.options, discard)
        self._entries[sock.handle] = accepted
        events.append((listener._feed_accepted, conn))
        if sock.state() != SockStatus.SRTS_CONNECTED:
            # libsrt raises no epoll event for a socket that broke before it was added (a caller
            # that hung up right after its handshake): read it now, so the break is seen and the
            # session ends instead of waiting for a shutdown.
            self._read(accepted, events)

    def _connected(self, entry: _ConnectingEntry, events: list[_Event]) -> None:
        status = entry.sock.state()
        if status == SockStatus.SRTS_CONNECTED:
            conn = SrtConnection(
                entry.sock,
                self,
                stream_id=entry.options.stream_id or "",
                peer=entry.peer,
                context=None,
                options=entry.options,
            )
            lib.epoll_update_usock(
                self._eid, entry.handle, EpollOpt.SRT_EPOLL_IN | EpollOpt.SRT_EPOLL_ERR
            )
            self._own(entry.sock, weakref.ref(conn))
            self._entries[entry.handle] = _ConnEntry(entry.sock, conn, entry.options)
            events.append((_settle, (entry.future, conn)))
        elif status in (SockStatus.SRTS_BROKEN, SockStatus.SRTS_CLOSED, SockStatus.SRTS_NONEXIST):
            exc = rejection(entry.sock.reject_reason(), op="srt_connect")
            self._forget(entry.handle)
            entry.sock.close()
            events.append((_settle, (entry.future, exc)))

    # -- commands (run on the I/O thread)

    def cmd_listen(
        self,
        state: ListenerState,
        addr: bytes,
        backlog: int,
        fut: asyncio.Future[None],
        events: list[_Event],
    ) -> None:
        """Create, configure, bind and start a listener with its callback; settle `fut`."""
        sock: SrtSocket | None = None
        try:
            sock = SrtSocket.create()
            self._own(sock, None)
            sock.apply(state.options, caller=False)
            sock.bind(addr)
            state.host, state.port = sock.sockname()
            token = listen_callback.register(state)
            check(
                lib.listen_callback(sock.handle, listen_callback.LISTEN_CALLBACK_C, token),
                "srt_listen_callback",
            )
            sock.listen(backlog)
            self._poll(sock.handle, EpollOpt.SRT_EPOLL_IN | EpollOpt.SRT_EPOLL_ERR)
        except SrtError as exc:
            if sock is not None:
                listen_callback.unregister(state)
                self._owned.pop(sock.handle, None)
                sock.close()
            events.append((_settle, (fut, exc)))
            return
        state.sock = sock
        self._listener_states.append(state)
        self._entries[sock.handle] = _ListenerEntry(sock, state)
        events.append((_settle, (fut, None)))

    def cmd_connect(
        self,
        addr: bytes,
        peer: tuple[str, int],
        options: SrtOptions,
        local: bytes | None,
        fut: asyncio.Future[SrtConnection],
        events: list[_Event],
    ) -> None:
        """Start a non-blocking srt_connect (from `local`, a packed sockaddr, when given);
        epoll reports success (OUT) or failure (ERR)."""
        sock: SrtSocket | None = None
        try:
            sock = SrtSocket.create()
            sock.apply(options, caller=True)
            if local is not None:
                sock.bind(local)
            # Subscribe before connecting: libsrt sets no event for a socket that has already
            # failed when it is added, so a fast rejection would never be reported.
            self._poll(sock.handle, EpollOpt.SRT_EPOLL_OUT | EpollOpt.SRT_EPOLL_ERR)
            sock.connect(addr)
        except SrtError as exc:
            if sock is not None:
                self._unpoll(sock.handle)
                sock.close()
            events.append((_settle, (fut, exc)))
            return
        self._own(sock, None)
        self._entries[sock.handle] = _ConnectingEntry(sock, fut, options, peer)

    def _cmd_close_socket(
        self, sock: SrtSocket, on_closed: Callable[[], None] | None, events: list[_Event]
    ) -> None:
        entry = self._entries.get(sock.handle)
        if isinstance(entry, _ConnEntry):
            self._draining.discard(entry)
        if sock.handle in self._owned:
            self._forget(sock.handle)
        sock.close()
        if on_closed is not None:
            events.append((on_closed, _NOARG))

    def _cmd_close_listener(
        self, state: ListenerState, on_closed: Callable[[], None] | None, events: list[_Event]
    ) -> None:
        sock = state.sock
        if sock is not None:
            self._forget(sock.handle)
            sock.close()  # waits for a listen callback in progress (it returns at once now)
        listen_callback.unregister(state)
        if state in self._listener_states:
            self._listener_states.remove(state)
        with state.lock:
            state.decisions.clear()
        if on_closed is not None:
            events.append((on_closed, _NOARG))

    def _shutdown(self, events: list[_Event]) -> None:
        """Children first: connections, then listeners, then the epoll, then srt_cleanup."""
        with self._cmd_lock:
            self._accepting = False
        self._run_commands(events)
        for state in self._listener_states:
            state.closing = True
        listeners = {e.handle for e in self._entries.values() if isinstance(e, _ListenerEntry)}
        for handle, (sock, ref) in list(self._owned.items()):
            if handle in listeners:
                continue
            entry = self._entries.get(handle)
            if isinstance(entry, _ConnectingEntry):
                events.append(
                    (
                        _settle,
                        (
                            entry.future,
                            SrtError(SrtErrno.SRT_ESCLOSED, "reactor closed", op="srt_connect"),
                        ),
                    )
                )
            self._forget(handle)
            sock.close()
            facade = ref() if ref is not None else None
            if facade is not None:
                events.append((facade._reactor_closed, _NOARG))
        for state in list(self._listener_states):
            facade = state.facade() if state.facade is not None else None
            self._cmd_close_listener(state, None, events)
            if facade is not None:
                events.append((facade._reactor_closed, _NOARG))
        self._draining.clear()
        self._polled.clear()
        lib.epoll_remove_ssock(self._eid, self._wake_r)
        lib.epoll_release(self._eid)
        os.close(self._wake_r)
        runtime.release()
