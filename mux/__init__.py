"""MPEG-TS import/export, codec parsing and the hang catalog (sans-I/O: bytes in, events out).

`TsImporter` turns a TS byte stream into a `model.BroadcastProducer` (catalog track plus one
track per elementary stream); `Catalog` is the `catalog.json` payload; `mux.container` frames
media payloads with their microsecond timestamps. Nothing here opens a socket, thread or file.
`TsExporter` turns a catalog and media frames back into MPEG-TS `TsChunk`s.
"""

from mux.catalog import (
    CATALOG_TRACK,
    LEGACY,
    AudioConfig,
    Catalog,
    Container,
    VideoConfig,
)
from mux.container import decode_frame, decode_varint, encode_frame, encode_varint
from mux.errors import (
    Malformed,
    MalformedBitstream,
    MalformedCatalog,
    MalformedFrame,
    MalformedPes,
    MalformedSection,
    MuxError,
)
from mux.export import (
    ExportProblem,
    ExportProblemKind,
    ExportStats,
    TsChunk,
    TsExporter,
    TsFrame,
    cut_chunks,
    cut_payloads,
)
from mux.problems import (
    AudioResync,
    BadCodecData,
    BadPes,
    BadSection,
    ContinuityGap,
    ExtraPrograms,
    GroupTooLarge,
    PesTooLarge,
    Problem,
    StreamWithoutConfig,
    SyncLost,
    TooManyStreams,
    TransportError,
    UnsupportedStream,
)
from mux.ts_import import ImportStats, TrackCounts, TsImporter

__all__ = [
    "CATALOG_TRACK",
    "LEGACY",
    "AudioConfig",
    "AudioResync",
    "BadCodecData",
    "BadPes",
    "BadSection",
    "Catalog",
    "Container",
    "ContinuityGap",
    "ExportProblem",
    "ExportProblemKind",
    "ExportStats",
    "ExtraPrograms",
    "GroupTooLarge",
    "ImportStats",
    "Malformed",
    "MalformedBitstream",
    "MalformedCatalog",
    "MalformedFrame",
    "MalformedPes",
    "MalformedSection",
    "MuxError",
    "PesTooLarge",
    "Problem",
    "StreamWithoutConfig",
    "SyncLost",
    "TooManyStreams",
    "TrackCounts",
    "TransportError",
    "TsChunk",
    "TsExporter",
    "TsFrame",
    "TsImporter",
    "UnsupportedStream",
    "VideoConfig",
    "cut_chunks",
    "cut_payloads",
    "decode_frame",
    "decode_varint",
    "encode_frame",
    "encode_varint",
]
