"""libsrt's listen callback: decides each caller on libsrt's receiver thread, before its
handshake completes, by asking the listener's async hook on the event loop (bounded wait).

`register(state)` makes a listener known to the callback under a token (the callback's
opaque argument); `unregister(state)` forgets it, after which its callers get 1503. The
callback never raises into libsrt: any failure rejects. A caller is refused without asking
the hook when it retransmits a handshake already refused (from memory) or when its address
is over the listener's handshake rate (`ListenerState.handshake_rate`). See
`gateway.srt.iothread` for the cost of a slow hook to the listener's port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import itertools
import logging
import threading
import time
from typing import Final

from gateway.srt import lib
from gateway.srt.addresses import unpack_sockaddr
from gateway.srt.errors import SrtError, check
from gateway.srt.lib import SockOpt
from gateway.srt.listener import MAX_DECISIONS, MAX_RECENT_REJECTS, ListenerState
from gateway.srt.values import Accept, HandshakeHook, HandshakeInfo, Reject

__all__ = ["LISTEN_CALLBACK_C", "REJ_UNAVAILABLE", "register", "unregister"]

_log = logging.getLogger("moqsrt.srt")

#: Reject codes the listen callback uses on its own (srt/access_control.h).
REJ_UNAVAILABLE: Final = 1503
#: How long a refused caller's handshake retransmissions get the same answer without asking
#: the hook again: past a caller's default 3 s connect timeout.
REJECT_MEMORY_S: Final = 5.0

_listeners: dict[int, ListenerState] = {}
_listeners_lock = threading.Lock()
_tokens = itertools.count(1)


def register(state: ListenerState) -> int:
    """Give `state` a fresh token (stored in `state.token`, returned) the callback finds it by."""
    state.token = next(_tokens)
    with _listeners_lock:
        _listeners[state.token] = state
    return state.token


def unregister(state: ListenerState) -> None:
    """Forget `state`: its callers are refused with 1503 from now on (idempotent)."""
    with _listeners_lock:
        _listeners.pop(state.token, None)


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


def _closing(state: ListenerState) -> bool:
    return state.closing


def _remember_reject(state: ListenerState, key: tuple[tuple[str, int], str], code: int) -> int:
    with state.lock:
        memory = state.recent_rejects
        memory.pop(key, None)
        if len(memory) >= MAX_RECENT_REJECTS:
            del memory[next(iter(memory))]  # the oldest: its caller is asked again, no harm
        memory[key] = (code, time.monotonic() + REJECT_MEMORY_S)
    return code


def _over_rate(state: ListenerState, host: str) -> bool:
    """True when `host` started more handshakes than `state.handshake_rate` allows (counted,
    and logged at most once per RATE_LOG_INTERVAL_S with the number left out)."""
    rate = state.handshake_rate
    if rate is None:
        return False
    now = time.monotonic()
    with state.lock:
        if rate.allow(host, now):
            return False
        state.rate_refused += 1
        suppressed = state.rate_log.allow("rate", now)
    if suppressed is not None:
        _log.warning(
            "SRT handshakes from %s over %g/s (bursts of %g): refusing with %d "
            "(%d more refused for their rate since the last such line)",
            host,
            rate.rate_per_s,
            rate.burst,
            state.rate_reject_code,
            suppressed,
        )
    return True


def _decide(state: ListenerState, ns: int, peeraddr: int | None, streamid: bytes | None) -> int:
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
    # Before the hook: a flood from one address costs a token check, never a loop round trip.
    if _over_rate(state, peer[0]):
        return _reject(ns, state.rate_reject_code)
    code = _ask_hook(state, ns, info, key)
    return _reject(ns, code) if code else 0


def _ask_hook(
    state: ListenerState, ns: int, info: HandshakeInfo, key: tuple[tuple[str, int], str]
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
            "SRT handshake hook for a caller from %s:%d took over %.1f s; rejecting with %d",
            *peer,
            state.hook_timeout_s,
            REJ_UNAVAILABLE,
        )
        return _remember_reject(state, key, REJ_UNAVAILABLE)
    except concurrent.futures.CancelledError:
        return REJ_UNAVAILABLE
    except Exception:  # noqa: BLE001 - any hook failure is a 1503 for the caller, logged
        _log.warning(
            "SRT handshake hook for a caller from %s:%d raised; rejecting with %d",
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
        decisions = state.decisions
        if len(decisions) >= MAX_DECISIONS:
            # Only under a flood of handshakes libsrt fails after this callback: the oldest
            # such caller, if it ever reaches srt_accept, is closed for want of a decision.
            del decisions[next(iter(decisions))]
        decisions[ns] = (decision.context, time.monotonic(), decision.discard_input)
    return 0


LISTEN_CALLBACK_C: Final = lib.LISTEN_CALLBACK(_on_listen)
"""The C function pointer given to srt_listen_callback (referenced for the process lifetime)."""
