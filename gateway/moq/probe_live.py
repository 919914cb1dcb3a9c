"""`moqsrt probe moqt://…` / `https://…`: read a live MoQ broadcast for a while and report it.

`probe_moq(url, seconds)` connects as a MoQ client, ingests what the server announces under
the URL's path (the broadcast, or a prefix of several) into a private origin for `seconds`,
counting per track the groups, frames and payload bytes that arrived, and returns the same
report shape as the file probe (`gateway.probe`): `catalog`, `tracks`, `problems`, `seconds`,
plus `ingress` (the broadcast meter) and `broadcasts` (the paths seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from gateway.moq.client import connect, parse_moq_url
from gateway.moq.ingest import ingest_into
from model import (
    BroadcastConsumer,
    ModelError,
    NotFound,
    Origin,
    StatsHandle,
    TrackConsumer,
)
from mux.catalog import CATALOG_TRACK, Catalog
from mux.errors import Malformed

__all__ = ["probe_moq"]

_POLL_S = 0.05


class _Counts:
    __slots__ = ("bytes", "frames", "groups")

    def __init__(self) -> None:
        self.groups = self.frames = self.bytes = 0


async def _count(track: TrackConsumer, counts: _Counts, latest: list[bytes] | None) -> None:
    while (group := await track.next_group()) is not None:
        counts.groups += 1
        while (frame := await group.next_frame()) is not None:
            counts.frames += 1
            counts.bytes += len(frame)
            if latest is not None:
                latest[:] = [frame]


async def _watch(
    broadcast: BroadcastConsumer, tracks: dict[str, _Counts], catalog: list[bytes]
) -> None:
    """Count every track of `broadcast` as it appears, until cancelled."""
    async with asyncio.TaskGroup() as group:
        while not broadcast.finished:
            for name in broadcast.track_names():
                if name in tracks:
                    continue
                with contextlib.suppress(NotFound):
                    track = broadcast.subscribe_track(name)
                    tracks[name] = _Counts()
                    latest = catalog if name == CATALOG_TRACK else None
                    group.create_task(_count(track, tracks[name], latest))
            await asyncio.sleep(_POLL_S)


async def probe_moq(url: str, seconds: float, *, fingerprint: str | None = None) -> dict[str, Any]:
    """Read the broadcast(s) at `url` for `seconds` and report (see the module docstring).
    Raises `ValueError` for a bad URL, `ConnectionError`/`TimeoutError`/`OSError` when the
    server cannot be reached."""
    prefix = parse_moq_url(url).path_query.split("?", 1)[0].strip("/")
    origin = Origin()
    stats = StatsHandle("probe")
    tracks: dict[str, dict[str, _Counts]] = {}
    catalogs: dict[str, list[bytes]] = {}
    started = time.perf_counter()
    async with (
        connect(
            url,
            ingest=ingest_into(origin, stats, tier="probe"),
            prefix=prefix,
            fingerprint=fingerprint,
        ),
        asyncio.TaskGroup() as group,
    ):
        watchers: list[asyncio.Task[None]] = []
        with origin.announced(prefix) as announced:
            deadline = asyncio.get_running_loop().time() + seconds
            try:
                async with asyncio.timeout_at(deadline):
                    async for event in announced:
                        if not event.active or event.path in tracks:
                            continue
                        broadcast = origin.get(event.path)
                        if broadcast is None:
                            continue
                        tracks[event.path], catalogs[event.path] = {}, []
                        watchers.append(
                            group.create_task(
                                _watch(broadcast, tracks[event.path], catalogs[event.path])
                            )
                        )
            except TimeoutError:
                pass
        for task in watchers:
            task.cancel()
    elapsed = time.perf_counter() - started
    return _report(tracks, catalogs, stats, elapsed)


def _report(
    tracks: dict[str, dict[str, _Counts]],
    catalogs: dict[str, list[bytes]],
    stats: StatsHandle,
    seconds: float,
) -> dict[str, Any]:
    """The report of the first broadcast seen (all paths listed in `broadcasts`)."""
    paths = sorted(tracks)
    first = paths[0] if paths else None
    catalog_dict: dict[str, Any] | None = None
    problems: list[dict[str, Any]] = []
    named: set[str] = set()
    if first is not None and catalogs[first]:
        try:
            catalog = Catalog.from_json(catalogs[first][0])
        except (Malformed, ValueError, ModelError) as exc:
            problems.append({"kind": "catalog", "message": f"catalog unreadable: {exc}"})
        else:
            catalog_dict = catalog.to_dict()
            named = set(catalog.track_names())
    counts = tracks.get(first, {}) if first is not None else {}
    ingress = {"groups": 0, "frames": 0, "bytes": 0}
    for entry in stats.snapshot():
        if entry.path == first:
            ingress = {"groups": entry.groups, "frames": entry.frames, "bytes": entry.bytes}
    return {
        "catalog": catalog_dict,
        "tracks": {
            name: {"frames": c.frames, "groups": c.groups, "bytes": c.bytes}
            for name, c in sorted(counts.items())
            if name in named
        },
        "problems": problems,
        "problem_counts": {"catalog": len(problems)} if problems else {},
        "seconds": round(seconds, 6),
        "input_bytes": ingress["bytes"],
        "packets": 0,
        "ingress": ingress,
        "broadcast": first,
        "broadcasts": paths,
    }
