"""`Usage`: the meter. Three plain counters the model bumps as content moves.

A producer-side meter (ingress) counts what is written once; a consumer-side meter (egress)
counts what that consumer read. The model increments the fields directly on the loop thread;
other threads may read them (ints are read atomically under the GIL) but never write them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Usage"]


@dataclass(slots=True)
class Usage:
    """Cumulative model payload counters: `groups`, `frames` and `bytes` (frame payload bytes).

    Owned by whoever attaches it (`BroadcastProducer.with_meter`, `BroadcastConsumer.with_meter`,
    a `StatsGuard`); the model only adds to it and never resets it. Not thread-safe for writers.
    """

    groups: int = 0
    frames: int = 0
    bytes: int = 0

    def add_group(self) -> None:
        """Count one group."""
        self.groups += 1

    def add_frame(self, nbytes: int) -> None:
        """Count one frame of `nbytes` payload bytes."""
        self.frames += 1
        self.bytes += nbytes

    def add(self, other: Usage) -> None:
        """Add every counter of `other` to this one."""
        self.groups += other.groups
        self.frames += other.frames
        self.bytes += other.bytes

    def copy(self) -> Usage:
        """Return an independent copy (a point-in-time reading)."""
        return Usage(self.groups, self.frames, self.bytes)
