"""Session limits: how many sessions the server holds in all and per peer host (sans-I/O,
explicit `now`).

The server (`gateway.server`) asks `SessionSlots.refusal` at handshake time and refuses a
caller over a limit with 1402 (SRT_REJX_OVERLOAD); an accepted caller takes a `Slot`, pending
until its connection surfaces (libsrt may still fail the handshake, e.g. a wrong passphrase,
so a pending slot expires), then held until its session ends and releases it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["HANDSHAKE_BURST_S", "SessionSlots", "Slot"]

HANDSHAKE_BURST_S: Final = 2.0
"""Seconds of `max_peer_handshakes_per_s` one host may start at once (its bucket's size)."""


@dataclass(slots=True, eq=False)
class Slot:
    """One session's place in the limits: pending (with `expires_at`) or held (None)."""

    host: str
    expires_at: float | None
    counted: bool = True


class SessionSlots:
    """Counts sessions, in all and per peer host, against `max_sessions` / `max_per_host`
    (None: no limit). A pending slot counts until `pending_timeout_s` after its handshake.

    The tables hold one entry per live slot and per host with a live slot, nothing else.
    """

    def __init__(
        self, max_sessions: int | None, max_per_host: int | None, pending_timeout_s: float
    ) -> None:
        self.max_sessions = max_sessions
        self.max_per_host = max_per_host
        self._pending_timeout_s = pending_timeout_s
        self._total = 0
        self._per_host: dict[str, int] = {}
        # Pending slots in expiry order (one timeout for all): pruned from the front.
        self._pending: dict[Slot, None] = {}

    @property
    def total(self) -> int:
        """Slots counted now (held and pending)."""
        return self._total

    def hosts(self) -> int:
        """Hosts with at least one slot counted."""
        return len(self._per_host)

    def count(self, host: str) -> int:
        """Slots counted for `host`."""
        return self._per_host.get(host, 0)

    def refusal(self, host: str, now: float) -> str | None:
        """Why a new session from `host` at `now` is over a limit, or None when it is not."""
        self.prune(now)
        if self.max_sessions is not None and self._total >= self.max_sessions:
            return f"{self._total} sessions, the server's limit"
        held = self._per_host.get(host, 0)
        if self.max_per_host is not None and held >= self.max_per_host:
            return f"{held} sessions from this address, the limit per address"
        return None

    def reserve(self, host: str, now: float) -> Slot:
        """Count a pending session for `host` (check `refusal` first)."""
        slot = Slot(host=host, expires_at=now + self._pending_timeout_s)
        self._pending[slot] = None
        self._add(host)
        return slot

    def hold(self, slot: Slot) -> None:
        """The slot's connection surfaced: it counts until `release`, whenever that is (a slot
        that expired meanwhile is counted again)."""
        self._pending.pop(slot, None)
        slot.expires_at = None
        if not slot.counted:
            slot.counted = True
            self._add(slot.host)

    def release(self, slot: Slot | None) -> None:
        """The session ended (None and released slots are ignored)."""
        if slot is None or not slot.counted:
            return
        self._pending.pop(slot, None)
        self._drop(slot)

    def _add(self, host: str) -> None:
        self._total += 1
        self._per_host[host] = self._per_host.get(host, 0) + 1

    def _drop(self, slot: Slot) -> None:
        slot.counted = False
        self._total -= 1
        left = self._per_host[slot.host] - 1
        if left:
            self._per_host[slot.host] = left
        else:
            del self._per_host[slot.host]

    def prune(self, now: float) -> None:
        """Stop counting pending slots expired at `now` (`refusal` calls it)."""
        pending = self._pending
        while pending:
            slot = next(iter(pending))
            if slot.expires_at is None or slot.expires_at > now:
                return
            del pending[slot]
            self._drop(slot)
