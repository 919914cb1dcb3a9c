"""Helpers for importer tests: run a TS byte stream through `TsImporter` and read every track
back out of the model (all groups, all frames), so tests assert on what consumers would get."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from model import BroadcastProducer, CachePool, Usage
from mux import Catalog, TsImporter, decode_frame

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


@dataclass(frozen=True, slots=True)
class Imported:
    """Everything one import produced: frames per group per track, catalogs, importer, meter."""

    tracks: dict[str, list[list[bytes]]]
    catalogs: list[Catalog]
    importer: TsImporter
    usage: Usage

    def frames(self, name: str) -> list[bytes]:
        """Every frame of track `name`, in order."""
        return [f for group in self.tracks[name] for f in group]

    def timestamps_us(self, name: str) -> list[int]:
        """The legacy timestamp of every frame of `name`."""
        return [decode_frame(f)[0] for f in self.frames(name)]

    def section_tracks(self) -> set[str]:
        """Names of the opaque tracks whose frames are sections (the last catalog's word)."""
        section = (self.catalogs[-1].extra if self.catalogs else {}).get("mpegts", {})
        return {n for n, t in section.get("tracks", {}).items() if t["units"] == "section"}

    def opaque_tracks(self) -> set[str]:
        """Names of the tracks carried undecoded (not in the catalog's renditions)."""
        return set(self.tracks) - set(self.catalogs[-1].track_names())

    def comparable(self) -> dict[str, list[list[bytes]]]:
        """`tracks`, but a section's frame without its timestamp: a section carries no time of
        its own and is stamped with the latest media time the importer had read, which moves
        with the batch boundaries (the importer reads a batch's PIDs one after the other)."""
        sections = self.section_tracks()
        return {
            name: [
                [bytes(decode_frame(f)[1]) if name in sections else f for f in group]
                for group in groups
            ]
            for name, groups in self.tracks.items()
        }

    def track_of_pid(self, pid: int) -> str:
        """The name of the media track imported from `pid`."""
        (name,) = [n for n, c in self.importer.tracks.items() if c.pid == pid]
        return name


def chunks(data: bytes, size: int) -> Iterable[bytes]:
    """Split `data` into `size`-byte chunks (the last may be shorter)."""
    return (data[i : i + size] for i in range(0, len(data), size))


async def _read_back(
    broadcast: BroadcastProducer,
) -> tuple[dict[str, list[list[bytes]]], list[Catalog]]:
    consumer = broadcast.consume()
    tracks: dict[str, list[list[bytes]]] = {}
    catalogs: list[Catalog] = []
    async with asyncio.timeout(10):
        for name in consumer.track_names():
            track = consumer.subscribe_track(name)
            latest = track.latest_sequence
            groups = []
            for seq in range(0 if latest is None else latest + 1):
                group = await track.fetch_group(seq)
                groups.append(await group.read_all())
            if name == "catalog.json":
                catalogs = [Catalog.from_json(g[0]) for g in groups]
            else:
                tracks[name] = groups
    return tracks, catalogs


def run_import(
    parts: Iterable[bytes],
    *,
    on_feed: Callable[[TsImporter], None] | None = None,
    **options: object,
) -> Imported:
    """Feed `parts` to a fresh importer over an unbounded-cache metered broadcast, finish, and
    read every track back (this runs its own event loop: call it from sync tests).
    `on_feed(importer)` runs after each feed."""
    usage = Usage()
    broadcast = BroadcastProducer(pool=CachePool(None)).with_meter(usage)
    importer = TsImporter(broadcast, **options)  # type: ignore[arg-type]
    for part in parts:
        importer.feed(part)
        if on_feed is not None:
            on_feed(importer)
    importer.finish()
    tracks, catalogs = asyncio.run(_read_back(broadcast))
    return Imported(tracks, catalogs, importer, usage)


def import_file(name: str, chunk: int = 1 << 16) -> Imported:
    """Import fixture `name` fed in `chunk`-byte pieces."""
    return run_import(chunks((FIXTURES / name).read_bytes(), chunk))
