"""`--upstream`: publish every broadcast of the origin to a MoQ relay, and keep doing it.

`Upstream(url, origin, stats=stats).run()` connects as a MoQ client (`client.connect`), serves
the origin to the relay (which asks with its own ANNOUNCE_REQUEST and subscribes to what it
wants), and when the relay goes away (connection closed, idle timeout, refused) retries with
exponential backoff; a new session re-announces whatever is live then. What the relay reads is
metered as egress under tier `internal` (one `StatsGuard` per path and connection, closed when
the connection ends), so it never lands on a customer's bill.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Final

import structlog

from gateway.moq.client import connect, parse_moq_url
from model import Origin, StatsGuard, StatsHandle, Usage

__all__ = ["UPSTREAM_TIER", "Upstream"]

UPSTREAM_TIER: Final = "internal"
"""The tier upstream traffic is metered under."""

_log = structlog.get_logger("moqsrt.moq.upstream")


class Upstream:
    """Keeps `origin` published to the relay at `url` (see the module docstring).

    `fingerprint`: hex SHA-256 of the relay's certificate to pin (else the system CAs).
    Backoff starts at `backoff_min_s`, doubles per failed attempt up to `backoff_max_s`, and
    starts over once a session lasted `stable_s`. `idle_timeout_s`: how long a silent relay
    has before the connection counts as gone. Run it with `run()` (until cancelled). Raises
    `ValueError` at construction for a bad URL.
    """

    def __init__(
        self,
        url: str,
        origin: Origin,
        *,
        stats: StatsHandle | None = None,
        fingerprint: str | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 10.0,
        stable_s: float = 10.0,
        idle_timeout_s: float = 5.0,
    ) -> None:
        self._url = url
        self.redacted_url = parse_moq_url(url).redacted
        """The relay URL without its query (safe to log)."""
        self._origin = origin
        self._stats = stats
        self._fingerprint = fingerprint
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._stable = stable_s
        self._idle_timeout = idle_timeout_s
        self.sessions = 0
        """Sessions established so far."""
        self.connected = asyncio.Event()
        """Set while a session with the relay is up."""

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff; forever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        delay = self._backoff_min
        while True:
            started = loop.time()
            try:
                await self._session()
            except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
                _log.warning("moq.upstream_failed", url=self.redacted_url, error=str(exc))
            if loop.time() - started >= self._stable:
                delay = self._backoff_min
            _log.info("moq.upstream_retry", url=self.redacted_url, in_s=round(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _session(self) -> None:
        viewer = f"upstream-{uuid.uuid4().hex[:12]}"
        guards: dict[str, StatsGuard] = {}
        stats = self._stats

        def meter_for(path: str) -> Usage | None:
            if stats is None:
                return None
            guard = guards.get(path)
            if guard is None:
                guard = guards[path] = stats.broadcast(path, UPSTREAM_TIER).egress(viewer)
            return guard.meter

        try:
            async with connect(
                self._url,
                origin=self._origin,
                meter_for=meter_for,
                fingerprint=self._fingerprint,
                idle_timeout_s=self._idle_timeout,
            ) as conn:
                self.sessions += 1
                self.connected.set()
                _log.info("moq.upstream_connected", url=self.redacted_url, session=viewer)
                await conn.wait_closed()
                _log.warning(
                    "moq.upstream_lost",
                    url=self.redacted_url,
                    code=conn.close_code,
                    reason=conn.close_reason[:200],
                )
        finally:
            self.connected.clear()
            for guard in guards.values():
                guard.close()
