"""`Subscribe`: a caller pulling MPEG-TS, sent from a broadcast of the model, metered as
egress for the caller as a viewer (`viewer_id`), until the broadcast ends or the caller leaves.

Viewers of one broadcast share one export (`gateway.egress.HubRegistry`); each has its own
`Sender`, which skips a slow viewer ahead to the next keyframe and bills only what libsrt
delivered; what was skipped or dropped goes in the session record beside the bill.
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.egress import Sender
from gateway.request import SessionRequest, format_peer
from gateway.session import Outcome, SessionRecord
from model import BroadcastConsumer, Origin, Role, normalize_path

__all__ = ["Subscribe", "viewer_id"]

_log = structlog.get_logger("moqsrt.srt.server")


def viewer_id(user: str, peer: tuple[str, int]) -> str:
    """Who watches, for the distinct-viewer count (`BroadcastStats.egress`): the stream id's
    user (`user:<name>`), so that a user's several or repeated sessions count once, or, when
    it names none, the caller's address (`peer:<host:port>`, the record's `peer`): nothing
    tells an anonymous caller's sessions apart from other callers behind the same host."""
    return f"user:{user}" if user else f"peer:{format_peer(peer)}"


class Subscribe(SessionRequest):
    """A caller pulling MPEG-TS (`m=request`, MediaMTX `read:`)."""

    role: Role = "egress"

    async def accept(self, origin: Origin, path: str | None = None) -> SessionRecord:
        """Send the broadcast at `path` (default: the requested path) from `origin` to the
        caller, metered as egress for (path, tier) with `viewer_id(user, peer)` as the viewer,
        until the broadcast ends or the caller leaves. The bill counts only what libsrt
        delivered; the record reports what was skipped or dropped beside it.

        Waits up to `request_timeout_s` for the broadcast to appear (a caller hanging up
        meanwhile ends the wait); past it the connection is closed (`outcome="timeout"`: the
        handshake had completed, so the caller sees a disconnect, not 1404). Output starts at
        a keyframe; a viewer whose link cannot keep up is skipped ahead to the next keyframe,
        never slowing the publisher or other viewers. Returns the session's record.
        """
        self._use()
        target = self.path if path is None else normalize_path(path)
        consumer: BroadcastConsumer | None = None
        outcome: Outcome = "eof"
        error = ""
        cancelled: asyncio.CancelledError | None = None
        try:
            consumer = await self._wait_for(origin, target)
            if consumer is None:
                outcome, error = "eof", "caller left before the broadcast appeared"
        except TimeoutError:
            outcome, error = "timeout", f"no broadcast at {target!r}"
        except asyncio.CancelledError as exc:
            cancelled, outcome, error = exc, "closed", "cancelled"
        if consumer is None:
            record = await self._end(path=target, outcome=outcome, error=error)
            if cancelled is not None:
                raise cancelled
            return record
        return await self._run(origin, consumer, target)

    async def _wait_for(self, origin: Origin, path: str) -> BroadcastConsumer | None:
        timeout = max(self._server.config.request_timeout_s, 0.0)
        announced = asyncio.ensure_future(origin.announced_broadcast(path))
        hangup = asyncio.ensure_future(self._conn.wait_closed())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({announced, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (announced, hangup):
                fut.cancel()
            await asyncio.gather(announced, hangup, return_exceptions=True)
        if announced.done() and not announced.cancelled() and announced.exception() is None:
            return announced.result()
        return None

    async def _run(self, origin: Origin, consumer: BroadcastConsumer, path: str) -> SessionRecord:
        server = self._server
        guard = server.stats.broadcast(path, self.tier).egress(
            viewer=viewer_id(self.user, self.peer)
        )
        _log.info(
            "srt.subscribe_started",
            session=self.session,
            path=path,
            tier=self.tier,
            peer=format_peer(self.peer),
        )
        self._metering(path, guard.meter)
        # One export per broadcast, shared by its viewers; each sender bills its own meter for
        # the model reads behind what libsrt delivered (gateway.egress, metering rule).
        sender = Sender(
            self._conn,
            latency_ms=server.config.latency_ms,
            send_buffer_limit_bytes=server.config.send_buffer_limit(),
            meter=guard.meter,
        )
        hub = server._hubs.attach((id(origin), path), consumer, sender)
        pump = asyncio.ensure_future(sender.run())
        hangup = asyncio.ensure_future(self._conn.wait_closed())
        outcome: Outcome = "eof"
        error = ""
        cancelled: asyncio.CancelledError | None = None
        try:
            await asyncio.wait({pump, hangup}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError as exc:
            cancelled = exc
        finally:
            for fut in (pump, hangup):
                fut.cancel()
            await asyncio.gather(pump, hangup, return_exceptions=True)
            await server._hubs.detach(hub, sender)
        if cancelled is not None:
            outcome, error = "closed", "cancelled"
        elif self._shutting_down:
            outcome, error = "closed", self._close_reason
        elif pump.done() and not pump.cancelled():
            failure = pump.exception()
            if failure is not None:
                outcome, error = "error", str(failure) or repr(failure)
            # The broadcast ended (or broke): let the caller receive the tail before closing.
            await sender.drain(server.config.drain_timeout_s)
        else:
            outcome, error = "eof", "caller left"
        sender.settle()  # what no drain confirmed counts as dropped, never billed
        usage = guard.meter.copy()
        guard.close()
        record = await self._end(
            path=path,
            outcome=outcome,
            error=error,
            usage=usage,
            ts_bytes=sender.ts_bytes,
            skipped=sender.skipped,
            skipped_ts_bytes=sender.skipped_ts_bytes,
            dropped=sender.dropped,
            dropped_ts_bytes=sender.dropped_ts_bytes,
        )
        if cancelled is not None:
            raise cancelled
        return record
