"""MPEG-TS packet sync: from arbitrary byte chunks to aligned batches of 188-byte packets.

`TsSync.push(data)` yields numpy views of shape (n, 188), one per run of packets that sit on a
188-byte stride; a byte that should be a sync byte but is not ends the run, and sync is found
again on a 0x47 confirmed by the 0x47 one packet later. Partial packets wait for the next call,
so how the input is chunked never changes the output. `TsSync.take_aligned(data)` is the cheap
path for input that is whole packets in sync (live reads). Header fields are read vectorized
over a whole batch by `PacketColumns`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PACKET_SIZE = 188
SYNC_BYTE = 0x47
NULL_PID = 0x1FFF

U8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class SyncLoss:
    """Bytes skipped to regain sync: `offset` is their position in the whole input stream."""

    offset: int
    skipped_bytes: int


class TsSync:
    """Splits a byte stream into aligned packet batches (see the module docstring).

    `losses` collects `SyncLoss` records as they happen (the caller drains it);
    `skipped_bytes` counts every byte not part of a packet; `offset` is the stream position of
    the next byte `push` has not consumed.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._locked = False
        self._tail_offset = 0
        self._loss_offset = -1
        self._loss_bytes = 0
        self.losses: list[SyncLoss] = []
        self.skipped_bytes = 0

    @property
    def offset(self) -> int:
        """Stream offset of the first byte still buffered (bytes before it are consumed)."""
        return self._tail_offset

    @property
    def buffered_bytes(self) -> int:
        """Bytes held back waiting for the rest of a packet or a sync confirmation."""
        return len(self._tail)

    def push(self, data: bytes | bytearray) -> Iterator[U8Array]:
        """Yield the aligned packet batches completed by `data`.

        The batches are views of `data` (or of an internal copy): use them before the next
        step of the iterator. Nothing refers to `data` once the iterator is exhausted, so a
        caller may reuse its buffer (e.g. with `readinto`).
        """
        tail = self._tail
        if tail and self._locked and len(data) >= 2 * PACKET_SIZE and tail[0] == SYNC_BYTE:
            # Complete the straddling packet on its own rather than copying all of `data`
            # behind the tail; the rest is then read in place.
            need = PACKET_SIZE - len(tail)
            head = tail + data[:need]
            yield np.frombuffer(head, np.uint8).reshape(1, PACKET_SIZE)
            self._tail = b""
            self._tail_offset += PACKET_SIZE
            yield from self._scan(data, need)
        else:
            yield from self._scan(tail + data if tail else data, 0)

    def take_aligned(self, data: bytes | bytearray) -> bytes | None:
        """Consume `data` at once if it is whole packets continuing a stream in sync (nothing
        buffered, every sync byte in place) and return it as bytes (`data` itself when it is
        bytes: nothing is copied); otherwise return None and change nothing (`push` it then).

        The cheap path for live input, where every read is whole packets: no generator and no
        numpy view, and the result is what `push` would yield as one batch.
        """
        size = len(data)
        if not size or size % PACKET_SIZE or self._tail or not self._locked:
            return None
        if data[::PACKET_SIZE].lstrip(b"\x47"):
            return None
        self._tail_offset += size
        return data if isinstance(data, bytes) else bytes(data)

    def _scan(self, buf: bytes | bytearray, pos: int) -> Iterator[U8Array]:
        """Yield the batches of `buf[pos:]`, whose first byte is at stream offset `offset`."""
        base = self._tail_offset - pos
        size = len(buf)
        while pos < size:
            if not self._locked:
                found = self._find_sync(buf, pos)
                if found is None:
                    # No confirmed sync yet: keep a possible start (<= one packet) for later.
                    keep = self._unconfirmed_start(buf, pos)
                    self._skip(base + pos, keep - pos)
                    pos = keep
                    break
                self._skip(base + pos, found - pos)
                self._close_loss()
                pos = found
                self._locked = True
            count = (size - pos) // PACKET_SIZE
            if count == 0:
                break
            # The sync bytes, one per packet: a C-level slice, then how many lead with 0x47.
            syncs = buf[pos : pos + count * PACKET_SIZE : PACKET_SIZE]
            good = count - len(syncs.lstrip(b"\x47"))
            if good:
                yield np.frombuffer(buf, np.uint8, good * PACKET_SIZE, pos).reshape(
                    good, PACKET_SIZE
                )
            if good < count:
                pos += good * PACKET_SIZE
                self._locked = False
                continue
            pos += count * PACKET_SIZE
        self._tail = bytes(buf[pos:])
        self._tail_offset = base + pos

    def _find_sync(self, buf: bytes | bytearray, pos: int) -> int | None:
        """First offset >= pos holding 0x47 with another 0x47 a packet later, or None."""
        size = len(buf)
        at = buf.find(b"\x47", pos)
        while at != -1 and at + PACKET_SIZE < size:
            if buf[at + PACKET_SIZE] == SYNC_BYTE:
                return at
            at = buf.find(b"\x47", at + 1)
        return None

    def _unconfirmed_start(self, buf: bytes | bytearray, pos: int) -> int:
        """Where to keep bytes from when no sync is confirmed: the first 0x47 that cannot be
        checked yet (its partner is past the end), else the end."""
        at = buf.find(b"\x47", max(pos, len(buf) - PACKET_SIZE))
        return len(buf) if at == -1 else at

    def _skip(self, offset: int, count: int) -> None:
        """Count skipped bytes into the open loss (one record per run, however chunked)."""
        if count > 0:
            self.skipped_bytes += count
            if self._loss_offset < 0:
                self._loss_offset = offset
            self._loss_bytes += count

    def _close_loss(self) -> None:
        if self._loss_offset >= 0:
            self.losses.append(SyncLoss(self._loss_offset, self._loss_bytes))
            self._loss_offset = -1
            self._loss_bytes = 0

    def flush(self) -> int:
        """End of input: drop what is buffered and return how many bytes that was."""
        dropped = len(self._tail)
        self._skip(self._tail_offset, dropped)
        self._close_loss()
        self._tail_offset += dropped
        self._tail = b""
        self._locked = False
        return dropped


@dataclass(frozen=True, slots=True)
class PacketColumns:
    """Header fields of every packet of a batch, as numpy vectors (one element per packet)."""

    pid: npt.NDArray[np.integer[Any]]
    b1: U8Array
    b3: U8Array
    af_len: U8Array
    af_flags: U8Array

    @classmethod
    def of(cls, packets: U8Array) -> PacketColumns:
        """Read the columns of a (n, 188) batch."""
        b1 = packets[:, 1]
        pid = ((b1 & 0x1F).astype(np.uint16) << 8) | packets[:, 2]
        return cls(pid, b1, packets[:, 3], packets[:, 4], packets[:, 5])
