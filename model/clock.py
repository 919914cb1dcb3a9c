"""The model's only source of time: an injected `Clock`, monotonic seconds.

Producers, the origin and the cache pool take `clock=`; tests pass a `ManualClock` and move it
explicitly, so age-based expiry is deterministic. Nothing in the model sleeps or arms timers:
time is read when something is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "monotonic"]

Clock = Callable[[], float]
"""A function returning monotonic time in seconds (float). Default: `time.monotonic`."""

monotonic: Clock = time.monotonic
"""The default clock, `time.monotonic`."""


class ManualClock:
    """A clock that only moves when told to (for tests and simulations).

    Call the instance to read it (seconds); `advance(seconds)` moves it forward.
    """

    __slots__ = ("now_s",)

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        """Return the current time in seconds."""
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (>= 0); raises `ValueError` when negative."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now_s += seconds
