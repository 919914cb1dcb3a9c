"""The SRT reactor: one I/O thread around `srt_epoll_wait` feeding the asyncio loop in batches.

The I/O thread owns every libsrt call that can block on a lock libsrt holds while a listen
callback runs (srt_listen, srt_connect, srt_close, srt_cleanup); the loop thread only queues
commands for it (a deque plus a wake-up pipe) and makes non-blocking calls (srt_sendmsg2,
srt_bstats). Each wake-up drains every ready socket and hands all of it to the loop in ONE
`call_soon_threadsafe` (coalesced while the loop has not run the previous one). libsrt's
listen callback (its receiver thread) asks the async handshake hook on the loop and waits a
bounded time. `aclose()` closes connections, then listeners, then the epoll, then srt_cleanup.

Limit (libsrt's design): the listen callback runs on the receiver thread of the listener's
UDP port, so while a hook runs no packet for that port is processed, the listener's own
connections included; they wait in the kernel's UDP buffer (SRTO_RCVBUF, capped by
net.core.rmem_max). Measured: a 1.5 s hook left a 1.4 s gap, no loss, in an 8 Mbit/s stream
on the same port; other ports, the I/O thread and the loop never wait. A refused caller's
handshake retransmissions are answered from memory, so one slow caller stalls a port once.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import itertools
import logging
import os
import socket
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Self

from gateway.srt import lib
from gateway.srt.errors import SrtConnectionLost, SrtError, check, error_from_last, rejection
from gateway.srt.lib import EpollOpt, LogLevel, SockOpt, SockStatus, SrtErrno
from gateway.srt.sockets import (
    SOCKADDR_BUF_BYTES,
    Accept,
    HandshakeHook,
    HandshakeInfo,
    LinkStats,
    Reject,
    SrtConnection,
    SrtListener,
    SrtOptions,
    SrtSocket,
    _ListenerState,
    pack_sockaddr,
    unpack_sockaddr,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["ReactorCounters", "SrtReactor", "set_libsrt_log_level"]

_log = logging.getLogger("moqsrt.srt")
#: libsrt's own log lines (routed by srt_setloghandler).
libsrt_log = logging.getLogger("moqsrt.libsrt")

#: Reject codes the listen callback uses on its own (srt/access_control.h).
REJ_UNAVAILABLE: Final = 1503
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
DECISION_TTL_S: Final = 30.0
#: How long a refused caller's handshake retransmissions get the same answer without asking
#: the hook again: past a caller's default 3 s connect timeout.
REJECT_MEMORY_S: Final = 5.0

_Event = tuple[Callable[..., None], Any]
_NOARG: Final = object()


# ---- libsrt runtime: startup/cleanup refcount and log routing --------------------------------

_PY_LEVELS: Final = {
    LogLevel.LOG_CRIT: logging.CRITICAL,
    LogLevel.LOG_ERR: logging.ERROR,
    LogLevel.LOG_WARNING: logging.WARNING,
    LogLevel.LOG_NOTICE: logging.INFO,
    6: logging.INFO,
    LogLevel.LOG_DEBUG: logging.DEBUG,
}


def _on_libsrt_log(
    _opaque: int | None,
    level: int,
    file: bytes | None,
    line: int,
    area: bytes | None,
    message: bytes | None,
) -> None:
    """srt_setloghandler target, on any libsrt thread: one record on `moqsrt.libsrt`."""
    try:
        py_level = _PY_LEVELS.get(level, logging.WARNING)
        if not libsrt_log.isEnabledFor(py_level):
            return
        text = message.decode("utf-8", "replace").strip() if message else ""
        libsrt_log.log(
            py_level,
            "%s",
            text,
            extra={
                "srt_area": area.decode("ascii", "replace") if area else "",
                "srt_file": file.decode("ascii", "replace") if file else "",
                "srt_line": line,
            },
        )
    except BaseException:  # noqa: BLE001 - an exception must never unwind into libsrt's thread
        return


# Module-level so the C side can call it for the whole process lifetime.
_LOG_HANDLER_C: Final = lib.LOG_HANDLER(_on_libsrt_log)

_runtime_lock = threading.Lock()
_runtime_users = 0
_process_exiting = False


def set_libsrt_log_level(level: int) -> None:
    """Let libsrt produce messages at Python logging `level` and above (default WARNING).

    libsrt's debug output is very chatty; below INFO it costs real CPU on busy links.
    """
    if level >= logging.CRITICAL:
        srt_level = LogLevel.LOG_CRIT
    elif level >= logging.ERROR:
        srt_level = LogLevel.LOG_ERR
    elif level >= logging.WARNING:
        srt_level = LogLevel.LOG_WARNING
    elif level >= logging.INFO:
        srt_level = LogLevel.LOG_NOTICE
    else:
        srt_level = LogLevel.LOG_DEBUG
    lib.load()
    lib.setloglevel(srt_level)


def _runtime_acquire() -> None:
    """srt_startup once (first reactor), with logging routed to `moqsrt.libsrt`."""
    global _runtime_users
    with _runtime_lock:
        if _runtime_users == 0:
            lib.load()
            lib.setlogflags(lib.SRT_LOGF_ALL_DISABLED)
            lib.setloghandler(_LOG_HANDLER_C)
            lib.setloglevel(LogLevel.LOG_WARNING)
            if lib.startup() < 0:
                raise error_from_last("srt_startup")
        _runtime_users += 1


def _runtime_release() -> None:
    """srt_cleanup once the last reactor is closed."""
    global _runtime_users
    with _runtime_lock:
        if _runtime_users <= 0:
            return
        _runtime_users -= 1
        if _runtime_users == 0:
            lib.cleanup()


@atexit.register
def _at_exit() -> None:
    # A reactor nobody closed: stop its thread's loop and let srt_cleanup close the rest,
    # so no libsrt thread calls back into a finalizing interpreter.
    global _runtime_users, _process_exiting
    _process_exiting = True
    with _runtime_lock:
        if _runtime_users > 0:
            _runtime_users = 0
            lib.setloglevel(LogLevel.LOG_CRIT)
            lib.cleanup()


# ---- the listen callback (libsrt's receiver thread) ------------------------------------------

_listeners: dict[int, _ListenerState] = {}
_listeners_lock = threading.Lock()
_tokens = itertools.count(1)


def _reject(ns: int, code: int) -> int:
    lib.setrejectreason(ns, code)
    return -1


async def _run_hook(hook: HandshakeHook, info: HandshakeInfo) -> Accept | Reject:
    return await hook(info)


def _on_listen(
    opaque: int | None, ns: int, hsversion: int, peeraddr: int | None, streamid: bytes | None
) -> int:
    """srt_listen_callback target: 0 lets the caller in, -1 rejects it (reason already set).

    Runs on libsrt's receiver thread while it holds that port's listener lock and processes
    no other packet, so it waits for the hook at most `hook_timeout_s`. Never raises.
    """
    try:
        with _listeners_lock:
            state = _listeners.get(opaque or 0)
        if state is None:
            return _reject(ns, REJ_UNAVAILABLE)
        return _decide(state, ns, peeraddr, streamid)
    except BaseException:  # noqa: BLE001 - nothing may unwind into libsrt; reject instead
        with contextlib.suppress(BaseException):
            _log.exception("SRT listen callback failed; rejecting with %d", REJ_UNAVAILABLE)
        try:
            return _reject(ns, REJ_UNAVAILABLE)
        except BaseException:  # noqa: BLE001 - same reason
            return -1


def _closing(state: _ListenerState) -> bool:
    return state.closing


def _remember_reject(state: _ListenerState, key: tuple[tuple[str, int], str], code: int) -> int:
    with state.lock:
        state.recent_rejects[key] = (code, time.monotonic() + REJECT_MEMORY_S)
    return code


def _decide(state: _ListenerState, ns: int, peeraddr: int | None, streamid: bytes | None) -> int:
    if state.closing:
        return _reject(ns, REJ_UNAVAILABLE)
    peer = unpack_sockaddr(ctypes.string_at(peeraddr, 28)) if peeraddr else ("", 0)
    # The stream id comes from the callback's argument: libsrt 1.5.1 copies it into the new
    # socket's SRTO_STREAMID only after the callback (it reads back empty here).
    info = HandshakeInfo(stream_id=(streamid or b"").decode("utf-8", "replace"), peer=peer)
    key = (peer, info.stream_id)
    # A caller resends its conclusion handshake every 250 ms while we think; those copies
    # queue up and each would run (and wait for) the hook again, stalling the port many
    # times over. A refused caller's copies get the same answer at once.
    with state.lock:
        remembered = state.recent_rejects.get(key)
    if remembered is not None and remembered[1] > time.monotonic():
        return _reject(ns, remembered[0])
    code = _ask_hook(state, ns, info, key)
    return _reject(ns, code) if code else 0


def _ask_hook(
    state: _ListenerState, ns: int, info: HandshakeInfo, key: tuple[tuple[str, int], str]
) -> int:
    """Run the hook and apply an Accept; the reject code to use, or 0 when accepted."""
    peer = info.peer
    try:
        fut = asyncio.run_coroutine_threadsafe(_run_hook(state.on_handshake, info), state.loop)
    except RuntimeError:  # the loop is closed
        return REJ_UNAVAILABLE
    with state.lock:
        state.pending_hooks.add(fut)
    if _closing(state):  # close_listener() may have run since the check above
        fut.cancel()
    try:
        decision: object = fut.result(timeout=state.hook_timeout_s)
    except TimeoutError:
        fut.cancel()
        _log.warning(
            "SRT handshake hook for %r from %s:%d took over %.1f s; rejecting with %d",
            info.stream_id,
            *peer,
            state.hook_timeout_s,
            REJ_UNAVAILABLE,
        )
        return _remember_reject(state, key, REJ_UNAVAILABLE)
    except concurrent.futures.CancelledError:
        return REJ_UNAVAILABLE
    except Exception:  # noqa: BLE001 - any hook failure is a 1503 for the caller, logged
        _log.warning(
            "SRT handshake hook for %r from %s:%d raised; rejecting with %d",
            info.stream_id,
            *peer,
            REJ_UNAVAILABLE,
            exc_info=True,
        )
        return _remember_reject(state, key, REJ_UNAVAILABLE)
    finally:
        with state.lock:
            state.pending_hooks.discard(fut)
    if isinstance(decision, Reject):
        return _remember_reject(state, key, decision.code)
    if not isinstance(decision, Accept):
        _log.error("SRT handshake hook returned %r, not Accept or Reject", decision)
        return _remember_reject(state, key, REJ_UNAVAILABLE)
    if decision.passphrase is not None:
        pbkeylen = decision.pbkeylen or state.options.pbkeylen
        try:
            check(
                lib.setsockflag(ns, SockOpt.SRTO_PBKEYLEN, ctypes.c_int(pbkeylen)),
                "srt_setsockflag(SRTO_PBKEYLEN)",
            )
            check(
                lib.setsockflag_bytes(ns, SockOpt.SRTO_PASSPHRASE, decision.passphrase.encode()),
                "srt_setsockflag(SRTO_PASSPHRASE)",
            )
        except SrtError:
            _log.exception("cannot set the passphrase on @%d; rejecting with 1500", ns)
            return 1500
    with state.lock:
        state.decisions[ns] = (decision.context, time.monotonic())
    return 0


_LISTEN_CALLBACK_C: Final = lib.LISTEN_CALLBACK(_on_listen)


# ---- the I/O thread --------------------------------------------------------------------------


class _ConnEntry:
    """A connected socket the I/O thread reads (I/O thread only)."""

    __slots__ = (
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

    def __init__(self, sock: SrtSocket, conn: SrtConnection, options: SrtOptions) -> None:
        self.sock = sock
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

    def __init__(self, sock: SrtSocket, state: _ListenerState) -> None:
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


class _IoCore:
    """The thread, its epoll and every socket it owns; never refers to the SrtReactor facade."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, wait_ms: int, batch_window_ms: float
    ) -> None:
        _runtime_acquire()
        self._loop = loop
        self._wait_ms = wait_ms
        self._batch_window_s = batch_window_ms / 1000
        self._orphaned = False  # the facade was garbage-collected unclosed
        try:
            self._eid = check(lib.epoll_create(), "srt_epoll_create")
        except SrtError:
            _runtime_release()
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
            _runtime_release()
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
        self._listener_states: list[_ListenerState] = []
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

    def close_listener(self, state: _ListenerState, on_closed: Callable[[], None] | None) -> None:
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
        while not self._stopping and not _process_exiting:
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
            self.bytes += sum(map(len, msgs))
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
                stale = [ns for ns, (_, t) in state.decisions.items() if now - t > DECISION_TTL_S]
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
            context = state.decisions.pop(sock.handle, (None, 0.0))[0]
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
        self._entries[sock.handle] = _ConnEntry(sock, conn, state.options)
        events.append((listener._feed_accepted, conn))

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
        state: _ListenerState,
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
            state.token = next(_tokens)
            with _listeners_lock:
                _listeners[state.token] = state
            check(
                lib.listen_callback(sock.handle, _LISTEN_CALLBACK_C, state.token),
                "srt_listen_callback",
            )
            sock.listen(backlog)
            self._poll(sock.handle, EpollOpt.SRT_EPOLL_IN | EpollOpt.SRT_EPOLL_ERR)
        except SrtError as exc:
            if sock is not None:
                with _listeners_lock:
                    _listeners.pop(state.token, None)
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
            sock.connect(addr)
            self._poll(sock.handle, EpollOpt.SRT_EPOLL_OUT | EpollOpt.SRT_EPOLL_ERR)
        except SrtError as exc:
            if sock is not None:
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
        self, state: _ListenerState, on_closed: Callable[[], None] | None, events: list[_Event]
    ) -> None:
        sock = state.sock
        if sock is not None:
            self._forget(sock.handle)
            sock.close()  # waits for a listen callback in progress (it returns at once now)
        with _listeners_lock:
            _listeners.pop(state.token, None)
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
        _runtime_release()


