"""libsrt's log, routed into Python logging: every libsrt message becomes one record on the
`moqsrt.libsrt` logger (`gateway.srt.runtime` installs the handler at srt_startup).

`set_libsrt_log_level` chooses how much libsrt produces; the handler itself never raises into
libsrt's threads. libsrt logs several lines per failed handshake (a wrong passphrase: four), so
each of its source lines gets at most LOG_BURST records per LOG_INTERVAL_S; the next record
says how many were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Final

from gateway.srt import lib
from gateway.srt.lib import LogLevel
from gateway.srt.throttle import LogThrottle

__all__ = ["LOG_HANDLER_C", "libsrt_log", "set_libsrt_log_level"]

#: libsrt's own log lines (routed by srt_setloghandler).
libsrt_log = logging.getLogger("moqsrt.libsrt")

#: Records per libsrt source line (file, line) per interval, whatever callers do.
LOG_BURST: Final = 20
LOG_INTERVAL_S: Final = 10.0
_throttle = LogThrottle(LOG_INTERVAL_S, LOG_BURST, max_keys=1024)
_throttle_lock = threading.Lock()

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
        with _throttle_lock:
            suppressed = _throttle.allow((file, line), time.monotonic())
        if suppressed is None:
            return
        text = message.decode("utf-8", "replace").strip() if message else ""
        if suppressed:
            text = f"{text} ({suppressed} more from this line left out)"
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
# Module-level so the C side can call it for the whole process lifetime.
LOG_HANDLER_C: Final = lib.LOG_HANDLER(_on_libsrt_log)


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
