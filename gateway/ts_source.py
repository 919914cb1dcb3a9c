"""Reads a model broadcast and yields MPEG-TS: the asyncio driver of `mux.export`.

`export_batches(consumer)` is an async generator of the exported frames (`TsFrame`), a list
per turn (`export_broadcast` yields the same as `TsChunk`s, one by one). It runs no task of
its own: each turn reads everything the model holds for it right now (catalog versions, new
groups, new frames of every exported track) without waiting, merges the frames by timestamp,
feeds `TsExporter` and yields its output; then it waits once, on all its readers together
(`model.wait_any`), until the model changes. So a turn costs one event-loop wake-up however
many tracks the broadcast has. Closing the generator (`aclose()`, or leaving `async for`) or
cancelling its consumer is all the cleanup there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import structlog

from model import (
    BroadcastConsumer,
    Evicted,
    GroupConsumer,
    NotFound,
    TrackConsumer,
    wait_any,
)
from mux.catalog import CATALOG_TRACK, Catalog
from mux.container import decode_varint
from mux.errors import Malformed
from mux.export import TsChunk, TsExporter, TsFrame, cut_chunks

__all__ = ["DEFAULT_LATENCY_MS", "export_batches", "export_broadcast"]

_log = structlog.get_logger("moqsrt.export")

DEFAULT_LATENCY_MS = 500
#: How often to look for `catalog.json` when the broadcast does not have it yet.
_CATALOG_POLL_S = 0.05

#: A frame read in a turn: (merge key µs, source order, track name, frame, first of its group).
_Read = tuple[int, int, str, bytes, bool]


@dataclass(slots=True, eq=False)
class _Source:
    """One track being read: its consumer, the group in progress and its merge state."""

    name: str
    track: TrackConsumer
    order: int
    group: GroupConsumer | None = None
    first: bool = False
    #: Highest timestamp this track delivered, the merge key of its frames (monotonic).
    last_key_us: int = -1
    #: When the group in progress last gave a frame (or was opened), `time.monotonic()` s.
    progress_s: float = 0.0
    done: bool = False

    def abandon_at(self, stall_s: float) -> float | None:
        """When the group in progress may be abandoned for a newer one (monotonic s), or None
        while no newer group exists."""
        group = self.group
        if group is None or self.done:
            return None
        latest = self.track.latest_sequence
        if latest is None or latest <= group.sequence:
            return None
        return self.progress_s + stall_s

    def readers(self) -> list[TrackConsumer | GroupConsumer]:
        """What to wait on for this source's news."""
        if self.done:
            return []
        if self.group is None:
            return [self.track]
        return [self.track, self.group]


def _read_source(source: _Source, now_s: float, stall_s: float, out: list[_Read]) -> None:
    """Append every frame `source` can give now to `out` (see `export_batches`)."""
    track = source.track
    while not source.done:
        group = source.group
        if group is None:
            group = track.poll_group()
            if group is None:
                source.done = track.finished
                return
            source.group, source.first, source.progress_s = group, True, now_s
        frames = group.read_ready()
        if frames:
            source.progress_s = now_s
            last = source.last_key_us
            order, name = source.order, source.name
            for frame in frames:
                try:
                    timestamp_us, _ = decode_varint(frame)
                except Malformed:
                    timestamp_us = last  # the exporter reports it
                if timestamp_us > last:
                    last = timestamp_us
                out.append((last, order, name, frame, source.first))
                source.first = False
            source.last_key_us = last
        try:
            ended = group.poll_end()
        except Evicted:
            ended = True
        if ended:
            source.group = None
            continue
        abandon_at = source.abandon_at(stall_s)
        if abandon_at is not None and now_s >= abandon_at:
            source.group = None  # stalled while a newer group exists: move on
            continue
        return


async def export_broadcast(
    consumer: BroadcastConsumer,
    *,
    latency_ms: int = DEFAULT_LATENCY_MS,
    exporter: TsExporter | None = None,
) -> AsyncGenerator[TsChunk, None]:
    """Yield the broadcast read through `consumer` as MPEG-TS chunks, one at a time: the
    chunks of `export_batches`, with its behaviour. Close it (`aclose()`) when stopping early."""
    async with contextlib.aclosing(
        export_batches(consumer, latency_ms=latency_ms, exporter=exporter)
    ) as batches:
        async for frames in batches:
            for chunk in cut_chunks(frames):
                yield chunk


