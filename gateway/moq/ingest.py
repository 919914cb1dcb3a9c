"""Where broadcasts a MoQ peer publishes go: into the origin, metered as ingress.

`ingest_into(origin, stats, tier=...)` makes the `open_broadcast` callback a `Subscriber`
calls for each announced broadcast: it opens an ingress `StatsGuard` for (path, tier), builds
the `BroadcastProducer` `with_meter(guard.meter)` (the model counts every group, frame and byte
written into it, so no protocol handler counts anything) and publishes it at the path. The
guard is closed by the `Ingest.release` the subscriber calls once the broadcast ended, which
also logs `moq.publish_ended` with what was written (the ingress of that publish) and hands
it, as a `PublishUsage`, to `on_ended` (the server's per-connection ingress records).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from gateway.moq.record import PublishUsage
from gateway.moq.subscriber import Ingest, OpenBroadcast
from model import (
    BroadcastProducer,
    Closed,
    ModelError,
    Origin,
    PublisherPolicy,
    StatsHandle,
    Usage,
    normalize_path,
    path_has_prefix,
)

__all__ = ["ingest_into"]

_log = structlog.get_logger("moqsrt.moq.ingest")


def ingest_into(
    origin: Origin,
    stats: StatsHandle | None,
    *,
    tier: str = "default",
    root: str = "",
    prefix: str = "",
    session: str = "",
    on_ended: Callable[[PublishUsage], None] | None = None,
) -> OpenBroadcast:
    """An `open_broadcast` for `Subscriber` publishing into `origin`.

    Only paths under `root` are taken (`""`: any); each is published at `prefix/path`
    (`""`: as announced). With `stats`, each broadcast is metered as ingress for
    (path, `tier`) until it ends; without, unmetered unless `on_ended` wants the counts.
    A path already live under the origin's `REJECT` policy is refused (logged, `None`).
    `session` only labels the logs. `on_ended` (must not raise) gets each published
    broadcast's `PublishUsage` once it ended; refused paths get nothing.
    """
    root = normalize_path(root)
    prefix = normalize_path(prefix)

    def open_broadcast(path: str) -> Ingest | None:
        if not path_has_prefix(path, root):
            _log.info("moq.ingest_refused", session=session, path=path, reason="outside root")
            return None
        target = normalize_path(f"{prefix}/{path}") if prefix else path
        if origin.is_live(target) and origin.publisher_policy is PublisherPolicy.REJECT:
            _log.warning("moq.ingest_refused", session=session, path=target, reason="live")
            return None
        guard = stats.broadcast(target, tier).ingress() if stats is not None else None
        broadcast = BroadcastProducer()
        if guard is not None:
            broadcast = broadcast.with_meter(guard.meter)
        elif on_ended is not None:
            broadcast = broadcast.with_meter(Usage())
        try:
            origin.publish(target, broadcast)
        except (ModelError, ValueError) as exc:
            broadcast.abort(Closed("publish refused"))
            if guard is not None:
                guard.close()
            _log.warning("moq.ingest_refused", session=session, path=target, reason=str(exc))
            return None
        _log.info("moq.publish_started", session=session, path=target, tier=tier)
        started_wall, started_mono = time.time(), time.monotonic()

        def release() -> None:
            meter = broadcast.meter
            if meter is not None:
                groups, frames, nbytes = meter.values()
                _log.info(
                    "moq.publish_ended",
                    session=session,
                    path=target,
                    tier=tier,
                    groups=groups,
                    frames=frames,
                    bytes=nbytes,
                )
                if on_ended is not None:
                    on_ended(
                        PublishUsage(
                            path=target,
                            tier=tier,
                            started_at=started_wall,
                            ended_at=time.time(),
                            duration_s=time.monotonic() - started_mono,
                            groups=groups,
                            frames=frames,
                            bytes=nbytes,
                        )
                    )
            if guard is not None:
                guard.close()

        return Ingest(broadcast=broadcast, release=release)

    return open_broadcast
