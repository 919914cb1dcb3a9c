"""Kernel names for the gateway's own threads, so that `top -H`, `ps -L`, perf and
`/proc/PID/task/TID/comm` say which thread spends the CPU (Python 3.11 names its threads only
for itself: every one shows as `python` to the kernel)."""

from __future__ import annotations

import ctypes
import sys

__all__ = ["name_this_thread"]

_PR_SET_NAME = 15
_MAX = 15  # the kernel keeps 15 bytes and a NUL


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` in the kernel (cut to 15 bytes). Does nothing off Linux
    or when prctl fails: a name is a diagnostic, never a reason to stop."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:_MAX]), 0, 0, 0)
    except (OSError, AttributeError):
        return
