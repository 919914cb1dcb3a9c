"""`Publish`: a caller sending MPEG-TS, published into the model as one broadcast, metered as
ingress, until the caller disconnects.

The caller's SRT batches go straight to a `TsImporter` in the reactor's delivery (no task
wake-up per batch); a clean end finishes the broadcast, anything else aborts it. A publisher
over `ServerConfig.publish_cap_bps` (`gateway.ratecap`) is disconnected. The ingress guard
opens only once the origin accepted the broadcast. Problems the importer finds in the stream
are logged at a bounded rate (`ProblemReporter`) and counted in the session record.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Final

import structlog

from gateway.ratecap import PUBLISH_BURST_S, RateCap
from gateway.request import SessionRequest, format_peer
from gateway.session import Outcome, SessionRecord
from gateway.srt import SrtError
from model import (
    BroadcastProducer,
    Closed,
    Origin,
    PublishConflict,
    PublisherPolicy,
    Role,
    normalize_path,
)
from mux import TsImporter

__all__ = ["ProblemReporter", "Publish"]

_log = structlog.get_logger("moqsrt.srt.server")


class ProblemReporter:
    """Logs the problems an importer finds in one publisher's stream, at a bounded rate.

    Every `INTERVAL_S` (a loop timer, no work per batch) it takes the importer's new problems
    (`TsImporter.take_problems`, itself bounded) and logs up to `MAX_LINES` of them as
    `srt.publish_problem`, and the rest as one `srt.publish_problems_suppressed` line with a
    count per kind. `start()` arms the timer; `close()` (idempotent) disarms it and logs what
    is left the same way. The complete counts are the importer's `problem_counts`.
    """

    INTERVAL_S: Final = 1.0
    MAX_LINES: Final = 5

    def __init__(self, importer: TsImporter, *, session: str, path: str) -> None:
        self._importer = importer
        self._session = session
        self._path = path
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        """Report every `INTERVAL_S` from now on (on the running loop)."""
        if not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.INTERVAL_S, self._tick)

    def close(self) -> None:
        """Stop the timer and report the problems not reported yet."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.report()

    def report(self) -> None:
        """Log the problems found since the previous report (at most `MAX_LINES` lines, then
        one summary line)."""
        problems = self._importer.take_problems()
        for problem in problems[: self.MAX_LINES]:
            _log.warning(
                "srt.publish_problem",
                session=self._session,
                path=self._path,
                kind=problem.kind,
                message=problem.message,
            )
        rest = problems[self.MAX_LINES :]
        if rest:
            kinds = Counter(problem.kind for problem in rest)
            _log.warning(
                "srt.publish_problems_suppressed",
                session=self._session,
                path=self._path,
                suppressed=len(rest),
                kinds=dict(sorted(kinds.items())),
            )

    def _tick(self) -> None:
        self._timer = None
        self.report()
        self.start()


class _OverCap(Exception):
    """A publisher went over `publish_cap_bps` (ends its session with this message)."""


