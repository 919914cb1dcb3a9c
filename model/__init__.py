"""moqsrt's transport-agnostic Media-over-QUIC model, with metering.

Origin -> Broadcast -> Track -> Group -> Frame, each level a producer (one writer, synchronous
methods called on the event loop thread) and consumers (independent async readers). `Usage`
meters attached at the broadcast count ingress once and egress per consumer; `StatsHandle`
aggregates them per (path, tier, role). Standard library only; time comes from an injected clock.
"""

from model.broadcast import BroadcastConsumer, BroadcastDynamic, BroadcastProducer, TrackRequest
from model.clock import Clock, ManualClock, monotonic
from model.errors import (
    Closed,
    Dropped,
    Duplicate,
    Evicted,
    ModelError,
    NotFound,
    PublishConflict,
)
from model.group import GroupConsumer, GroupProducer
from model.origin import Announce, AnnounceConsumer, Origin, PublisherPolicy
from model.path import normalize_path, path_has_prefix
from model.pool import DEFAULT_BUDGET_BYTES, DEFAULT_MAX_GROUP_BYTES, CachePool
from model.stats import (
    DEFAULT_VIEWER_IDS_MAX,
    BroadcastStats,
    Role,
    StatsEntry,
    StatsGuard,
    StatsHandle,
)
from model.track import TrackConsumer, TrackInfo, TrackProducer, wait_any
from model.usage import Usage

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "DEFAULT_MAX_GROUP_BYTES",
    "DEFAULT_VIEWER_IDS_MAX",
    "Announce",
    "AnnounceConsumer",
    "BroadcastConsumer",
    "BroadcastDynamic",
    "BroadcastProducer",
    "BroadcastStats",
    "CachePool",
    "Clock",
    "Closed",
    "Dropped",
    "Duplicate",
    "Evicted",
    "GroupConsumer",
    "GroupProducer",
    "ManualClock",
    "ModelError",
    "NotFound",
    "Origin",
    "PublishConflict",
    "PublisherPolicy",
    "Role",
    "StatsEntry",
    "StatsGuard",
    "StatsHandle",
    "TrackConsumer",
    "TrackInfo",
    "TrackProducer",
    "TrackRequest",
    "Usage",
    "monotonic",
    "normalize_path",
    "path_has_prefix",
    "wait_any",
]
