"""Per-publisher input cap: a token bucket over received bytes (sans-I/O, explicit `now`)."""

from __future__ import annotations

from typing import Final

__all__ = ["PUBLISH_BURST_S", "RateCap"]

PUBLISH_BURST_S: Final = 2.0
"""Seconds of `publish_cap_bps` a publisher may send at once above the sustained rate."""


class RateCap:
    """A token bucket over received bytes: `rate_bps` bits per second sustained, with a burst
    of `burst_s` seconds at that rate. Sans-I/O: the caller passes `now` (seconds)."""

    def __init__(self, rate_bps: int, burst_s: float, now: float) -> None:
        if rate_bps <= 0 or burst_s <= 0:
            raise ValueError("rate_bps and burst_s must be positive")
        self._rate_bytes_s = rate_bps / 8
        self._capacity = self._rate_bytes_s * burst_s
        self._tokens = self._capacity
        self._at = now

    def take(self, nbytes: int, now: float) -> bool:
        """Account `nbytes` received at `now`; False once the publisher is over the cap."""
        elapsed = max(0.0, now - self._at)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate_bytes_s)
        self._at = now
        self._tokens -= nbytes
        return self._tokens >= 0
