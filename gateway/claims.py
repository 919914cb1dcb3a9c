"""Path claims: which publisher of this server holds which model path (sans-I/O, explicit `now`).

A claim is pending from the publisher's handshake until its connection surfaces (it may
expire meanwhile, and expired ones are pruned), then active until that publisher's session
ends and releases it. The
server (`gateway.server`) refuses a second publisher on a claimed path with 1409 under
`PublisherPolicy.REJECT`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.publish import Publish

__all__ = ["Claim", "PathClaims"]


@dataclass(slots=True, eq=False)
class Claim:
    """A path held by one publisher: pending between handshake and accept, then active until
    that publisher's session ends.

    libsrt may still fail a handshake after our callback accepted it (a wrong or missing
    passphrase), and we are not told; so a pending claim expires after `claim_timeout_s`, and
    a new caller from the same host replaces a pending claim at once (an encoder retrying with
    the right passphrase must not see 1409 for its own failed attempt).
    """

    path: str
    expires_at: float | None
    host: str = ""
    owner: Publish | None = None

    def live(self, now: float) -> bool:
        """True while the claim holds its path (active, or pending and not expired)."""
        return self.expires_at is None or self.expires_at > now

    def blocks(self, host: str, now: float) -> bool:
        """True when this claim refuses a new publisher from `host` at time `now`."""
        if not self.live(now):
            return False
        return self.expires_at is None or host != self.host


class PathClaims:
    """The claims of one server, by path (at most one per path; the latest wins).

    `pending_timeout_s` is how long a pending claim lives (`ServerConfig.claim_timeout_s`).
    Times are `time.monotonic()` seconds given by the caller.
    """

    def __init__(self, pending_timeout_s: float) -> None:
        self._pending_timeout_s = pending_timeout_s
        self._claims: dict[str, Claim] = {}
        self._next_prune = 0.0

    def __len__(self) -> int:
        """Claims held, expired pending ones not yet pruned included."""
        return len(self._claims)

    def prune(self, now: float) -> None:
        """Drop pending claims expired at `now` (handshakes libsrt failed after the callback,
        e.g. a wrong passphrase): `claim` calls it at most once per pending timeout, so the
        table holds the active claims plus those made in the last two timeouts."""
        self._next_prune = now + self._pending_timeout_s
        expired = [path for path, claim in self._claims.items() if not claim.live(now)]
        for path in expired:
            del self._claims[path]

    def blocks(self, path: str, host: str, now: float) -> bool:
        """True when a claim on `path` refuses a new publisher from `host` at `now`."""
        claim = self._claims.get(path)
        return claim is not None and claim.blocks(host, now)

    def claim(self, path: str, *, pending: bool, now: float, host: str = "") -> Claim:
        """Claim `path` (replacing any claim on it): pending ones expire, active ones do not."""
        if now >= self._next_prune:
            self.prune(now)
        expires = now + self._pending_timeout_s if pending else None
        claim = Claim(path=path, expires_at=expires, host=host)
        self._claims[path] = claim
        return claim

    def holds(self, claim: Claim) -> bool:
        """True while `claim` is still the claim on its path (not replaced nor released)."""
        return self._claims.get(claim.path) is claim

    def activate(self, claim: Claim, now: float) -> bool:
        """Make a pending `claim` active (its publisher's connection surfaced at `now`).

        False when another claim took its path meanwhile (the claim had expired). A claim
        that expired and was pruned while its path stayed free is put back.
        """
        current = self._claims.get(claim.path)
        if current is not claim:
            if current is not None and current.live(now):
                return False
            self._claims[claim.path] = claim
        claim.expires_at = None
        return True

    def get(self, path: str) -> Claim | None:
        """The claim on `path`, if any (expired pending ones included)."""
        return self._claims.get(path)

    def release(self, claim: Claim | None) -> None:
        """Drop `claim` if it still holds its path (None and stale claims are ignored)."""
        if claim is not None and self._claims.get(claim.path) is claim:
            del self._claims[claim.path]

    def clear(self) -> None:
        """Drop every claim (the server is closing)."""
        self._claims.clear()