async def export_batches(
    consumer: BroadcastConsumer,
    *,
    latency_ms: int = DEFAULT_LATENCY_MS,
    exporter: TsExporter | None = None,
) -> AsyncGenerator[list[TsFrame], None]:
    """Yield the broadcast read through `consumer` as MPEG-TS (see `mux.export`), each time
    everything readable so far is exported: the `TsFrame`s of every frame that arrived since
    the previous yield (a non-empty list, in order; `cut_chunks` makes `TsChunk`s of it).

    Subscribes to `catalog.json` (waiting for it to appear), then to every media track the
    exporter supports, each from its latest group (so a late joiner starts at the current GOP).
    Frames go out as soon as they are read, never held for another track (so a silent or
    lagging track never delays the others); frames read in the same turn go by timestamp,
    the earliest first (the tracks of a broadcast are written by one importer in the
    publisher's own mux order). Catalog versions apply before the frames read with them. A
    group that makes no progress for `latency_ms` while a newer one exists is abandoned (a
    stalled upstream). Nothing is buffered here: the model's cache is the buffer, and the
    producer is never held back.

    Ends after the broadcast finishes and everything readable was exported; raises the
    broadcast's abort error if it aborts. `exporter` defaults to a new `TsExporter()`; pass one
    to read its `problems` and `stats`. Close the generator (`aclose()`,
    `contextlib.aclosing`) when stopping early.
    """
    exporter = exporter if exporter is not None else TsExporter()
    stall_s = latency_ms / 1000
    catalog_track = await _subscribe_catalog(consumer)
    if catalog_track is None:
        return
    catalog = _Source(CATALOG_TRACK, catalog_track, -1)
    sources: dict[str, _Source] = {}
    counted = exporter.stats.problems
    logged = len(exporter.problems)

    def log_problems() -> None:
        """Log the exporter's new problems (each kind and track once, as it records them)."""
        nonlocal counted, logged
        if exporter.stats.problems == counted:
            return
        counted = exporter.stats.problems
        problems = exporter.problems
        for problem in problems[logged:]:
            _log.warning(
                "export.problem",
                kind=str(problem.kind),
                track=problem.track,
                message=problem.message,
            )
        logged = len(problems)

    orders = itertools.count()

    def apply_catalog(payload: bytes) -> None:
        try:
            exporter.set_catalog(Catalog.from_json(payload))
        except Malformed as exc:
            _log.warning("export.catalog_ignored", error=str(exc))
            return
        wanted = set(exporter.track_pids())
        for name in [name for name in sources if name not in wanted]:
            del sources[name]
        for name in sorted(wanted - set(sources)):
            try:
                track = consumer.subscribe_track(name)
            except NotFound:
                _log.warning("export.track_missing", track=name)
                continue
            sources[name] = _Source(name, track, next(orders))
        log_problems()

    while True:
        now_s = time.monotonic()
        versions: list[_Read] = []
        # Catalog versions go in the order read; their merge keys mean nothing and are unused.
        _read_source(catalog, now_s, float("inf"), versions)
        for _, _, _, payload, _ in versions:
            apply_catalog(payload)
        reads: list[_Read] = []
        for source in sources.values():
            _read_source(source, now_s, stall_s, reads)
        out: list[TsFrame] = []
        if reads:
            # Each source's reads are in order already; merge them by timestamp, the source
            # order breaking ties (stable: a track's own frames never swap).
            if len(sources) > 1:
                reads.sort(key=_merge_key)
            for _, _, name, frame, keyframe in reads:
                out += exporter.push_frames(name, frame, keyframe=keyframe)
            log_problems()
        if out:
            yield out
            continue
        if catalog.done and all(source.done for source in sources.values()):
            return
        readers: list[TrackConsumer | GroupConsumer] = catalog.readers()
        for source in sources.values():
            readers += source.readers()
        deadlines = [at for src in sources.values() if (at := src.abandon_at(stall_s)) is not None]
        if not deadlines:
            await wait_any(readers)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(deadlines) - time.monotonic())):
                    await wait_any(readers)


def _merge_key(read: _Read) -> tuple[int, int]:
    return read[0], read[1]


async def _subscribe_catalog(consumer: BroadcastConsumer) -> TrackConsumer | None:
    """Subscribe to `catalog.json`, polling until it exists; None if the broadcast ends first."""
    while True:
        try:
            return consumer.subscribe_track(CATALOG_TRACK)
        except NotFound:
            if consumer.finished:
                await consumer.closed()  # raises the abort error, if any
                return None
        await asyncio.sleep(_CATALOG_POLL_S)