class Publish(SessionRequest):
    """A caller sending MPEG-TS (`m=publish`, OBS `app/key`, MediaMTX `publish:`)."""

    role: Role = "ingress"
    _active_path: str | None = None

    async def accept(self, origin: Origin, path: str | None = None) -> SessionRecord:
        """Publish the caller's stream at `path` (default: the requested path) on `origin`,
        metered as ingress for (path, tier), until the caller disconnects.

        A clean end (the caller closed) finishes the broadcast; a broken link or server
        shutdown aborts it. Returns the session's record (also logged and given to the sinks).
        When the path is taken (`PublishConflict` from the origin, or a different `path` that
        another publisher of this server holds) the connection is closed and the record says
        `outcome="error"`. Raises `RuntimeError` if the request was already used.
        """
        self._use()
        server = self._server
        target = self.path if path is None else normalize_path(path)
        conflict = ""
        if not target:
            conflict = "empty path"
        elif target != self.path and server.config.publisher_policy is PublisherPolicy.REJECT:
            if server._path_taken(target):
                conflict = f"path {target!r} already published"
            else:
                server._claims.release(self._claim)
                self._claim = server._claims.claim(target, pending=False, now=time.monotonic())
                self._claim.owner = self
        if not conflict:
            try:
                return await self._run(origin, target)
            except PublishConflict as exc:
                conflict = f"path {target!r} already published ({exc})"
        return await self._end(path=target, outcome="error", error=conflict)

    async def _run(self, origin: Origin, path: str) -> SessionRecord:
        server = self._server
        broadcast = BroadcastProducer()
        try:
            origin.publish(path, broadcast)
        except BaseException:
            broadcast.abort(Closed("publish refused"))
            raise
        # Only an accepted publish counts as announced (model.stats, `ingress`).
        guard = server.stats.broadcast(path, self.tier).ingress()
        broadcast.with_meter(guard.meter)
        if server.config.publisher_policy is PublisherPolicy.TAKEOVER:
            self._take_over(path)
        self._active_path = path
        self._metering(path, guard.meter)
        _log.info(
            "srt.publish_started",
            session=self.session,
            path=path,
            tier=self.tier,
            peer=format_peer(self.peer),
        )
        importer = TsImporter(broadcast)
        reporter = ProblemReporter(importer, session=self.session, path=path)
        reporter.start()
        cap_bps = server.config.publish_cap_bps
        cap = None if cap_bps is None else RateCap(cap_bps, PUBLISH_BURST_S, time.monotonic())
        ts_bytes = 0
        outcome: Outcome = "eof"
        error = ""
        cancelled: asyncio.CancelledError | None = None

        def receive(batch: list[bytes]) -> None:
            # Runs in the reactor's delivery of each batch (no task wake-up per batch).
            nonlocal ts_bytes
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            ts_bytes += len(data)
            if cap is not None and not cap.take(len(data), time.monotonic()):
                raise _OverCap(f"publisher above the {cap_bps} bit/s cap")
            importer.feed(data)

        try:
            self._conn.set_receiver(receive)
            while batch := await self._conn.recv_batch():  # the end (data goes to receive)
                receive(batch)
        except _OverCap as exc:
            outcome, error = "error", str(exc)
        except asyncio.CancelledError as exc:
            cancelled = exc
            outcome, error = "closed", "cancelled"
        except SrtError as exc:
            outcome, error = (
                ("closed", self._close_reason) if self._shutting_down else ("error", str(exc))
            )
        except Exception as exc:  # noqa: BLE001  (never let one publisher take the server down)
            outcome, error = "error", repr(exc)
            _log.exception("srt.publish_failed", session=self.session)
        self._conn.set_receiver(None)  # nothing reaches the importer once it is ended
        if outcome == "eof" and self._shutting_down:
            outcome, error = "closed", self._close_reason
        try:
            if outcome == "eof":
                importer.finish()
            else:
                importer.abort(Closed(f"publisher ended: {error}"))
        except Exception:  # noqa: BLE001
            _log.exception("srt.importer_end_failed", session=self.session)
        reporter.close()
        if not broadcast.is_closed:
            if outcome == "eof":
                broadcast.finish()
            else:
                broadcast.abort(Closed(f"publisher ended: {error}"))
        usage = guard.meter.copy()
        guard.close()
        record = await self._end(
            path=path,
            outcome=outcome,
            error=error,
            usage=usage,
            ts_bytes=ts_bytes,
            problems=importer.problem_counts,
        )
        if cancelled is not None:
            raise cancelled
        return record

    def _take_over(self, path: str) -> None:
        for request in list(self._server._requests):
            if request is self or not isinstance(request, Publish):
                continue
            if request._active_path == path:
                _log.info(
                    "srt.publish_taken_over", session=request.session, path=path, by=self.session
                )
                request._shutdown()