def _finalize_reactor(core: _IoCore) -> None:
    warnings.warn("unclosed SrtReactor", ResourceWarning, stacklevel=1)
    core.orphan()


# ---- the facade ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactorCounters:
    """What the I/O thread did so far.

    `wakeups`: srt_epoll_wait returns with a socket ready; `loop_calls`: call_soon_threadsafe
    calls made (one per wake-up at most, fewer when coalesced); `messages` / `bytes`: payload
    received from all sockets; `sockets`: sockets the reactor owns now (listeners included).
    """

    wakeups: int
    loop_calls: int
    messages: int
    bytes: int
    sockets: int


class SrtReactor:
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
        self._core = _IoCore(self._loop, wait_ms, batch_window_ms)
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
    ) -> SrtListener:
        """Listen on (host, port) (port 0 = any free port, see `SrtListener.port`).

        Every caller's handshake runs `await on_handshake(HandshakeInfo)` on this loop: Accept
        lets it in (optionally with its own passphrase), Reject(code) refuses it with that
        code. A hook that raises or takes over `hook_timeout_s` (default: the reactor's) is
        refused with 1503. While a hook runs, libsrt processes no other packet arriving on
        this port (see the module docs), so keep hooks fast. Raises SrtError (e.g.
        SRT_EDUPLISTEN / bind errors) with libsrt's message; the caller closes the listener.
        """
        self._check_open("srt_listen")
        addr, _ = await self._resolve(host, port)
        state = _ListenerState(
            options=options if options is not None else SrtOptions(),
            on_handshake=on_handshake,
            hook_timeout_s=self._hook_timeout_s if hook_timeout_s is None else hook_timeout_s,
            loop=self._loop,
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
