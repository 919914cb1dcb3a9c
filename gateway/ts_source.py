"""Reads a model broadcast and yields MPEG-TS: the asyncio driver of `mux.export`.

`export_batches(consumer)` is an async generator of the exported frames (`TsFrame`), a list
per turn (`export_broadcast` yields the same as `TsChunk`s, one by one). Inside
it, one task reads the `catalog.json` track and one task per exported media track reads
groups into a small bounded buffer; the generator itself merges those buffers in arrival
order, feeds `TsExporter` and yields its output. All tasks live in a `TaskGroup` scoped to the
generator: closing the generator (`aclose()`, or leaving `async for`) or cancelling its
consumer cancels them. The tasks never raise into the group (that would cancel whatever task
iterates the generator); they hand their error to the generator, which raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import structlog

from model import BroadcastConsumer, Evicted, NotFound, TrackConsumer
from mux.catalog import CATALOG_TRACK, Catalog
from mux.container import decode_varint
from mux.errors import Malformed
from mux.export import TsChunk, TsExporter, TsFrame, cut_chunks

__all__ = ["DEFAULT_LATENCY_MS", "export_batches", "export_broadcast"]

_log = structlog.get_logger("moqsrt.export")

DEFAULT_LATENCY_MS = 500
#: Frames buffered per track before its reader waits for the merge (and the model, which never
#: waits for a reader, lets it fall behind and skip evicted groups instead).
_BUFFER_FRAMES = 256
#: How often to look for `catalog.json` when the broadcast does not have it yet.
_CATALOG_POLL_S = 0.05


@dataclass(slots=True, eq=False)
class _Source:
    """One media track: its reader task fills `buffer`, the merge drains it."""

    name: str
    #: (arrival tick, merge key µs, legacy frame, first frame of its group)
    buffer: deque[tuple[int, int, bytes, bool]] = field(default_factory=deque)
    #: Highest timestamp this track delivered, the merge key of its frames (monotonic).
    last_key_us: int = -1
    done: bool = False
    space: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class _Merge:
    """State shared by the reader tasks and the generator. Loop thread only."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        #: Counts the generator's turns; a frame is stamped with the tick it arrived in.
        self.tick = 0
        self.sources: dict[str, _Source] = {}
        self.catalogs: deque[Catalog] = deque()
        self.catalog_done = False
        self.error: BaseException | None = None
        self.changed = asyncio.Event()

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.changed.set()

    def pick(self) -> _Source | None:
        """Return the source whose head frame goes next, or None when nothing is buffered.

        Frames go in arrival order, never held: the tracks of a broadcast are written by one
        importer in the publisher's own mux order, so the order frames reach the readers is the
        publisher's interleave (ffmpeg writes a burst of audio after the video it belongs to;
        holding video for it only adds delay). Frames that arrived in the same tick (while the
        generator was away) go by timestamp, the earliest first.
        """
        best: _Source | None = None
        best_at = (0, 0)
        for source in self.sources.values():
            if source.buffer:
                tick, key, _, _ = source.buffer[0]
                if best is None or (tick, key) < best_at:
                    best, best_at = source, (tick, key)
        return best

    def finished(self) -> bool:
        return self.catalog_done and all(s.done and not s.buffer for s in self.sources.values())


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
    everything read so far is exported: the `TsFrame`s of every frame that arrived since the
    previous yield (a non-empty list, in order; `cut_chunks` makes `TsChunk`s of it).

    Subscribes to `catalog.json` (waiting for it to appear), then to every media track the
    exporter supports, each from its latest group (so a late joiner starts at the current GOP).
    Tracks are merged in arrival order, with no hold: a frame is exported as soon as it is read
    (frames read together go by timestamp), so a silent or lagging track never delays the
    others. A group that makes no progress for `latency_ms` while a newer one exists is
    abandoned (a stalled upstream).
    Memory is bounded (a few hundred frames per track); the producer is never held back.

    Ends after the broadcast finishes and everything buffered was exported; raises the
    broadcast's abort error if it aborts. `exporter` defaults to a new `TsExporter()`; pass one
    to read its `problems` and `stats`. Close the generator (`aclose()`, `contextlib.aclosing`)
    when stopping early: that cancels its tasks.
    """
    exporter = exporter if exporter is not None else TsExporter()
    merge = _Merge(latency_ms / 1000)
    failure: BaseException | None = None
    closed = False
    async with asyncio.TaskGroup() as tasks:

        def sync_sources() -> None:
            wanted = set(exporter.track_pids())
            for name in list(merge.sources):
                if name not in wanted:
                    source = merge.sources.pop(name)
                    if source.task is not None:
                        source.task.cancel()
            for name in sorted(wanted - set(merge.sources)):
                try:
                    track = consumer.subscribe_track(name)
                except NotFound:
                    _log.warning("export.track_missing", track=name)
                    continue
                source = _Source(name)
                merge.sources[name] = source
                source.task = tasks.create_task(
                    _read_track(track, source, merge), name=f"export:{name}"
                )

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

        catalog_task = tasks.create_task(_read_catalog(consumer, merge), name="export:catalog")
        # An exception leaving this block would reach the caller wrapped in an ExceptionGroup
        # (GeneratorExit from `aclose()` included): keep it and act on it, unwrapped, after
        # the task group has closed.
        out: list[TsFrame] = []
        try:
            while merge.error is None:
                merge.changed.clear()
                if merge.catalogs:
                    exporter.set_catalog(merge.catalogs.popleft())
                    sync_sources()
                    log_problems()
                    continue
                merge.tick += 1  # frames that arrive while this turn is away come after it
                source = merge.pick()
                if source is not None:
                    _, _, frame, keyframe = source.buffer.popleft()
                    source.space.set()
                    out += exporter.push_frames(source.name, frame, keyframe=keyframe)
                    log_problems()
                    continue
                if merge.finished():
                    if out:
                        yield out
                    break
                if out:
                    # Everything buffered is exported: hand it over before waiting for more.
                    yield out
                    out = []
                    continue
                await merge.changed.wait()
            failure = merge.error
        except GeneratorExit:
            closed = True
        except Exception as exc:  # noqa: BLE001  (re-raised below, outside the task group)
            failure = exc
        finally:
            catalog_task.cancel()
            for source in merge.sources.values():
                if source.task is not None:
                    source.task.cancel()
    if closed:
        return  # the caller closed the generator: it must not yield again
    if failure is not None:
        raise failure


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


async def _read_catalog(consumer: BroadcastConsumer, merge: _Merge) -> None:
    """Queue each catalog version for the generator; a bad one is logged and skipped."""
    try:
        track = await _subscribe_catalog(consumer)
        if track is not None:
            async for group in track:
                try:
                    payload = await group.next_frame()
                except Evicted:
                    continue
                if payload is None:
                    continue
                try:
                    merge.catalogs.append(Catalog.from_json(payload))
                except Malformed as exc:
                    _log.warning("export.catalog_ignored", group=group.sequence, error=str(exc))
                    continue
                merge.changed.set()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  (the generator re-raises it)
        merge.fail(exc)
    finally:
        merge.catalog_done = True
        merge.changed.set()


async def _read_track(track: TrackConsumer, source: _Source, merge: _Merge) -> None:
    """Copy one track's frames into `source.buffer`, group by group, until the track ends."""
    latency_s = merge.latency_s
    try:
        while (group := await track.next_group()) is not None:
            first = True
            while True:
                try:
                    frames = group.read_ready()
                    if not frames:
                        try:
                            async with asyncio.timeout(latency_s):
                                frame = await group.next_frame()
                        except TimeoutError:
                            latest = track.latest_sequence
                            if latest is not None and latest > group.sequence:
                                break  # stalled while a newer group exists: move on
                            continue
                        if frame is None:
                            break
                        frames = [frame]
                except Evicted:
                    break
                for frame in frames:
                    try:
                        timestamp_us, _ = decode_varint(frame)
                    except Malformed:
                        timestamp_us = source.last_key_us  # the exporter reports it
                    key = max(timestamp_us, source.last_key_us)
                    while len(source.buffer) >= _BUFFER_FRAMES:
                        source.space.clear()
                        await source.space.wait()
                    source.last_key_us = key
                    source.buffer.append((merge.tick, key, frame, first))
                    first = False
                    merge.changed.set()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  (the generator re-raises it)
        merge.fail(exc)
    finally:
        source.done = True
        merge.changed.set()
