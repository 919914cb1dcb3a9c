"""libsrt's process-wide runtime: srt_startup when the first reactor opens, srt_cleanup when
the last one closes, and an atexit hook for reactors nobody closed.

`acquire()` / `release()` count the users under a lock; the first `acquire()` also routes
libsrt's log (`gateway.srt.liblog`). After `exiting()` turns True the I/O threads stop.
"""

from __future__ import annotations

import atexit
import threading

from gateway.srt import lib
from gateway.srt.errors import error_from_last
from gateway.srt.lib import LogLevel
from gateway.srt.liblog import LOG_HANDLER_C

__all__ = ["acquire", "exiting", "release"]

_lock = threading.Lock()
_users = 0
_process_exiting = False


def exiting() -> bool:
    """True once the interpreter is exiting (set by the atexit hook)."""
    return _process_exiting


def acquire() -> None:
    """srt_startup once (first reactor), with logging routed to `moqsrt.libsrt`. Raises
    OSError when libsrt is missing, SrtError when srt_startup fails."""
    global _users
    with _lock:
        if _users == 0:
            lib.load()
            lib.setlogflags(lib.SRT_LOGF_ALL_DISABLED)
            lib.setloghandler(LOG_HANDLER_C)
            lib.setloglevel(LogLevel.LOG_WARNING)
            if lib.startup() < 0:
                raise error_from_last("srt_startup")
        _users += 1


def release() -> None:
    """srt_cleanup once the last reactor is closed (extra calls do nothing)."""
    global _users
    with _lock:
        if _users <= 0:
            return
        _users -= 1
        if _users == 0:
            lib.cleanup()


@atexit.register
def _at_exit() -> None:
    # A reactor nobody closed: stop its thread's loop and let srt_cleanup close the rest,
    # so no libsrt thread calls back into a finalizing interpreter.
    global _users, _process_exiting
    _process_exiting = True
    with _lock:
        if _users > 0:
            _users = 0
            lib.setloglevel(LogLevel.LOG_CRIT)
            lib.cleanup()
