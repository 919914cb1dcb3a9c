"""Errors of the model layer: one base, `ModelError`, and a leaf per way a handle can fail.

Producers raise them to the caller that misused a handle (`Closed`, `Duplicate`); consumers raise
them when the content they read went away (`Evicted`, `Dropped`) or was never there (`NotFound`).
`abort(err)` accepts any exception instance; consumers re-raise that instance unchanged.
"""

from __future__ import annotations

__all__ = [
    "Closed",
    "Dropped",
    "Duplicate",
    "Evicted",
    "ModelError",
    "NotFound",
    "PublishConflict",
]


class ModelError(Exception):
    """Base class of every error the model raises itself."""


class Closed(ModelError):
    """A producer was used after it ended (`finish()` / `abort(err)`), or its parent ended.

    Also a plain reason to `abort(err)` with. `message` is the text, used verbatim.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Dropped(ModelError):
    """A producer (or an unanswered `TrackRequest`) was garbage collected without ending.

    Consumers of its content see this error; the model also logs a warning for producers.
    """

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} was dropped without finish() or abort()")
        self.what = what


class NotFound(ModelError):
    """A name, path or group sequence is not (or no longer) available. `what` names it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Duplicate(ModelError):
    """A track name or a cached group sequence already exists. `what` names it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} already exists")
        self.what = what


class Evicted(ModelError):
    """The cache dropped a group: `reason` is `"age"` (older than the track's `latency_max_s`),
    `"budget"` (the `CachePool` byte budget: a track's latest group only when nothing older
    was cached anywhere in the pool) or `"size"` (the group outgrew the pool's
    `max_group_bytes`). Consumers of that group see it; the producer's next write raises `Closed`.
    """

    def __init__(self, track: str, sequence: int, reason: str) -> None:
        # Made for every evicted group, read by few: the message is formatted on demand, and
        # BaseException.__new__ already stored the arguments in `args`.
        self.track = track
        self.sequence = sequence
        self.reason = reason

    def __str__(self) -> str:
        return f"group {self.sequence} of track {self.track!r} evicted ({self.reason})"


class PublishConflict(ModelError):
    """`Origin.publish` found another live broadcast at `path` under `PublisherPolicy.REJECT`."""

    def __init__(self, path: str) -> None:
        super().__init__(f"a broadcast is already live at {path!r}")
        self.path = path
