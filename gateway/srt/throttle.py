"""Rate limits that keep a listener bounded whatever callers do (sans-I/O, explicit `now`).

`PeerRate` is a token bucket per peer host (the handshakes one address may start per second),
in a table whose size stays bounded however many addresses call; `LogThrottle` lets a flood of
identical events produce a bounded number of log lines, each saying how many it stood for.
Neither locks: the listen callback uses them under `ListenerState.lock`, the server on the loop.
Times are `time.monotonic()` seconds given by the caller.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

__all__ = ["DEFAULT_MAX_PEERS", "LogThrottle", "PeerRate"]

DEFAULT_MAX_PEERS: Final = 16_384
"""Peer hosts a `PeerRate` tracks at most (about 150 bytes each): past it the longest-idle is
forgotten first, which can only be lenient to that host."""


class PeerRate:
    """Handshakes per peer host: `rate_per_s` a second sustained, bursts of `burst`.

    `allow(host, now)` spends one token of `host`'s bucket (False when empty). A bucket that
    has refilled completely is the same as no bucket, so those are dropped every refill period;
    the table holds at most `max_peers` hosts (the least recently seen go first).
    """

    def __init__(
        self, rate_per_s: float, burst: float, *, max_peers: int = DEFAULT_MAX_PEERS
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate_per_s must be positive, burst at least 1, max_peers >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_peers = max_peers
        self._refill_s = burst / rate_per_s
        # host -> (tokens, at); insertion order is recency: a host seen again moves to the end.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._next_prune = 0.0

    def __len__(self) -> int:
        """Hosts currently tracked."""
        return len(self._buckets)

    def allow(self, host: str, now: float) -> bool:
        """Spend one of `host`'s tokens at `now`; False (nothing spent) when it has none."""
        if now >= self._next_prune:
            self.prune(now)
        bucket = self._buckets.pop(host, None)
        if bucket is None:
            tokens = self.burst
        else:
            tokens = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self._max_peers:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[host] = (tokens, now)
        return allowed

    def prune(self, now: float) -> None:
        """Forget hosts whose bucket is full again at `now` (called by `allow` once per refill
        period; O(hosts))."""
        self._next_prune = now + self._refill_s
        full = [
            host
            for host, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate_per_s >= self.burst
        ]
        for host in full:
            del self._buckets[host]


class LogThrottle:
    """Bounds the log lines of repeated events: per key, `burst` lines per `interval_s`.

    `allow(key, now)` returns None when this event's line must be left out, else the number
    of events left out for `key` since its last line (put it in the line: `suppressed=N`).
    Keys should come from a small set (a reason or a code); at most `max_keys` are kept.
    """

    def __init__(self, interval_s: float, burst: int = 1, *, max_keys: int = 256) -> None:
        if interval_s <= 0 or burst < 1:
            raise ValueError("interval_s must be positive and burst at least 1")
        self._interval_s = interval_s
        self._burst = burst
        self._max_keys = max_keys
        # key -> [window start, lines in the window, events left out since the last line]
        self._keys: dict[Hashable, list[float]] = {}

    def allow(self, key: Hashable, now: float) -> int | None:
        """None to leave this event's line out; else how many were left out before it."""
        slot = self._keys.get(key)
        if slot is None:
            if len(self._keys) >= self._max_keys:
                del self._keys[next(iter(self._keys))]
            slot = self._keys[key] = [now, 0.0, 0.0]
        if now - slot[0] >= self._interval_s:
            slot[0], slot[1] = now, 0.0
        if slot[1] >= self._burst:
            slot[2] += 1
            return None
        slot[1] += 1
        suppressed = int(slot[2])
        slot[2] = 0.0
        return suppressed
