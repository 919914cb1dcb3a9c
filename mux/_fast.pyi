"""Type stubs of the compiled TS packet path (`mux/_fast.pyx`); see `mux._impl`."""

from typing import Any

from mux.pes_assembly import Collected, PesStream
from mux.problems import ImportStats
from mux.ts_mux import BytesLike

def plain_run(
    raw: bytes, streams: dict[int, PesStream], pmt_pid: int | None
) -> tuple[PesStream, bytes] | None: ...
def continue_run(
    raw: bytes, streams: dict[int, PesStream], pmt_pid: int | None, stats: ImportStats
) -> bool: ...
def classify_small(
    raw: bytes | memoryview,
    i: int,
    streams: dict[int, PesStream],
    pmt_pid: int | None,
    collected: dict[PesStream, Collected],
    stats: ImportStats,
    headers: bytes | None,
) -> tuple[int, int, int, bytes | None]: ...
def write_pes(
    out: bytearray, pid: int, cc: int, prefix: bytes, body: BytesLike, random_access: bool
) -> tuple[int, int]: ...
def cut_payloads(data: BytesLike, start: int = 0) -> list[bytes]: ...
def cut_chunks(frames: list[Any], chunk_type: type[Any]) -> list[Any]: ...
